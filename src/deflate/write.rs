//! The sending half of permessage-deflate: a message's payload compressed
//! as one deflate block sequence ending in a sync flush, whose trailing
//! `00 00 ff ff` is dropped (RFC 7692 §7.2.1), sent as one frame with RSV1.

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress};

use super::pool;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;

use super::{SharedKey, Side};

/// The four bytes a sync flush ends with, left off on the wire.
pub(crate) const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// One endpoint's compressor.
pub(crate) struct Deflater {
    /// Built on first use and kept, with context takeover; without it,
    /// borrowed from the thread's pool for each message and given back
    /// after it (an idle connection then holds none).
    compress: Option<Box<Compress>>,
    level: u32,
    side: Side,
}

impl Deflater {
    pub fn new(side: Side, level: u32) -> Self {
        Deflater {
            compress: None,
            level,
            side,
        }
    }

    /// Compresses one message's payload.
    pub fn compress(&mut self, payload: &[u8]) -> Bytes {
        let (level, side) = (self.level, self.side);
        // zlib cannot deflate with an 8-bit window; 9 bits is safe for an
        // 8-bit peer, as zlib's matches reach back at most 2^9 - 262 bytes.
        let bits = side.max_window_bits.max(9);
        let compress = self.compress.get_or_insert_with(|| {
            if side.no_context_takeover {
                pool::compressor(level, bits)
            } else {
                Box::new(Compress::new_with_window_bits(
                    Compression::new(level),
                    false,
                    bits,
                ))
            }
        });
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        let start = compress.total_in();
        loop {
            let consumed = (compress.total_in() - start) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(64));
            }
            if compress
                .compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync)
                .is_err()
            {
                // Cannot happen with a valid stream; start afresh rather than
                // send a broken one.
                self.compress = None;
                return Bytes::new();
            }
            let consumed = (compress.total_in() - start) as usize;
            // The flush is complete once all input is in and the output was
            // not filled to the brim.
            if consumed == payload.len() && out.len() < out.capacity() {
                break;
            }
        }
        if out.ends_with(&TRAILER) {
            out.truncate(out.len() - TRAILER.len());
        }
        if out.is_empty() {
            // An empty message compresses to a single empty stored block.
            out.push(0x00);
        }
        if self.side.no_context_takeover {
            if let Some(compress) = self.compress.take() {
                pool::give_back_compressor(level, bits, compress);
            }
        }
        Bytes::from(out)
    }
}

/// A compressed message as one frame with RSV1 set.
pub(crate) fn frame(message: &tungstenite::Message, compressed: Bytes) -> tungstenite::Message {
    let opcode = match message {
        tungstenite::Message::Text(_) => OpCode::Data(Data::Text),
        _ => OpCode::Data(Data::Binary),
    };
    let mut frame = Frame::message(compressed, opcode, true);
    frame.header_mut().rsv1 = true;
    tungstenite::Message::Frame(frame)
}

/// `message` compressed for every receiver that agreed on `key` (without
/// context takeover): built once, shared by all of them. Control frames and
/// pre-built frames stay as they are.
pub(crate) fn compress_shared(
    key: SharedKey,
    message: &tungstenite::Message,
) -> tungstenite::Message {
    let side = Side {
        no_context_takeover: true,
        max_window_bits: key.max_window_bits(),
    };
    compress_message(&mut Deflater::new(side, key.level()), message.clone())
}

/// The message as it goes on the wire: data messages compressed, control
/// frames (and anything already framed) as they are.
pub(crate) fn compress_message(
    deflater: &mut Deflater,
    message: tungstenite::Message,
) -> tungstenite::Message {
    let compressed = match &message {
        tungstenite::Message::Text(text) => deflater.compress(text.as_bytes()),
        tungstenite::Message::Binary(data) => deflater.compress(data),
        _ => return message,
    };
    frame(&message, compressed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    fn inflate(decompress: &mut Decompress, data: &[u8]) -> Vec<u8> {
        let mut input = data.to_vec();
        input.extend_from_slice(&TRAILER);
        let mut out = Vec::with_capacity(1 << 20);
        decompress
            .decompress_vec(&input, &mut out, FlushDecompress::Sync)
            .unwrap();
        out
    }

    #[test]
    fn round_trips_with_and_without_context_takeover() {
        for no_context_takeover in [false, true] {
            let side = Side {
                no_context_takeover,
                max_window_bits: 10,
            };
            let mut deflater = Deflater::new(side, 6);
            let mut decompress = Decompress::new_with_window_bits(false, 10);
            let message = br#"{"user":"ada","text":"hello hello hello world"}"#.repeat(20);
            let first = deflater.compress(&message);
            assert!(first.len() < message.len() / 4);
            assert!(!first.ends_with(&TRAILER));
            assert_eq!(inflate(&mut decompress, &first), message);
            let second = deflater.compress(&message);
            if no_context_takeover {
                assert_eq!(first, second);
                assert!(deflater.compress.is_none(), "freed between messages");
            } else {
                assert!(second.len() < first.len(), "the window is reused");
            }
            assert_eq!(inflate(&mut decompress, &second), message);
        }
    }

    #[test]
    fn an_empty_message_is_one_byte() {
        let side = Side {
            no_context_takeover: false,
            max_window_bits: 15,
        };
        let compressed = Deflater::new(side, 6).compress(b"");
        assert_eq!(&compressed[..], &[0x00]);
    }
}
