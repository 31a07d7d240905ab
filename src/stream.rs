//! The byte stream under a connection: plain TCP, TLS with the `tls`
//! feature, or a stream upgraded by hyper with the `hyper` feature, behind
//! one concrete type (no generics, no boxed trait object on
//! the hot path).
//!
//! It writes data frames from their own buffers. The engine hands it
//! large frames and broadcast frames ([`Stream::push_frame`]: a header and a
//! shared payload, see
//! `wire.rs`) instead of letting tungstenite copy each payload into its
//! write buffer; they go out in vectored writes, several frames per system
//! call when several are queued. Every other write (tungstenite's control
//! frames and close frames) passes through [`AsyncWrite`], which writes the
//! queued frames first: the bytes reach the socket in the order they were
//! handed over. The engine hands over frames only while tungstenite's own
//! buffer is empty, so a frame never lands inside one of tungstenite's.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::wire::{WireFrame, DIRECT_MIN};

/// At most this many buffers go into one vectored write (Linux takes up to
/// 1024; past a few dozen a call gains nothing).
const MAX_SLICES: usize = 64;

/// An accepted client connection.
pub(crate) struct Stream {
    transport: Transport,
    /// Large frames handed over and not yet written: none until the first
    /// (a connection that only ever writes small messages holds one pointer
    /// for this), then kept for life, so writing allocates nothing per
    /// message.
    frames: Option<Box<Frames>>,
    /// Small frames, header and payload, in the order handed over, after
    /// the large ones; kept for life (allocated on the first write).
    tail: BytesMut,
}

/// The large frames handed over and not yet written; the first may be
/// partly written (`sent` bytes of it).
#[derive(Default)]
struct Frames {
    queue: VecDeque<WireFrame>,
    sent: usize,
    /// Bytes in `queue` not yet written.
    queued: usize,
}

impl Frames {
    /// `written` more bytes went out: drops the frames now whole on the
    /// wire; returns how many of the bytes were past them (the tail's).
    fn advance(&mut self, written: usize) -> usize {
        let through_queue = written.min(self.queued);
        self.queued -= through_queue;
        let mut done = self.sent + through_queue;
        while let Some(frame) = self.queue.front() {
            if done < frame.len() {
                break;
            }
            done -= frame.len();
            self.queue.pop_front();
        }
        self.sent = done;
        written - through_queue
    }
}

enum Transport {
    Tcp(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// A connection upgraded by hyper (feature `hyper`): HTTP/1.1 or an
    /// HTTP/2 stream.
    #[cfg(feature = "hyper")]
    Upgraded(Box<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>),
    /// An in-memory peer, for the fuzz targets (feature `fuzzing`).
    #[cfg(feature = "fuzzing")]
    Duplex(tokio::io::DuplexStream),
}

impl Stream {
    pub fn tcp(stream: TcpStream) -> Self {
        Self::new(Transport::Tcp(stream))
    }

    #[cfg(feature = "tls")]
    pub fn tls(stream: tokio_rustls::server::TlsStream<TcpStream>) -> Self {
        Self::new(Transport::Tls(Box::new(stream)))
    }

    #[cfg(feature = "hyper")]
    pub fn upgraded(upgraded: hyper::upgrade::Upgraded) -> Self {
        Self::new(Transport::Upgraded(Box::new(hyper_util::rt::TokioIo::new(
            upgraded,
        ))))
    }

    #[cfg(feature = "fuzzing")]
    pub fn duplex(stream: tokio::io::DuplexStream) -> Self {
        Self::new(Transport::Duplex(stream))
    }

    fn new(transport: Transport) -> Self {
        Stream {
            transport,
            frames: None,
            tail: BytesMut::new(),
        }
    }

    /// Whether closing the stream needs a shutdown first: TLS sends its
    /// close_notify, and an upgraded hyper stream its own end. Dropping a
    /// plain TCP socket sends the FIN a shutdown would, one system call
    /// fewer.
    pub(crate) fn needs_shutdown(&self) -> bool {
        !matches!(self.transport, Transport::Tcp(_))
    }

    /// Queues a frame to write after everything handed over before it. It
    /// goes out on [`poll_write_frames`](Self::poll_write_frames), on a
    /// flush, or before any later write. A frame under
    /// [`DIRECT_MIN`] is copied into one buffer with the small frames
    /// before and after it (one contiguous write for a burst of replies); a
    /// larger one is written from its own buffer.
    pub fn push_frame(&mut self, frame: WireFrame) {
        if frame.payload().len() < DIRECT_MIN {
            self.tail.reserve(frame.len());
            self.tail.extend_from_slice(frame.header());
            self.tail.extend_from_slice(frame.payload());
            return;
        }
        let frames = self.frames.get_or_insert_with(Box::default);
        if !self.tail.is_empty() {
            // The small frames before this one go out before it.
            let before = WireFrame::prebuilt(self.tail.split().freeze());
            frames.queued += before.len();
            frames.queue.push_back(before);
        }
        if frames.queue.capacity() == 0 {
            // Room for one at first (kept for life, so an idle connection
            // that wrote one frame at a time holds one slot, not four).
            frames.queue.reserve_exact(1);
        }
        frames.queued += frame.len();
        frames.queue.push_back(frame);
    }

    /// Whether a frame written from its own buffer waits (the engine writes
    /// those before it reads on, and combines small ones until it has read
    /// all it can).
    pub fn has_direct_frames(&self) -> bool {
        self.frames
            .as_ref()
            .is_some_and(|frames| !frames.queue.is_empty())
    }

    /// Bytes of frames handed over and not yet written.
    pub fn queued_frame_bytes(&self) -> usize {
        self.frames.as_ref().map_or(0, |frames| frames.queued) + self.tail.len()
    }

    /// Writes the queued frames: `Ready(Ok)` once all are written.
    pub fn poll_write_frames(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.queued_frame_bytes() > 0 {
            let Some(frames) = self.frames.as_deref_mut().filter(|f| !f.queue.is_empty()) else {
                // Small frames only (the usual case): one buffer, one
                // plain write, no vector to build.
                let written = ready!(self.transport.as_io().poll_write(cx, &self.tail))?;
                if written == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.tail_written(written);
                continue;
            };
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            let mut skip = frames.sent;
            let tail: &[u8] = &self.tail;
            let parts = frames
                .queue
                .iter()
                .flat_map(|frame| [frame.header(), frame.payload()])
                .chain(std::iter::once(tail));
            for part in parts {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                slices[count] = IoSlice::new(&part[skip..]);
                skip = 0;
                count += 1;
                if count == MAX_SLICES {
                    break;
                }
            }
            let mut io = self.transport.as_io();
            // One buffer (a broadcast frame, or what is left of one) goes
            // out with a plain write, which the kernel takes a little faster
            // than a vector of one.
            let written = if count > 1 && io.is_write_vectored() {
                ready!(io.as_mut().poll_write_vectored(cx, &slices[..count]))?
            } else {
                ready!(io.as_mut().poll_write(cx, &slices[0]))?
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let past_queue = frames.advance(written);
            self.tail_written(past_queue);
        }
        Poll::Ready(Ok(()))
    }

    /// `written` bytes of the small frames' buffer went out. Once all of it
    /// has, it is cleared in place: its room is reused from the start
    /// without the buffer having to take it back (which `advance` to the
    /// end would leave to the next `reserve`).
    fn tail_written(&mut self, written: usize) {
        if written >= self.tail.len() {
            self.tail.clear();
        } else {
            self.tail.advance(written);
        }
    }

    fn transport(&mut self) -> Pin<&mut (dyn AsyncReadWrite + Unpin + Send)> {
        self.transport.as_io()
    }
}

impl Transport {
    fn as_io(&mut self) -> Pin<&mut (dyn AsyncReadWrite + Unpin + Send)> {
        match self {
            Transport::Tcp(s) => Pin::new(s),
            #[cfg(feature = "tls")]
            Transport::Tls(s) => Pin::new(s.as_mut()),
            #[cfg(feature = "hyper")]
            Transport::Upgraded(s) => Pin::new(s.as_mut()),
            #[cfg(feature = "fuzzing")]
            Transport::Duplex(s) => Pin::new(s),
        }
    }
}

/// Implements `AsyncWrite` for a reading adapter `$ty` by passing every
/// write through to its `$inner` stream as it is (the frame reader, the
/// client's handshake fence: they change what is read, never what is
/// written).
macro_rules! write_through {
    ($ty:ty, $inner:ident) => {
        impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $ty {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().$inner).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().$inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.$inner.is_write_vectored()
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().$inner).poll_flush(cx)
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().$inner).poll_shutdown(cx)
            }
        }
    };
}
pub(crate) use write_through;

/// Moves up to `available` bytes from the front of `buf` into `out` (a
/// reading adapter handing its buffered bytes to the reader above it);
/// returns how many.
pub(crate) fn hand_over(buf: &mut BytesMut, available: usize, out: &mut ReadBuf<'_>) -> usize {
    let n = available.min(out.remaining());
    out.put_slice(&buf[..n]);
    buf.advance(n);
    n
}

trait AsyncReadWrite: AsyncRead + AsyncWrite {}
impl<T: AsyncRead + AsyncWrite + ?Sized> AsyncReadWrite for T {}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().transport().poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_write_frames(cx))?;
        this.transport().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_write_frames(cx))?;
        this.transport().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.transport {
            Transport::Tcp(s) => s.is_write_vectored(),
            #[cfg(feature = "tls")]
            Transport::Tls(s) => s.is_write_vectored(),
            #[cfg(feature = "hyper")]
            Transport::Upgraded(s) => s.is_write_vectored(),
            #[cfg(feature = "fuzzing")]
            Transport::Duplex(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_frames(cx))?;
        this.transport().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_frames(cx))?;
        this.transport().poll_shutdown(cx)
    }
}

#[cfg(all(test, feature = "fuzzing"))]
mod tests {
    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::wire::{Framed, WireFrame};

    /// Frames handed over, then bytes written through `AsyncWrite` (as
    /// tungstenite writes), reach the peer whole and in order, through a
    /// pipe that takes 7 bytes at a time (every write is partial, splitting
    /// headers and payloads anywhere).
    #[tokio::test]
    async fn frames_then_other_writes_arrive_in_order_through_partial_writes() {
        let (ours, mut peer) = tokio::io::duplex(7);
        let mut stream = Stream::duplex(ours);
        let big = Bytes::from((0..70_000u32).map(|i| i as u8).collect::<Vec<_>>());
        // Small, large, small: the small frames are copied into one buffer,
        // the large one is written from its own, and the order holds both
        // ways round.
        let frames = [
            WireFrame::data(true, true, Bytes::from_static(b"hi")),
            WireFrame::data(false, false, big.clone()),
            Framed::once(&tungstenite::Message::binary(vec![9u8; 300]))
                .unwrap()
                .into_frame(),
        ];
        let mut expected = Vec::new();
        for frame in &frames {
            expected.extend_from_slice(frame.header());
            expected.extend_from_slice(frame.payload());
        }
        expected.extend_from_slice(b"after");
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; expected.len()];
            peer.read_exact(&mut got).await.unwrap();
            assert!(got == expected, "bytes differ from the frames in order");
        });
        for frame in frames {
            stream.push_frame(frame);
        }
        assert!(stream.has_direct_frames());
        assert_eq!(stream.queued_frame_bytes(), 70_000 + 10 + 2 + 2 + 300 + 4);
        // A write through AsyncWrite goes after every queued frame.
        stream.write_all(b"after").await.unwrap();
        assert_eq!(stream.queued_frame_bytes(), 0);
        stream.flush().await.unwrap();
        reader.await.unwrap();
    }
}
