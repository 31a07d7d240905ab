//! The sending half of permessage-deflate: a message's payload compressed
//! as one deflate block sequence ending in a sync flush, whose trailing
//! `00 00 ff ff` is dropped (RFC 7692 §7.2.1), sent as one frame with RSV1.

use bytes::Bytes;
use zlib_rs::{Deflate, DeflateFlush};

use super::pool;
use super::tuning::Tuning;

use super::{SharedKey, Side};

/// The four bytes a sync flush ends with, left off on the wire.
pub(crate) const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// One endpoint's compressor.
pub(crate) struct Deflater {
    /// Built on first use and kept, with context takeover; without it,
    /// borrowed from the thread's pool for each message and given back
    /// after it (an idle connection then holds none).
    compress: Option<Box<Deflate>>,
    tuning: Tuning,
    no_context_takeover: bool,
}

impl Deflater {
    pub fn new(side: Side, level: u32, mem_level: u8) -> Self {
        Deflater {
            compress: None,
            tuning: Tuning::new(level, mem_level, side.max_window_bits),
            no_context_takeover: side.no_context_takeover,
        }
    }

    /// Compresses one message's payload.
    pub fn compress(&mut self, payload: &[u8]) -> Bytes {
        let (tuning, no_context_takeover) = (self.tuning, self.no_context_takeover);
        let compress = self.compress.get_or_insert_with(|| {
            if no_context_takeover {
                pool::compressor(tuning)
            } else {
                tuning.build()
            }
        });
        // Zero-filled rather than written into spare capacity: it keeps this
        // safe, and clearing memory costs little next to deflating it.
        let mut out = vec![0; payload.len() / 2 + 64];
        let (mut consumed, mut written) = (0, 0);
        loop {
            if out.len() - written < 64 {
                out.resize(out.len() * 2, 0);
            }
            let (in_before, out_before) = (compress.total_in(), compress.total_out());
            if compress
                .compress(
                    &payload[consumed..],
                    &mut out[written..],
                    DeflateFlush::SyncFlush,
                )
                .is_err()
            {
                // Cannot happen with a valid stream; start afresh rather than
                // send a broken one.
                self.compress = None;
                return Bytes::new();
            }
            consumed += (compress.total_in() - in_before) as usize;
            written += (compress.total_out() - out_before) as usize;
            // The flush is complete once all input is in and the output was
            // not filled to the brim.
            if consumed == payload.len() && written < out.len() {
                break;
            }
        }
        out.truncate(written);
        if out.ends_with(&TRAILER) {
            out.truncate(out.len() - TRAILER.len());
        }
        if out.is_empty() {
            // An empty message compresses to a single empty stored block.
            out.push(0x00);
        }
        if no_context_takeover {
            if let Some(compress) = self.compress.take() {
                pool::give_back_compressor(tuning, compress);
            }
        }
        Bytes::from(out)
    }
}

/// `payload` compressed for every receiver that agreed on `key` (without
/// context takeover): compressed once, shared by all of them.
pub(crate) fn compress_shared(key: SharedKey, payload: &[u8]) -> Bytes {
    let side = Side {
        no_context_takeover: true,
        max_window_bits: key.max_window_bits(),
    };
    Deflater::new(side, key.level(), key.mem_level()).compress(payload)
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
            let mut deflater = Deflater::new(side, 6, 8);
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
        let compressed = Deflater::new(side, 6, 8).compress(b"");
        assert_eq!(&compressed[..], &[0x00]);
    }

    /// A JSON-ish document whose symbols overflow a small memory level's
    /// buffer many times over.
    fn document() -> Vec<u8> {
        (0..3000u32)
            .map(|i| {
                format!(
                    r#"{{"id":{i},"name":"user{}","score":{}}},"#,
                    i * 7 % 113,
                    i * 31 % 977
                )
            })
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn every_memory_level_round_trips() {
        let message = document();
        let mut sizes = Vec::new();
        for mem_level in 1..=9 {
            let side = Side {
                no_context_takeover: false,
                max_window_bits: 15,
            };
            let mut deflater = Deflater::new(side, 6, mem_level);
            let mut decompress = Decompress::new_with_window_bits(false, 15);
            let first = deflater.compress(&message);
            assert_eq!(
                inflate(&mut decompress, &first),
                message,
                "mem_level {mem_level}"
            );
            let second = deflater.compress(&message);
            assert_eq!(
                inflate(&mut decompress, &second),
                message,
                "mem_level {mem_level}"
            );
            sizes.push(first.len());
        }
        // A smaller symbol buffer ends blocks sooner: more block headers.
        assert!(
            sizes[0] > sizes[7],
            "mem_level 1: {} B, 8: {} B",
            sizes[0],
            sizes[7]
        );
    }

    #[test]
    fn the_pool_lends_only_an_equal_tuning() {
        let message = document();
        let side = |no_context_takeover| Side {
            no_context_takeover,
            max_window_bits: 15,
        };
        // A fresh compressor at memory level 8, as a reference.
        let fresh = Deflater::new(side(false), 6, 8).compress(&message);
        // A pooled one at level 1 goes back to this thread's pool...
        let low = Deflater::new(side(true), 6, 1).compress(&message);
        assert_ne!(low, fresh);
        // ...and must not be lent to a connection at level 8.
        assert_eq!(Deflater::new(side(true), 6, 8).compress(&message), fresh);
        assert_eq!(Deflater::new(side(true), 6, 1).compress(&message), low);
    }
}
