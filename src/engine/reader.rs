//! Where bytes from the socket become messages: [`FrameReader`], squall's
//! own reader of the frames a peer sends, below tungstenite: a client's on
//! a server's connection, a server's on the client (`client/`), which differ
//! only in the masking (every frame from a client, none from a server).
//!
//! The reader owns the connection's read buffer. It reads from the socket
//! into it (sized for the frame it is in: a 64 KiB frame is read straight
//! into room for all of it, not through a small window), parses each frame
//! header, and handles the data frames itself: their payload is unmasked in
//! place and handed to the engine as a message sharing the buffer, with no
//! copy (a single-frame message) or one (the fragments of a message are
//! joined; a compressed message is inflated, `deflate/inflate.rs`). Text is
//! checked as UTF-8, fragment by fragment, so a bad byte fails the
//! connection as soon as it arrives.
//!
//! Control frames (ping, pong, close) go up to tungstenite, which keeps the
//! protocol state they drive: it queues the pong, and runs the close
//! handshake. The engine asks tungstenite to read only when the reader has
//! put a whole control frame in front of it ([`Incoming::Tungstenite`]);
//! tungstenite then reads those bytes through [`AsyncRead`], and never waits
//! on the socket itself. In a close frame whose code is 1014 (Bad Gateway,
//! registered after RFC 6455 and unknown to tungstenite 0.30, which would
//! answer 1002) the code is shown to tungstenite as 1000, and the engine
//! reports the real code ([`FrameReader::peer_close_code`]). Once the
//! socket ends, tungstenite reads it directly for the last word (the end
//! of the stream, or an error), so that it ends the connection as it
//! always did.
//!
//! Everything the peer can get wrong is refused here with the close code
//! RFC 6455 asks for ([`ReadError`]): 1002 for an unmasked frame, reserved
//! bits or opcodes, a fragmented or oversized control frame, a continuation
//! without a message or a message inside another; 1007 for text that is not UTF-8 and corrupt compressed
//! data; 1009 for a frame or message over `max_message_size` (checked on
//! the header, before its payload is read, and while inflating).
//!
//! The buffer: nothing until the first read, then `read_buffer_size`, held
//! for life (messages split off it, and the handler dropping them lets the
//! same allocation be reused: no allocation per message). A large frame, or
//! a read that filled all the room there was (more is waiting), grows it;
//! a grown buffer is freed once the socket has been quiet for a second.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Duration, Instant, Sleep};

use crate::deflate::inflate::{InflateConfig, InflateError, Inflater, CHUNK};
use crate::deflate::write::{Deflater, TRAILER};
use crate::message::{close_code, Message, Utf8Bytes};
use crate::stream::{hand_over, Stream};
use tungstenite::protocol::{CloseFrame, Role};

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;
const RSV1: u8 = 0x40;

/// The longest control frame payload (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// How much a read may bring in once a read filled all the room it had.
const READ_AHEAD: usize = 64 * 1024;

/// How long a grown buffer outlives the last read.
const LINGER: Duration = Duration::from_secs(1);

/// 1014 and the code tungstenite is shown instead, 1000: both start with
/// the byte `0x03`.
const BAD_GATEWAY: [u8; 2] = close_code::BAD_GATEWAY.to_be_bytes();
const NORMAL_LOW: u8 = close_code::NORMAL.to_be_bytes()[1];

/// What the reader has for the engine.
pub(crate) enum Incoming {
    /// A whole data message.
    Message(Message),
    /// A control frame (or the end of the stream) waits for tungstenite:
    /// read it through the WebSocket.
    Tungstenite,
}

/// The peer broke the protocol: close with `code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReadError {
    pub code: u16,
    pub reason: &'static str,
}

impl ReadError {
    const PROTOCOL: Self = ReadError {
        code: close_code::PROTOCOL_ERROR,
        reason: "protocol error",
    };
    const TOO_BIG: Self = ReadError {
        code: close_code::TOO_BIG,
        reason: "message too big",
    };
    const UTF8: Self = ReadError {
        code: close_code::INVALID_PAYLOAD,
        reason: "invalid UTF-8",
    };
    const CORRUPT: Self = ReadError {
        code: close_code::INVALID_PAYLOAD,
        reason: "invalid compressed data",
    };
}

impl From<InflateError> for ReadError {
    fn from(error: InflateError) -> Self {
        ReadError {
            code: error.code,
            reason: error.reason(),
        }
    }
}

/// The reading side of a connection's socket (and its writing side passes
/// straight through): a server's, whose peer masks every frame, or (with
/// [`Role::Client`]) a client's, whose peer masks none.
pub(crate) struct FrameReader<S = Stream> {
    inner: S,
    /// Whose frames are read: a server reads a client's (masked), a client
    /// a server's (unmasked); the other kind is refused with 1002.
    role: Role,
    /// Read from the socket, not handled yet.
    buf: BytesMut,
    /// Bytes at the front of `buf` that are tungstenite's (a control frame).
    staged: usize,
    state: State,
    bad_gateway: bool,
    /// The last read filled all the room it had.
    backlog: bool,
    read_size: usize,
    max_message_size: usize,
    /// A message whose first fragment is in, or a compressed one.
    partial: Option<Box<Partial>>,
    /// permessage-deflate, when agreed.
    deflate: Option<Box<Deflate>>,
    /// Frees a grown buffer once the socket is quiet.
    linger: Option<Box<Linger>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// The peer's close frame went up: tungstenite ends the connection,
    /// and reads nothing more from the reader.
    PeerClosed,
    /// The socket ended (or failed): tungstenite reads it directly.
    Ended,
}

struct Partial {
    /// The message so far: joined fragments, or inflated bytes.
    data: Vec<u8>,
    text: bool,
    compressed: bool,
    /// Bytes of `data` known to be valid UTF-8 (text only).
    checked: usize,
}

struct Deflate {
    inflater: Inflater,
    deflater: Deflater,
}

struct Linger {
    quiet: Pin<Box<Sleep>>,
    /// Data arrived since the socket last ran dry.
    active: bool,
}

/// A frame header as it is on the wire.
struct Head {
    fin: bool,
    rsv: u8,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
    header_len: usize,
}

impl Head {
    /// The header at the start of `bytes`, if all of it is there.
    fn parse(bytes: &[u8]) -> Option<Head> {
        let (&first, rest) = bytes.split_first()?;
        let (&second, rest) = rest.split_first()?;
        let (len, rest, extra) = match second & 0x7f {
            126 => {
                let (len, rest) = rest.split_first_chunk::<2>()?;
                (u64::from(u16::from_be_bytes(*len)), rest, 2)
            }
            127 => {
                let (len, rest) = rest.split_first_chunk::<8>()?;
                (u64::from_be_bytes(*len), rest, 8)
            }
            len => (u64::from(len), rest, 0),
        };
        let mask = if second & 0x80 != 0 {
            Some(*rest.first_chunk::<4>()?)
        } else {
            None
        };
        Some(Head {
            fin: first & 0x80 != 0,
            rsv: first & 0x70,
            opcode: first & 0x0f,
            header_len: 2 + extra + if mask.is_some() { 4 } else { 0 },
            mask,
            len,
        })
    }
}

/// What one look at the buffer found.
enum Step {
    Ready(Incoming),
    /// A frame was handled (a fragment): look again.
    Again,
    /// The buffer must hold `total` bytes before anything can be done.
    Need(usize),
}

impl<S: AsyncRead + Unpin> FrameReader<S> {
    /// A reader for `role` over `inner`; `read_ahead` holds bytes read
    /// past the HTTP head, handled first; `deflate` the inflater and
    /// compressor when permessage-deflate was agreed.
    pub fn new(
        inner: S,
        role: Role,
        read_ahead: BytesMut,
        read_size: usize,
        max_message_size: usize,
        deflate: Option<(InflateConfig, Deflater)>,
    ) -> Self {
        FrameReader {
            inner,
            role,
            buf: read_ahead,
            staged: 0,
            state: State::Open,
            bad_gateway: false,
            backlog: false,
            read_size,
            max_message_size,
            partial: None,
            deflate: deflate.map(|(config, deflater)| {
                Box::new(Deflate {
                    inflater: Inflater::new(config),
                    deflater,
                })
            }),
            linger: None,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The compressor for outgoing messages, when compression was agreed.
    pub fn deflater(&mut self) -> Option<&mut Deflater> {
        self.deflate.as_mut().map(|d| &mut d.deflater)
    }

    /// The code the peer's close frame carried, as tungstenite read it:
    /// a 1014, which it was shown as 1000, is 1014 again.
    pub fn peer_close_code(&self, frame: Option<&CloseFrame>) -> Option<u16> {
        frame.map(|frame| match u16::from(frame.code) {
            close_code::NORMAL if self.bad_gateway => close_code::BAD_GATEWAY,
            code => code,
        })
    }

    /// Reads until a message is whole or a control frame waits for
    /// tungstenite; `Pending` with the socket registered when neither is.
    pub fn poll_incoming(&mut self, cx: &mut Context<'_>) -> Poll<Result<Incoming, ReadError>> {
        loop {
            if self.staged > 0 || self.state != State::Open {
                // A control frame waits for tungstenite; or the peer's close
                // frame went up, and tungstenite ends the connection once
                // its reply is out (a server closes the TCP connection
                // first); or the socket ended.
                return Poll::Ready(Ok(Incoming::Tungstenite));
            }
            let need = match self.step()? {
                Step::Ready(incoming) => return Poll::Ready(Ok(incoming)),
                Step::Again => continue,
                Step::Need(total) => total,
            };
            let mut want = need.saturating_sub(self.buf.len()).max(self.read_size);
            if self.backlog {
                want = want.max(READ_AHEAD);
            }
            if self.buf.capacity() - self.buf.len() < want {
                self.buf.reserve(want);
            }
            let room = self.buf.capacity() - self.buf.len();
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.inner), cx, &mut self.buf) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    // tungstenite reads the socket itself from here on and
                    // hears the end (or the error) as it always did.
                    self.state = State::Ended;
                }
                Poll::Ready(Ok(read)) => {
                    self.backlog = read == room;
                    if let Some(linger) = &mut self.linger {
                        linger.active = true;
                    }
                }
                Poll::Pending => {
                    self.poll_linger(cx);
                    return Poll::Pending;
                }
            }
        }
    }

    /// The socket ran dry: a grown buffer starts (or goes on) waiting to be
    /// freed.
    fn poll_linger(&mut self, cx: &mut Context<'_>) {
        self.backlog = false;
        if self.buf.capacity() <= 2 * self.read_size {
            return;
        }
        let linger = self.linger.get_or_insert_with(|| {
            Box::new(Linger {
                quiet: Box::pin(tokio::time::sleep(LINGER)),
                active: false,
            })
        });
        if linger.active {
            linger.active = false;
            linger.quiet.as_mut().reset(Instant::now() + LINGER);
        }
        if linger.quiet.as_mut().poll(cx).is_ready() && self.buf.is_empty() {
            self.buf = BytesMut::new();
            self.linger = None;
        }
    }

    /// Handles what the buffer holds: one frame, at most.
    fn step(&mut self) -> Result<Step, ReadError> {
        let Some(head) = Head::parse(&self.buf) else {
            // At most 14 bytes of header: any read brings them.
            return Ok(Step::Need(self.buf.len() + 1));
        };
        // In tungstenite's order: a reserved opcode, then the size (1009
        // whatever else is wrong with the frame), then the rest.
        if !matches!(
            head.opcode,
            CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG
        ) {
            return Err(ReadError::PROTOCOL);
        }
        if head.len > self.max_message_size as u64 {
            return Err(ReadError::TOO_BIG);
        }
        // A client masks every frame, a server none (RFC 6455 §5.1).
        if head.mask.is_some() != (self.role == Role::Server) {
            return Err(ReadError::PROTOCOL);
        }
        let mask = head.mask;
        let control = head.opcode & 0x8 != 0;
        if control {
            if !head.fin || head.rsv != 0 || head.len > MAX_CONTROL_PAYLOAD {
                return Err(ReadError::PROTOCOL);
            }
            let total = head.header_len + head.len as usize;
            if self.buf.len() < total {
                return Ok(Step::Need(total));
            }
            if head.opcode == CLOSE {
                self.state = State::PeerClosed;
                self.watch_close_code(&head, mask);
            }
            self.staged = total;
            return Ok(Step::Ready(Incoming::Tungstenite));
        }
        let compressed = head.rsv == RSV1 && head.opcode != CONTINUATION && self.deflate.is_some();
        if head.rsv != 0 && !compressed {
            return Err(ReadError::PROTOCOL);
        }
        match (head.opcode, &self.partial) {
            (TEXT | BINARY, None) | (CONTINUATION, Some(_)) => {}
            _ => return Err(ReadError::PROTOCOL),
        }
        let total = head.header_len + head.len as usize;
        if self.buf.len() < total {
            return Ok(Step::Need(total));
        }
        self.buf.advance(head.header_len);
        let mut payload = self.buf.split_to(head.len as usize);
        if let Some(mask) = mask {
            unmask(&mut payload, mask);
        }
        if head.opcode != CONTINUATION {
            if head.fin && !compressed {
                // The common case: a whole message in one frame, delivered
                // in the buffer it was read into.
                let data = payload.freeze();
                let message = if head.opcode == TEXT {
                    Message::Text(text(data)?)
                } else {
                    Message::Binary(data)
                };
                return Ok(Step::Ready(Incoming::Message(message)));
            }
            self.partial = Some(Box::new(Partial {
                data: Vec::new(),
                text: head.opcode == TEXT,
                compressed,
                checked: 0,
            }));
        }
        self.add_fragment(&payload, head.fin)?;
        if !head.fin {
            return Ok(Step::Again);
        }
        let partial = self.partial.take().expect("a fragment was added to it");
        let data = Bytes::from(partial.data);
        let message = if partial.text {
            Message::Text(text(data)?)
        } else {
            Message::Binary(data)
        };
        Ok(Step::Ready(Incoming::Message(message)))
    }

    /// Adds a fragment's payload to the message being assembled (inflating
    /// it when the message is compressed), and checks the text so far.
    fn add_fragment(&mut self, payload: &[u8], fin: bool) -> Result<(), ReadError> {
        let partial = self.partial.as_mut().expect("a message is open");
        if partial.compressed {
            let deflate = self.deflate.as_mut().expect("compression was agreed");
            inflate_into(&mut deflate.inflater, payload, &mut partial.data)?;
            if fin {
                inflate_trailer(&mut deflate.inflater, &mut partial.data)?;
                deflate.inflater.end_message();
            }
        } else {
            if partial.data.len() + payload.len() > self.max_message_size {
                return Err(ReadError::TOO_BIG);
            }
            partial.data.extend_from_slice(payload);
        }
        if partial.text && !fin {
            // Fail fast: a sequence cut at the end may be completed by the
            // next fragment, anything else is wrong now.
            match std::str::from_utf8(&partial.data[partial.checked..]) {
                Ok(_) => partial.checked = partial.data.len(),
                Err(error) if error.error_len().is_none() => partial.checked += error.valid_up_to(),
                Err(_) => return Err(ReadError::UTF8),
            }
        }
        Ok(())
    }

    /// In a close frame carrying 1014, rewrites the code's low byte (still
    /// masked) so that tungstenite reads 1000.
    fn watch_close_code(&mut self, head: &Head, mask: Option<[u8; 4]>) {
        if head.len < 2 {
            return;
        }
        let mask = mask.unwrap_or_default();
        let code = &mut self.buf[head.header_len..head.header_len + 2];
        if [code[0] ^ mask[0], code[1] ^ mask[1]] == BAD_GATEWAY {
            code[1] = NORMAL_LOW ^ mask[1];
            self.bad_gateway = true;
        }
    }
}

/// A text message's bytes as text, or 1007.
fn text(data: Bytes) -> Result<Utf8Bytes, ReadError> {
    tungstenite::Utf8Bytes::try_from(data)
        .map(Utf8Bytes::from)
        .map_err(|_| ReadError::UTF8)
}

/// Inflates all of `input` onto the end of `out`.
fn inflate_into(inflater: &mut Inflater, input: &[u8], out: &mut Vec<u8>) -> Result<(), ReadError> {
    let mut input = input;
    while !input.is_empty() {
        let (consumed, produced) = inflate_step(inflater, input, out)?;
        if consumed == 0 && produced == 0 {
            // All of the frame is here and the inflater is stuck.
            return Err(ReadError::CORRUPT);
        }
        input = &input[consumed..];
    }
    Ok(())
}

/// Ends a compressed message: inflates the sync-flush trailer the sender
/// took off (RFC 7692 §7.2.2) and whatever output it still held.
fn inflate_trailer(inflater: &mut Inflater, out: &mut Vec<u8>) -> Result<(), ReadError> {
    let mut fed = 0;
    loop {
        let (consumed, produced) = inflate_step(inflater, &TRAILER[fed..], out)?;
        fed += consumed;
        if fed == TRAILER.len() && produced < CHUNK {
            return Ok(());
        }
        if consumed == 0 && produced == 0 {
            return Err(ReadError::CORRUPT);
        }
    }
}

/// One step of inflation: at most a chunk of output, added to `out` (which
/// grows to the message's size, not by a chunk at a time).
fn inflate_step(
    inflater: &mut Inflater,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(usize, usize), ReadError> {
    let (consumed, inflated) = inflater.inflate(input)?;
    out.extend_from_slice(inflated);
    Ok((consumed, inflated.len()))
}

/// Unmasks `data` in place (RFC 6455 §5.3), eight bytes at a time.
fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut words = data.chunks_exact_mut(8);
    for word in &mut words {
        let value = u64::from_ne_bytes(word.try_into().expect("eight bytes")) ^ wide;
        word.copy_from_slice(&value.to_ne_bytes());
    }
    // The words covered a multiple of 8 bytes: the rest starts at mask[0].
    for (i, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameReader<S> {
    /// What tungstenite reads: the control frame put in front of it, or,
    /// once the socket ended, the socket itself. Anything else is not for
    /// tungstenite: `Pending`, and the engine reads on through
    /// [`poll_incoming`](FrameReader::poll_incoming).
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Once the socket ended, tungstenite reads it directly; so does a
        // client's after the server's close frame, waiting for the server
        // to close the TCP connection (a server closes it first, and its
        // tungstenite reads nothing more).
        let direct = this.state == State::Ended
            || (this.state == State::PeerClosed && this.role == Role::Client);
        let available = if direct { this.buf.len() } else { this.staged };
        if available > 0 {
            let n = hand_over(&mut this.buf, available, out);
            this.staged = this.staged.saturating_sub(n);
            return Poll::Ready(Ok(()));
        }
        if direct {
            return Pin::new(&mut this.inner).poll_read(cx, out);
        }
        Poll::Pending
    }
}

crate::stream::write_through!(FrameReader<S>, inner);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmasking_matches_the_byte_by_byte_rule_at_every_length() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..70 {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut fast = data.clone();
            unmask(&mut fast, mask);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(fast, slow, "length {len}");
        }
    }

    #[test]
    fn headers_parse_at_each_length_form_and_wait_when_cut() {
        // 7-bit, 16-bit and 64-bit lengths, masked; and a header cut short.
        let masked = |first: u8, len: &[u8]| {
            let mut bytes = vec![first];
            bytes.extend_from_slice(len);
            bytes.extend_from_slice(&[1, 2, 3, 4]);
            bytes
        };
        let short = masked(0x81, &[0x80 | 5]);
        let head = Head::parse(&short).expect("whole");
        assert_eq!(
            (head.fin, head.opcode, head.len, head.header_len),
            (true, TEXT, 5, 6)
        );
        assert_eq!(head.mask, Some([1, 2, 3, 4]));
        let medium = masked(0x02, &[0x80 | 126, 0x01, 0x00]);
        let head = Head::parse(&medium).expect("whole");
        assert_eq!(
            (head.fin, head.opcode, head.len, head.header_len),
            (false, BINARY, 256, 8)
        );
        let long = masked(0xc2, &[0x80 | 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        let head = Head::parse(&long).expect("whole");
        assert_eq!((head.rsv, head.len, head.header_len), (RSV1, 65536, 14));
        for cut in 0..long.len() {
            assert!(Head::parse(&long[..cut]).is_none(), "cut at {cut}");
        }
        let unmasked = Head::parse(&[0x89, 0x00]).expect("whole");
        assert_eq!(
            (unmasked.opcode, unmasked.mask, unmasked.header_len),
            (PING, None, 2)
        );
    }

    /// A masked binary frame of `len` bytes.
    #[cfg(feature = "fuzzing")]
    fn binary_frame(len: usize) -> Vec<u8> {
        let mask = [9, 8, 7, 6];
        let mut frame = vec![0x82, 0x80 | 127];
        frame.extend_from_slice(&(len as u64).to_be_bytes());
        frame.extend_from_slice(&mask);
        frame.extend((0..len).map(|i| (i as u8) ^ mask[i % 4]));
        frame
    }

    /// Polls once, without waiting.
    #[cfg(feature = "fuzzing")]
    async fn poll_once(reader: &mut FrameReader) -> Poll<Result<Incoming, ReadError>> {
        std::future::poll_fn(|cx| Poll::Ready(reader.poll_incoming(cx))).await
    }

    #[cfg(feature = "fuzzing")]
    #[tokio::test(start_paused = true)]
    async fn a_grown_buffer_is_freed_once_the_socket_is_quiet() {
        use tokio::io::AsyncWriteExt;

        let (mut client, server) = tokio::io::duplex(256 * 1024);
        let mut reader = FrameReader::new(
            Stream::duplex(server),
            Role::Server,
            BytesMut::new(),
            2048,
            1 << 20,
            None,
        );
        client.write_all(&binary_frame(100_000)).await.unwrap();
        let Poll::Ready(Ok(Incoming::Message(Message::Binary(data)))) =
            poll_once(&mut reader).await
        else {
            panic!("the whole frame was written: the message is ready");
        };
        assert_eq!(data.len(), 100_000);
        assert!(
            data.iter().enumerate().all(|(i, b)| *b == i as u8),
            "unmasked"
        );
        drop(data);
        assert!(poll_once(&mut reader).await.is_pending());
        assert!(
            reader.buf.capacity() >= 100_000,
            "the frame's room is kept a while"
        );

        tokio::time::advance(Duration::from_millis(900)).await;
        assert!(poll_once(&mut reader).await.is_pending());
        assert!(
            reader.buf.capacity() >= 100_000,
            "not freed within the first second"
        );

        tokio::time::advance(Duration::from_millis(1200)).await;
        assert!(poll_once(&mut reader).await.is_pending());
        assert_eq!(reader.buf.capacity(), 0, "freed after a quiet second");
        assert!(reader.linger.is_none());

        // The next message is read into a fresh buffer.
        client.write_all(&binary_frame(10)).await.unwrap();
        assert!(matches!(
            poll_once(&mut reader).await,
            Poll::Ready(Ok(Incoming::Message(Message::Binary(ref data)))) if data.len() == 10
        ));
    }
}
