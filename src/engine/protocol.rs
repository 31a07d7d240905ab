//! [`Protocol`]: tungstenite's protocol state beside the stream it drives.
//!
//! tungstenite keeps what the engine does not do itself: control frames
//! (the pong to a ping, the close handshake), the messages that are neither
//! text nor binary, and the protocol's state. Its `WebSocketContext` takes
//! the stream as an argument on every call, so the engine keeps the stream
//! beside it and lends it, with the task's [`Context`], for one call at a
//! time ([`Lent`]): a read or write that would wait is `WouldBlock` to
//! tungstenite and `Pending` here, and the stream has registered the task's
//! waker itself.
//!
//! Nothing is allocated to carry wakers, and nothing is done per poll but the
//! call itself. (An adapter that keeps the stream inside tungstenite must
//! store the waker somewhere tungstenite's synchronous calls can find it:
//! tokio-tungstenite keeps two reference-counted waker proxies per
//! connection and updates them on every poll.)
//!
//! Used by the server's connections (`connection.rs`) and by the client
//! (`client/driver.rs`).

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tungstenite::error::Error as WsError;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::Message;

use super::close::close_for;
use super::reader::{FrameReader, Incoming};

/// tungstenite's protocol state and the stream it reads and writes.
pub(crate) struct Protocol<S> {
    /// Boxed: 256 bytes the connection's future need not carry inline
    /// (`driver.rs` says why its size matters).
    context: Box<WebSocketContext>,
    io: S,
    /// A write left bytes in tungstenite's buffer for want of room in the
    /// socket: the next message waits until they are flushed.
    blocked: bool,
    /// The read side gave its last item (an error, or the end).
    ended: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Protocol<S> {
    /// Wraps `io`, whose handshake is over, as one side of a WebSocket.
    pub fn new(io: S, role: Role, config: WebSocketConfig) -> Self {
        Protocol {
            context: Box::new(WebSocketContext::new(role, Some(config))),
            io,
            blocked: false,
            ended: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    pub fn config(&self) -> &WebSocketConfig {
        self.context.get_config()
    }

    /// The next message tungstenite reads (a control frame answered, a
    /// close handshake moved on); `None` once the connection is over (the
    /// close handshake completed, or an error was returned before).
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, WsError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let read = self.context.read(&mut Lent::new(&mut self.io, cx));
        match would_block(read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(message)) => Poll::Ready(Some(Ok(message))),
            Poll::Ready(Err(error)) => {
                self.ended = true;
                match error {
                    WsError::AlreadyClosed | WsError::ConnectionClosed => Poll::Ready(None),
                    error => Poll::Ready(Some(Err(error))),
                }
            }
        }
    }

    /// Ready for [`start_send`](Self::start_send): nothing is left over
    /// from a write that found the socket full.
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        if !self.blocked {
            return Poll::Ready(Ok(()));
        }
        self.poll_flush(cx)
    }

    /// Gives tungstenite a message to write. It is buffered, and written
    /// out at once only past `write_buffer_size`; a write that finds the
    /// socket full keeps the message, and [`poll_ready`](Self::poll_ready)
    /// waits for room before the next.
    pub fn start_send(&mut self, cx: &mut Context<'_>, message: Message) -> Result<(), WsError> {
        let written = self
            .context
            .write(&mut Lent::new(&mut self.io, cx), message);
        match would_block(written) {
            Poll::Ready(written) => written,
            Poll::Pending => {
                self.blocked = true;
                Ok(())
            }
        }
    }

    /// Writes out what tungstenite holds and flushes the stream. After the
    /// close handshake there is nothing left to flush: that is done, too.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let flushed = would_block(self.context.flush(&mut Lent::new(&mut self.io, cx)));
        if flushed.is_ready() {
            self.blocked = false;
        }
        flushed.map(|result| match result {
            Err(WsError::ConnectionClosed) => Ok(()),
            other => other,
        })
    }
}

/// What one read of a connection gave.
pub(crate) enum Frame {
    /// A data message, from the frame reader.
    Data(crate::message::Message),
    /// A control frame, read by tungstenite (which has queued the pong to a
    /// ping, or the echo of a close).
    Control(Message),
    /// The peer broke the protocol: close with this code and reason.
    Broken(u16, &'static str),
    /// The connection is over: the close handshake completed, or the peer
    /// vanished.
    Over,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Protocol<FrameReader<S>> {
    /// The next thing read: a data message from the frame reader, or,
    /// when the reader has put a control frame (or the socket's end) in
    /// front of tungstenite, what tungstenite makes of it.
    // Inlined into the connection's loop: a call there cost about 60
    // instructions per echoed message (callgrind, W=1).
    #[inline]
    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Frame> {
        Poll::Ready(match ready!(self.io.poll_incoming(cx)) {
            Ok(Incoming::Message(message)) => Frame::Data(message),
            Ok(Incoming::Tungstenite) => match ready!(self.poll_next(cx)) {
                Some(Ok(message)) => Frame::Control(message),
                Some(Err(error)) => match close_for(&error) {
                    Some((code, reason)) => Frame::Broken(code, reason),
                    None => Frame::Over,
                },
                None => Frame::Over,
            },
            Err(error) => Frame::Broken(error.code, error.reason),
        })
    }
}

/// `WouldBlock` from the stream, through tungstenite, as `Pending`.
fn would_block<T>(result: Result<T, WsError>) -> Poll<Result<T, WsError>> {
    match result {
        Err(WsError::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
        other => Poll::Ready(other),
    }
}

/// The stream lent to tungstenite for one call, as the blocking `Read` and
/// `Write` it expects: `Pending` is `WouldBlock` (the stream has registered
/// the task's waker).
struct Lent<'a, 'b, S> {
    io: &'a mut S,
    cx: &'a mut Context<'b>,
}

impl<'a, 'b, S> Lent<'a, 'b, S> {
    fn new(io: &'a mut S, cx: &'a mut Context<'b>) -> Self {
        Lent { io, cx }
    }
}

fn pending_as_would_block<T>(poll: Poll<io::Result<T>>) -> io::Result<T> {
    match poll {
        Poll::Ready(result) => result,
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

impl<S: AsyncRead + Unpin> Read for Lent<'_, '_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        pending_as_would_block(Pin::new(&mut *self.io).poll_read(self.cx, &mut buf))?;
        Ok(buf.filled().len())
    }
}

impl<S: AsyncWrite + Unpin> Write for Lent<'_, '_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        pending_as_would_block(Pin::new(&mut *self.io).poll_write(self.cx, buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        pending_as_would_block(Pin::new(&mut *self.io).poll_flush(self.cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A ping too large for the pipe: the write finds it full, keeps the
    /// rest in tungstenite's buffer, and the next message waits until the
    /// peer reads.
    #[tokio::test]
    async fn a_write_that_finds_the_socket_full_holds_the_next_until_room() {
        let (ours, mut theirs) = tokio::io::duplex(16);
        let config = WebSocketConfig::default().write_buffer_size(0);
        let mut protocol = Protocol::new(ours, Role::Server, config);
        let mut cx = Context::from_waker(std::task::Waker::noop());

        let ping = Message::Ping(vec![7u8; 100].into());
        assert!(protocol.start_send(&mut cx, ping).is_ok());
        assert!(
            protocol.poll_ready(&mut cx).is_pending(),
            "the pipe is full"
        );

        let mut frame = [0u8; 102];
        theirs.read_exact(&mut frame[..16]).await.unwrap();
        let ready = std::future::poll_fn(|cx| protocol.poll_ready(cx));
        let (ready, read) = tokio::join!(ready, theirs.read_exact(&mut frame[16..]));
        ready.unwrap();
        read.unwrap();
        assert_eq!(&frame[..2], &[0x89, 100], "one unmasked ping frame");
        assert!(frame[2..].iter().all(|&b| b == 7));
        assert!(protocol.poll_flush(&mut cx).is_ready());
    }

    /// A ping read is answered: the pong waits in tungstenite's buffer until
    /// the flush. A read with nothing there is `Pending`, not an error.
    #[tokio::test]
    async fn a_ping_read_is_answered_on_the_flush() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut protocol = Protocol::new(ours, Role::Server, WebSocketConfig::default());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(protocol.poll_next(&mut cx).is_pending());

        // A masked ping with payload "hi" (mask 1, 2, 3, 4).
        let ping = [0x89, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
        tokio::io::AsyncWriteExt::write_all(&mut theirs, &ping)
            .await
            .unwrap();
        match protocol.poll_next(&mut cx) {
            Poll::Ready(Some(Ok(Message::Ping(data)))) => assert_eq!(&data[..], b"hi"),
            other => panic!("expected the ping, got {other:?}"),
        }
        assert!(protocol.poll_flush(&mut cx).is_ready());
        let mut pong = [0u8; 4];
        theirs.read_exact(&mut pong).await.unwrap();
        assert_eq!(pong, [0x8a, 2, b'h', b'i']);
    }
}
