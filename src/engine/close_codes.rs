//! Close code 1014 from a peer, which tungstenite 0.30 would turn into a
//! protocol error.
//!
//! 1014 (Bad Gateway: a gateway or proxy got an invalid response from the
//! server behind it) was registered in IANA's WebSocket close code registry
//! after RFC 6455, next to 1012 and 1013, so a peer may send it. Autobahn
//! agrees: its invalid-code cases (7.9.x: 0, 999, 1004, 1005, 1006, 1016,
//! 1100, 2000, 2999) leave it out, as do Chromium and Python's `websockets`,
//! which accept it. tungstenite 0.30 knows 1012 and 1013 but not 1014: it
//! answers a close frame carrying 1014 with 1002 and reports 1002 instead.
//!
//! [`CloseCodes`] sits between the socket and tungstenite and watches the
//! frame headers going up (parsed with tungstenite's own `FrameHeader`;
//! payloads are skipped, not copied). In the one close frame whose code is
//! 1014 it rewrites the code's low byte, in place and still masked, so that
//! tungstenite reads 1000 (same high byte, `0x03`, so a code split across
//! two reads needs no holding back): tungstenite then echoes a normal
//! close, which Autobahn's valid-code cases accept ("normal or echoed
//! code"), and the engine reports the peer's real code, 1014, to the
//! handler. Writes pass straight through.

use std::io::Cursor;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tungstenite::protocol::frame::coding::{Control, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// The longest frame header: two bytes, eight of extended length, four of
/// mask.
const MAX_HEADER: usize = 14;
/// 1014 and the code tungstenite is shown instead, 1000: both start with
/// the byte `0x03`.
const BAD_GATEWAY_LOW: u8 = (1014u16 & 0xff) as u8;
const NORMAL_LOW: u8 = (1000u16 & 0xff) as u8;
const SHARED_HIGH: u8 = (1000u16 >> 8) as u8;

/// Where the walk over the incoming bytes is.
enum Walk {
    /// Collecting a frame header (`have` bytes of it so far in `bytes`).
    Header {
        bytes: [u8; MAX_HEADER],
        have: usize,
    },
    /// Inside a payload; `code` while the close code's bytes are ahead.
    Payload { left: u64, code: Option<CodeBytes> },
    /// A header tungstenite will refuse (it ends the connection): nothing
    /// more to watch.
    Done,
}

/// The two code bytes at the start of a close frame's payload.
struct CodeBytes {
    mask: [u8; 4],
    /// The unmasked high byte, once read.
    high: Option<u8>,
}

impl Walk {
    fn header() -> Self {
        Walk::Header {
            bytes: [0; MAX_HEADER],
            have: 0,
        }
    }
}

/// A stream whose incoming close code 1014 reaches tungstenite as 1000;
/// [`saw_bad_gateway`](Self::saw_bad_gateway) tells the engine it did.
pub(crate) struct CloseCodes<S> {
    inner: S,
    walk: Walk,
    bad_gateway: bool,
}

impl<S> CloseCodes<S> {
    pub fn new(inner: S) -> Self {
        CloseCodes {
            inner,
            walk: Walk::header(),
            bad_gateway: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Whether the peer's close frame carried 1014 (shown to tungstenite as
    /// 1000).
    pub fn saw_bad_gateway(&self) -> bool {
        self.bad_gateway
    }

    /// Walks `bytes`, the next bytes from the peer, rewriting a 1014 close
    /// code in place.
    pub fn scan(&mut self, bytes: &mut [u8]) {
        let mut at = 0;
        while at < bytes.len() {
            match &mut self.walk {
                Walk::Done => return,
                Walk::Header { bytes: held, have } => {
                    let take = (MAX_HEADER - *have).min(bytes.len() - at);
                    held[*have..*have + take].copy_from_slice(&bytes[at..at + take]);
                    let mut cursor = Cursor::new(&held[..*have + take]);
                    match FrameHeader::parse(&mut cursor) {
                        Ok(Some((header, len))) => {
                            // Of the bytes just added, only those up to the
                            // header's end belong to it.
                            at += cursor.position() as usize - *have;
                            let is_close = header.opcode == OpCode::Control(Control::Close);
                            let code = (is_close && len >= 2).then(|| CodeBytes {
                                mask: header.mask.unwrap_or_default(),
                                high: None,
                            });
                            self.walk = if len == 0 {
                                Walk::header()
                            } else {
                                Walk::Payload { left: len, code }
                            };
                        }
                        Ok(None) => {
                            *have += take;
                            at += take;
                            if *have == MAX_HEADER {
                                self.walk = Walk::Done;
                            }
                        }
                        Err(_) => self.walk = Walk::Done,
                    }
                }
                Walk::Payload { left, code } => {
                    let step = if let Some(code_bytes) = code {
                        let byte = &mut bytes[at];
                        match code_bytes.high {
                            None => code_bytes.high = Some(*byte ^ code_bytes.mask[0]),
                            Some(high) => {
                                if high == SHARED_HIGH
                                    && *byte ^ code_bytes.mask[1] == BAD_GATEWAY_LOW
                                {
                                    *byte = NORMAL_LOW ^ code_bytes.mask[1];
                                    self.bad_gateway = true;
                                }
                                *code = None;
                            }
                        }
                        1
                    } else {
                        (bytes.len() - at).min(usize::try_from(*left).unwrap_or(usize::MAX))
                    };
                    at += step;
                    *left -= step as u64;
                    if *left == 0 {
                        self.walk = Walk::header();
                    }
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CloseCodes<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        self.scan(&mut buf.filled_mut()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CloseCodes<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() < 126);
        let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
        out.extend_from_slice(&MASK);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        out
    }

    fn close(code: u16, reason: &str) -> Vec<u8> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        frame(0x8, &payload)
    }

    /// Scans `wire` in pieces of `piece` bytes; returns the bytes as
    /// tungstenite would read them and whether 1014 was seen.
    fn scanned(wire: &[u8], piece: usize) -> (Vec<u8>, bool) {
        let mut codes = CloseCodes::new(());
        let mut out = wire.to_vec();
        for chunk in out.chunks_mut(piece) {
            codes.scan(chunk);
        }
        (out, codes.saw_bad_gateway())
    }

    #[test]
    fn a_1014_close_reads_as_1000_whatever_the_read_boundaries() {
        let mut wire = frame(0x1, b"hello");
        wire.extend(frame(0x9, b"ping"));
        wire.extend(close(1014, "upstream"));
        let mut expected = frame(0x1, b"hello");
        expected.extend(frame(0x9, b"ping"));
        expected.extend(close(1000, "upstream"));
        for piece in 1..=wire.len() {
            let (out, seen) = scanned(&wire, piece);
            assert_eq!(out, expected, "reads of {piece} bytes");
            assert!(seen);
        }
    }

    #[test]
    fn other_codes_and_frames_pass_untouched() {
        for code in [1000u16, 1002, 1013, 1015, 3014, 4014, 0x0314] {
            let mut wire = frame(0x2, &[0xf6; 100]);
            wire.extend(close(code, ""));
            for piece in [1, 3, 7, wire.len()] {
                let (out, seen) = scanned(&wire, piece);
                assert_eq!(out, wire, "code {code}");
                assert!(!seen, "code {code}");
            }
        }
    }

    #[test]
    fn long_payload_lengths_are_skipped_exactly() {
        // A 300-byte binary frame (16-bit length) then a 1014 close.
        let mut wire = vec![0x82, 0x80 | 126, 0x01, 0x2c];
        wire.extend_from_slice(&MASK);
        wire.extend(std::iter::repeat_n(0u8, 300));
        wire.extend(close(1014, ""));
        for piece in [1, 5, 64, wire.len()] {
            let (out, seen) = scanned(&wire, piece);
            assert!(seen, "reads of {piece}");
            assert_eq!(&out[..out.len() - 2], &wire[..wire.len() - 2]);
        }
    }
}
