//! The receiving half of permessage-deflate on the client: [`Inflating`],
//! a byte-stream adapter that sits below tungstenite's reader. (A server
//! connection reads its frames itself, `engine/reader.rs`, and inflates
//! with the same [`Inflater`].)
//!
//! tungstenite 0.30 refuses every frame with a reserved bit, and no setting
//! changes that. Rather than rebuild its reader (fragmentation rules, control
//! frames between fragments, incremental UTF-8 checks, the close handshake),
//! this adapter rewrites the byte stream on its way up: it parses each frame
//! header (with tungstenite's own `FrameHeader::parse`), passes every frame
//! that is not part of a compressed message through untouched, and turns a
//! compressed message into the same message uncompressed, as a run of plain
//! fragments: an empty first fragment with the message's opcode (so the
//! message is open in tungstenite from its first byte), one continuation
//! per inflated chunk, and an empty final continuation. tungstenite then
//! checks and assembles it as any other fragmented message. A frame the
//! adapter does not expect (RSV1 on a control frame or a continuation, RSV2,
//! RSV3, a bad header) passes through as it is, and tungstenite refuses it
//! with 1002 as before.
//!
//! Inflation is bounded (`inflate.rs`): a message is inflated at most one
//! byte past `max_message_size`, in chunks of [`CHUNK`] bytes. Corrupt
//! deflate data ends the connection with 1007, a message over the limit
//! with 1009.
//!
//! Without compression every read goes straight to the stream once the
//! handshake is over. The adapter also fences the handshake: it
//! hands tungstenite the HTTP response head and nothing after it until
//! [`Inflating::activate`] says whether compression was agreed, so a
//! compressed message that arrives with the 101 is inflated too.

use std::io::{self, Cursor};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use super::inflate::{InflateConfig, InflateError, Inflater, CHUNK};
use super::write::{Deflater, TRAILER};
use crate::message::close_code;

/// How much one read from the stream may bring in.
const READ_SIZE: usize = 8 * 1024;

/// The longest response head the client fence waits for.
const MAX_HEAD: usize = 64 * 1024;

/// A byte stream whose compressed messages are inflated on the way up.
///
/// It also keeps the connection's compressor for the engine (or client)
/// that writes through it, so that a plain connection pays one pointer for
/// all of permessage-deflate's state.
pub(crate) struct Inflating<S> {
    inner: S,
    /// `None`: a plain connection, every read goes straight to `inner`.
    reader: Option<Box<Reader>>,
}

struct Reader {
    /// Read from the stream, not handled yet.
    raw: BytesMut,
    /// Handled, for tungstenite to read.
    out: BytesMut,
    fence: Fence,
    /// `None`: everything passes through (no compression agreed).
    codec: Option<Codec>,
    frame: FrameState,
    message: MessageState,
    failed: Option<InflateError>,
    eof: bool,
    /// The compressor of the other direction.
    deflater: Option<Deflater>,
}

enum Fence {
    /// Client side, before the handshake's end: only the response head goes
    /// up; `scanned` bytes of `raw` hold no head end.
    Head {
        scanned: usize,
    },
    Open,
}

enum FrameState {
    /// Waiting for a frame header.
    Header,
    /// Copying `remaining` payload bytes of a frame through.
    Raw { remaining: u64 },
    /// Inflating `remaining` payload bytes of a compressed frame; `offset`
    /// payload bytes are done (for the mask), the first `unmasked` bytes of
    /// `raw` are unmasked already.
    Compressed {
        remaining: u64,
        mask: Option<[u8; 4]>,
        offset: usize,
        unmasked: usize,
        fin: bool,
    },
    /// The message's last frame is in: inflating the sync-flush trailer.
    Trailer { fed: usize },
    /// Something unexpected: the rest passes through for tungstenite to
    /// refuse.
    Broken,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum MessageState {
    None,
    Plain,
    Compressed,
}

struct Codec {
    inflater: Inflater,
}

enum Step {
    Progress,
    NeedInput,
}

impl<S> Inflating<S> {
    /// A client stream before the handshake: passes the response head only,
    /// until [`activate`](Self::activate).
    pub fn fenced(inner: S) -> Self {
        Inflating {
            inner,
            reader: Some(Box::new(Reader::new(Fence::Head { scanned: 0 }))),
        }
    }

    /// After the handshake: inflate as `config` says and compress with the
    /// deflater, or (`None`) pass everything through.
    pub fn activate(&mut self, agreed: Option<(InflateConfig, Deflater)>) {
        if let Some(reader) = &mut self.reader {
            let (codec, deflater) = agreed.map(|(c, d)| (Codec::new(c), d)).unzip();
            reader.codec = codec;
            reader.deflater = deflater;
        }
    }

    /// The compressor for outgoing messages, when compression was agreed.
    pub fn deflater(&mut self) -> Option<&mut Deflater> {
        self.reader.as_mut()?.deflater.as_mut()
    }
}

impl Codec {
    fn new(config: InflateConfig) -> Self {
        Codec {
            inflater: Inflater::new(config),
        }
    }

    /// Inflates what it can of `input` (at most one chunk out), writing the
    /// output to `out` as one plain continuation fragment. Returns the bytes
    /// consumed and produced.
    fn inflate(
        &mut self,
        input: &[u8],
        out: &mut BytesMut,
    ) -> Result<(usize, usize), InflateError> {
        let masked = self.inflater.config().masked;
        let (consumed, inflated) = self.inflater.inflate(input)?;
        if !inflated.is_empty() {
            emit(out, masked, OpCode::Data(Data::Continue), false, inflated);
        }
        Ok((consumed, inflated.len()))
    }

    /// Writes a plain frame with no payload.
    fn emit_empty(&self, out: &mut BytesMut, opcode: OpCode, is_final: bool) {
        emit(out, self.inflater.config().masked, opcode, is_final, &[]);
    }
}

/// Writes a plain frame of `payload` for tungstenite.
fn emit(out: &mut BytesMut, masked: bool, opcode: OpCode, is_final: bool, payload: &[u8]) {
    let header = FrameHeader {
        is_final,
        opcode,
        // tungstenite expects masked frames from a client; a zero key
        // leaves the payload as it is.
        mask: masked.then_some([0; 4]),
        ..FrameHeader::default()
    };
    out.reserve(14 + payload.len());
    // Writing to a BytesMut cannot fail.
    let _ = header.format(payload.len() as u64, &mut out.writer());
    out.extend_from_slice(payload);
}

impl Reader {
    fn new(fence: Fence) -> Self {
        Reader {
            raw: BytesMut::new(),
            out: BytesMut::new(),
            fence,
            codec: None,
            frame: FrameState::Header,
            message: MessageState::None,
            failed: None,
            eof: false,
            deflater: None,
        }
    }

    /// Moves the response head from `raw` to `out` once it is complete.
    fn pass_head(&mut self) -> Step {
        let Fence::Head { scanned } = &mut self.fence else {
            return Step::Progress;
        };
        let from = scanned.saturating_sub(3);
        match self.raw[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            Some(at) => {
                let upgraded = self.raw.starts_with(b"HTTP/1.1 101");
                let head = self.raw.split_to(from + at + 4);
                self.out.extend_from_slice(&head);
                self.fence = Fence::Open;
                if !upgraded {
                    // A refusal: its body follows the head, and tungstenite
                    // keeps what it read along with the head as the body.
                    self.frame = FrameState::Broken;
                    let body = self.raw.split();
                    self.out.unsplit(body);
                }
                Step::Progress
            }
            None if self.raw.len() > MAX_HEAD || self.eof => {
                // Not a response tungstenite will accept: let it say so.
                self.fence = Fence::Open;
                self.frame = FrameState::Broken;
                Step::Progress
            }
            None => {
                *scanned = self.raw.len();
                Step::NeedInput
            }
        }
    }

    /// One step of work on `raw`.
    fn step(&mut self) -> Result<Step, InflateError> {
        if matches!(self.fence, Fence::Head { .. }) {
            return Ok(self.pass_head());
        }
        let Some(codec) = &mut self.codec else {
            // Nothing agreed: everything passes through.
            return Ok(self.pass_all());
        };
        match &mut self.frame {
            FrameState::Broken => Ok(self.pass_all()),
            FrameState::Header => {
                let mut cursor = Cursor::new(&self.raw[..]);
                let (header, len) = match FrameHeader::parse(&mut cursor) {
                    Ok(Some(parsed)) => parsed,
                    Ok(None) => return Ok(Step::NeedInput),
                    Err(_) => {
                        self.frame = FrameState::Broken;
                        return Ok(Step::Progress);
                    }
                };
                let header_len = cursor.position() as usize;
                let no_rsv = !header.rsv1 && !header.rsv2 && !header.rsv3;
                let starts = matches!(header.opcode, OpCode::Data(Data::Text | Data::Binary))
                    && header.rsv1
                    && !header.rsv2
                    && !header.rsv3
                    && self.message == MessageState::None;
                let continues = header.opcode == OpCode::Data(Data::Continue)
                    && no_rsv
                    && self.message == MessageState::Compressed;
                if !(starts || continues) {
                    match header.opcode {
                        OpCode::Data(Data::Text | Data::Binary)
                            if no_rsv && self.message == MessageState::None && !header.is_final =>
                        {
                            self.message = MessageState::Plain;
                        }
                        OpCode::Data(Data::Continue)
                            if no_rsv && self.message == MessageState::Plain && header.is_final =>
                        {
                            self.message = MessageState::None;
                        }
                        _ => {}
                    }
                    self.out.extend_from_slice(&self.raw[..header_len]);
                    self.raw.advance(header_len);
                    self.frame = FrameState::Raw { remaining: len };
                    return Ok(Step::Progress);
                }
                if len > codec.inflater.config().max_message_size as u64 {
                    return Err(InflateError {
                        code: close_code::TOO_BIG,
                    });
                }
                self.raw.advance(header_len);
                if starts {
                    self.message = MessageState::Compressed;
                    codec.emit_empty(&mut self.out, header.opcode, false);
                }
                self.frame = FrameState::Compressed {
                    remaining: len,
                    mask: header.mask,
                    offset: 0,
                    unmasked: 0,
                    fin: header.is_final,
                };
                Ok(Step::Progress)
            }
            FrameState::Raw { remaining } => {
                if *remaining == 0 {
                    self.frame = FrameState::Header;
                    return Ok(Step::Progress);
                }
                if self.raw.is_empty() {
                    return Ok(Step::NeedInput);
                }
                let n = clamp(*remaining, self.raw.len());
                self.out.extend_from_slice(&self.raw[..n]);
                self.raw.advance(n);
                *remaining -= n as u64;
                Ok(Step::Progress)
            }
            FrameState::Compressed {
                remaining,
                mask,
                offset,
                unmasked,
                fin,
            } => {
                if *remaining == 0 {
                    self.frame = if *fin {
                        FrameState::Trailer { fed: 0 }
                    } else {
                        FrameState::Header
                    };
                    return Ok(Step::Progress);
                }
                let available = clamp(*remaining, self.raw.len());
                if available == 0 {
                    return Ok(Step::NeedInput);
                }
                if let Some(key) = mask {
                    for (i, byte) in self.raw[*unmasked..available].iter_mut().enumerate() {
                        *byte ^= key[(*offset + *unmasked + i) & 3];
                    }
                }
                *unmasked = available;
                let (consumed, produced) = codec.inflate(&self.raw[..available], &mut self.out)?;
                self.raw.advance(consumed);
                *remaining -= consumed as u64;
                *offset += consumed;
                *unmasked -= consumed;
                if consumed == 0 && produced == 0 {
                    if available as u64 == *remaining {
                        // All of the frame is here and the inflater is stuck.
                        return Err(InflateError {
                            code: close_code::INVALID_PAYLOAD,
                        });
                    }
                    return Ok(Step::NeedInput);
                }
                Ok(Step::Progress)
            }
            FrameState::Trailer { fed } => {
                let (consumed, produced) = codec.inflate(&TRAILER[*fed..], &mut self.out)?;
                *fed += consumed;
                if *fed == TRAILER.len() && produced < CHUNK {
                    codec.emit_empty(&mut self.out, OpCode::Data(Data::Continue), true);
                    self.message = MessageState::None;
                    self.frame = FrameState::Header;
                    codec.inflater.end_message();
                } else if consumed == 0 && produced == 0 {
                    return Err(InflateError {
                        code: close_code::INVALID_PAYLOAD,
                    });
                }
                Ok(Step::Progress)
            }
        }
    }

    fn pass_all(&mut self) -> Step {
        if self.raw.is_empty() {
            return Step::NeedInput;
        }
        let raw = self.raw.split();
        self.out.unsplit(raw);
        Step::Progress
    }
}

fn clamp(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

impl<S: AsyncRead + Unpin> AsyncRead for Inflating<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(reader) = &mut this.reader else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        loop {
            if !reader.out.is_empty() {
                let n = reader.out.len().min(buf.remaining());
                buf.put_slice(&reader.out[..n]);
                reader.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if let Some(error) = reader.failed {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, error)));
            }
            // A plain frame's payload goes straight up, without a stop in `out`.
            if let FrameState::Raw { remaining } = &mut reader.frame {
                if *remaining > 0 && !reader.raw.is_empty() && reader.codec.is_some() {
                    let n = clamp(*remaining, reader.raw.len()).min(buf.remaining());
                    buf.put_slice(&reader.raw[..n]);
                    reader.raw.advance(n);
                    *remaining -= n as u64;
                    return Poll::Ready(Ok(()));
                }
            }
            match reader.step() {
                Ok(Step::Progress) => continue,
                Err(error) => {
                    reader.failed = Some(error);
                    continue;
                }
                Ok(Step::NeedInput) => {}
            }
            if reader.eof {
                let partial_frame = matches!(
                    reader.frame,
                    FrameState::Header | FrameState::Raw { .. } | FrameState::Broken
                );
                if reader.raw.is_empty() || !partial_frame {
                    // The end, or the peer vanished inside a compressed
                    // message: what is left can never complete it.
                    return Poll::Ready(Ok(()));
                }
                // A partial plain frame before EOF: tungstenite says what it is.
                let raw = reader.raw.split();
                reader.out.unsplit(raw);
                continue;
            }
            if reader.raw.is_empty()
                && reader.codec.is_none()
                && matches!(reader.fence, Fence::Open)
            {
                // Nothing to rewrite: read straight into tungstenite's buffer.
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            reader.raw.reserve(READ_SIZE);
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut reader.raw) {
                Poll::Ready(Ok(0)) => reader.eof = true,
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {
                    if reader.raw.is_empty() && reader.out.is_empty() {
                        // Nothing in flight: an idle connection keeps no
                        // buffers (the read-ahead of `Stream` behaves alike).
                        reader.raw = BytesMut::new();
                        reader.out = BytesMut::new();
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Inflating<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
