//! A data frame as the server puts it on the wire: a header of at most ten
//! bytes and the payload, still in the buffer the message was queued in.
//!
//! tungstenite writes a frame by copying its payload into its write buffer;
//! for a 64 KiB message that copy is the largest cost of a write after the
//! kernel's own. A server frame is not masked, so its payload goes out as
//! it is: the engine hands the header and a shared handle to the payload to
//! the stream (`stream.rs`), which writes both with one vectored write.
//! tungstenite keeps the protocol state (control frames, the close
//! handshake) and still writes every frame it builds itself.
//!
//! A broadcast goes one step further: [`Framed::once`] builds the whole
//! frame once, and every receiver writes the same bytes. With
//! permessage-deflate the payload is the compressed one and the header has
//! RSV1 set: a message compressed for its connection is written from the
//! buffer the compressor filled, and a broadcast compressed once for the
//! receivers that share its settings is framed once too
//! ([`Framed::compressed`]).

use bytes::{BufMut, Bytes, BytesMut};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;

/// Data frames with a payload at least this large are written from the
/// buffer they were queued in; smaller ones are copied together into one
/// buffer (copying them costs less than a write, or a slot of a vectored
/// write, of their own).
pub(crate) const DIRECT_MIN: usize = 16 * 1024;

/// The longest header of an unmasked frame: two bytes and a 64-bit length.
pub(crate) const MAX_HEADER: usize = 10;

/// A data message as one final frame for tungstenite to write as it is:
/// RSV1 set for a compressed payload, and a text payload not checked as
/// UTF-8 again (it was when it was queued). For the moments a frame squall
/// would write itself must go through tungstenite's buffer instead.
pub(crate) fn data_frame(text: bool, compressed: bool, payload: Bytes) -> tungstenite::Message {
    let opcode = if text {
        OpCode::Data(Data::Text)
    } else {
        OpCode::Data(Data::Binary)
    };
    let mut frame = Frame::message(payload, opcode, true);
    frame.header_mut().rsv1 = compressed;
    tungstenite::Message::Frame(frame)
}

/// A data frame ready to write: `header` then `payload`.
#[derive(Clone)]
pub(crate) struct WireFrame {
    header: [u8; MAX_HEADER],
    header_len: u8,
    payload: Bytes,
}

impl WireFrame {
    /// An unmasked, final frame of one whole message: text or binary,
    /// `compressed` (RSV1) or not.
    pub fn data(text: bool, compressed: bool, payload: Bytes) -> Self {
        let mut header = [0u8; MAX_HEADER];
        let header_len = encode_header(&mut header, text, compressed, payload.len());
        WireFrame {
            header,
            header_len,
            payload,
        }
    }

    /// A frame whose header and payload are already one buffer (a
    /// broadcast framed once).
    pub fn prebuilt(frame: Bytes) -> Self {
        WireFrame {
            header: [0; MAX_HEADER],
            header_len: 0,
            payload: frame,
        }
    }

    /// The header bytes still to write (empty for a prebuilt frame).
    pub fn header(&self) -> &[u8] {
        &self.header[..self.header_len as usize]
    }

    /// The payload (for a prebuilt frame: the whole frame).
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        self.header_len as usize + self.payload.len()
    }
}

/// Writes the header of an unmasked final text or binary frame of `len`
/// bytes into `out`; returns its length.
fn encode_header(out: &mut [u8; MAX_HEADER], text: bool, compressed: bool, len: usize) -> u8 {
    // FIN, RSV1 for a compressed message (RFC 7692 §6), opcode 1 (text) or
    // 2 (binary).
    out[0] = 0x80 | if compressed { 0x40 } else { 0 } | if text { 0x1 } else { 0x2 };
    if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// What a send queue holds for the wire: a message (which its connection
/// compresses, if it does), or a broadcast framed once for all its
/// receivers.
#[derive(Clone)]
pub(crate) enum Wire {
    /// A message: data frames are written from their own buffer by a
    /// server connection, anything else is framed by tungstenite.
    Message(tungstenite::Message),
    /// A complete server frame shared by every receiver of a broadcast,
    /// with the message it carries (for the moments a connection cannot
    /// write it as it is).
    Framed(Framed),
}

impl From<tungstenite::Message> for Wire {
    fn from(message: tungstenite::Message) -> Self {
        Wire::Message(message)
    }
}

impl Wire {
    /// A message for many receivers: text and binary framed once
    /// ([`Framed::once`]), anything else left to tungstenite.
    pub fn broadcast(message: tungstenite::Message) -> Self {
        match Framed::once(&message) {
            Some(framed) => Wire::Framed(framed),
            None => Wire::Message(message),
        }
    }

    /// Payload bytes (compressed, for a compressed frame), for the send
    /// queue's byte bound and the sent-bytes metric.
    pub fn len(&self) -> usize {
        match self {
            Wire::Message(message) => message.len(),
            Wire::Framed(framed) => framed.payload_len(),
        }
    }
}

/// A broadcast frame built once: header and payload in one shared buffer.
#[derive(Clone)]
pub(crate) struct Framed {
    frame: Bytes,
    header_len: u8,
    text: bool,
    compressed: bool,
}

impl Framed {
    /// Frames `message` once (one copy of its payload, whatever the number of
    /// receivers); `None` for a message that is not text or binary.
    pub fn once(message: &tungstenite::Message) -> Option<Self> {
        match message {
            tungstenite::Message::Text(text) => Some(Self::build(true, false, text.as_bytes())),
            tungstenite::Message::Binary(data) => Some(Self::build(false, false, data)),
            _ => None,
        }
    }

    /// Frames a payload compressed once for every receiver that agreed the
    /// same permessage-deflate settings without context takeover (RSV1 set).
    pub fn compressed(text: bool, payload: &[u8]) -> Self {
        Self::build(text, true, payload)
    }

    fn build(text: bool, compressed: bool, payload: &[u8]) -> Self {
        let mut header = [0u8; MAX_HEADER];
        let header_len = encode_header(&mut header, text, compressed, payload.len());
        let mut frame = BytesMut::with_capacity(header_len as usize + payload.len());
        frame.put_slice(&header[..header_len as usize]);
        frame.put_slice(payload);
        Framed {
            frame: frame.freeze(),
            header_len,
            text,
            compressed,
        }
    }

    /// Whether the payload is compressed (RSV1).
    pub fn is_compressed(&self) -> bool {
        self.compressed
    }

    /// Whether it is a text message.
    pub fn is_text(&self) -> bool {
        self.text
    }

    /// The payload, without the header.
    pub fn payload(&self) -> &[u8] {
        &self.frame[self.header_len as usize..]
    }

    /// The frame, to write as it is.
    pub fn into_frame(self) -> WireFrame {
        WireFrame::prebuilt(self.frame)
    }

    /// The frame as a message for tungstenite to write as it is, sharing
    /// the frame's buffer.
    pub fn into_message(self) -> tungstenite::Message {
        let payload = self.frame.slice(self.header_len as usize..);
        data_frame(self.text, self.compressed, payload)
    }

    fn payload_len(&self) -> usize {
        self.frame.len() - self.header_len as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a frame back with tungstenite's own decoder.
    fn decode(bytes: &[u8]) -> tungstenite::protocol::frame::Frame {
        let mut cursor = std::io::Cursor::new(bytes);
        let (header, len) = tungstenite::protocol::frame::FrameHeader::parse(&mut cursor)
            .unwrap()
            .expect("a whole header");
        let start = cursor.position() as usize;
        assert_eq!(start + len as usize, bytes.len(), "payload length");
        tungstenite::protocol::frame::Frame::from_payload(
            header,
            Bytes::copy_from_slice(&bytes[start..]),
        )
    }

    fn wire_bytes(frame: &WireFrame) -> Vec<u8> {
        [frame.header(), frame.payload()].concat()
    }

    #[test]
    fn headers_at_each_length_boundary_decode_as_tungstenite_reads_them() {
        for len in [0, 1, 125, 126, 127, 65535, 65536, 70000] {
            for text in [false, true] {
                let payload = Bytes::from(vec![b'a'; len]);
                let frame = WireFrame::data(text, false, payload.clone());
                let bytes = wire_bytes(&frame);
                assert_eq!(bytes.len(), frame.len());
                let decoded = decode(&bytes);
                assert!(decoded.header().is_final);
                assert!(decoded.header().mask.is_none());
                let opcode = if text {
                    tungstenite::protocol::frame::coding::Data::Text
                } else {
                    tungstenite::protocol::frame::coding::Data::Binary
                };
                assert_eq!(
                    decoded.header().opcode,
                    tungstenite::protocol::frame::coding::OpCode::Data(opcode)
                );
                assert_eq!(decoded.payload().len(), len);
            }
        }
    }

    #[test]
    fn a_broadcast_frame_matches_the_per_connection_frame_and_keeps_its_message() {
        let message = tungstenite::Message::text("hello, room");
        let framed = Framed::once(&message).unwrap();
        let direct = WireFrame::data(true, false, Bytes::from_static(b"hello, room"));
        assert_eq!(
            wire_bytes(&framed.clone().into_frame()),
            wire_bytes(&direct)
        );
        // Through tungstenite: the very bytes it writes for the text message.
        let tungstenite::Message::Frame(frame) = framed.into_message() else {
            panic!("a broadcast frame goes to tungstenite as a frame");
        };
        assert_eq!(frame.header().opcode, OpCode::Data(Data::Text));
        let mut through = Vec::new();
        frame.format(&mut through).unwrap();
        let mut expected = Vec::new();
        Frame::message(
            Bytes::from_static(b"hello, room"),
            OpCode::Data(Data::Text),
            true,
        )
        .format(&mut expected)
        .unwrap();
        assert_eq!(through, expected);
        assert!(Framed::once(&tungstenite::Message::Ping(Bytes::new())).is_none());
    }

    #[test]
    fn a_compressed_frame_has_rsv1_and_keeps_its_opcode_and_payload() {
        let payload = Bytes::from_static(b"\xf2\x48\xcd\xc9\xc9\x07\x00");
        for text in [false, true] {
            let direct = WireFrame::data(text, true, payload.clone());
            let framed = Framed::compressed(text, &payload);
            assert_eq!(
                wire_bytes(&framed.clone().into_frame()),
                wire_bytes(&direct)
            );
            assert!(framed.is_compressed());
            assert_eq!(framed.payload(), &payload[..]);
            let decoded = decode(&wire_bytes(&direct));
            assert!(decoded.header().rsv1 && decoded.header().is_final);
            assert!(!decoded.header().rsv2 && !decoded.header().rsv3);
            assert_eq!(decoded.payload(), &payload[..]);
            // Through tungstenite (the moments it must write it): the same
            // bytes, RSV1 and all.
            let tungstenite::Message::Frame(frame) = framed.into_message() else {
                panic!("a compressed frame goes to tungstenite as a frame");
            };
            let mut through = Vec::new();
            frame.format(&mut through).unwrap();
            assert_eq!(through, wire_bytes(&direct));
        }
    }
}
