//! The byte stream under a connection: plain TCP, TLS with the `tls`
//! feature, or a stream upgraded by hyper with the `hyper` feature, behind
//! one concrete type (no generics, no boxed trait object on
//! the hot path).
//!
//! It also sizes reads. tungstenite reads through a small buffer of its own
//! (`websocket_read_buffer_size`, kept small because an idle connection holds
//! it for life), so a large message would take one system call per few KiB.
//! When a read fills a sizeable window, more data is probably waiting: the
//! stream enters a bulk phase, reading ahead in large chunks into a buffer of
//! its own and handing them out from memory. The buffer is kept from one
//! burst to the next (no allocation per message) and freed once the socket
//! has been quiet for a moment, so idle connections never hold it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant, Sleep};

/// How much one read-ahead system call may bring in.
const READ_AHEAD: usize = 64 * 1024;

/// A filled window at least this large starts a bulk phase; smaller ones
/// (the tail of tungstenite's buffer) say nothing about a backlog.
const BULK_WINDOW: usize = 1024;

/// How long the read-ahead buffer outlives the last bulk read.
const BULK_LINGER: Duration = Duration::from_secs(1);

/// An accepted client connection.
pub(crate) struct Stream {
    transport: Transport,
    bulk: Option<Box<Bulk>>,
}

/// The read-ahead state of a connection in a bulk phase.
struct Bulk {
    buf: BytesMut,
    /// Fires `BULK_LINGER` after the socket last ran dry following a read.
    quiet: Pin<Box<Sleep>>,
    /// Data arrived since the socket last ran dry.
    active: bool,
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
            bulk: None,
        }
    }

    /// Whether closing the stream needs a shutdown first: TLS sends its
    /// close_notify, and an upgraded hyper stream its own end. Dropping a
    /// plain TCP socket sends the FIN a shutdown would, one system call
    /// fewer.
    pub(crate) fn needs_shutdown(&self) -> bool {
        !matches!(self.transport, Transport::Tcp(_))
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

trait AsyncReadWrite: AsyncRead + AsyncWrite {}
impl<T: AsyncRead + AsyncWrite + ?Sized> AsyncReadWrite for T {}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(bulk) = &mut this.bulk else {
            let window = buf.remaining();
            ready!(this.transport().poll_read(cx, buf))?;
            if window >= BULK_WINDOW && buf.remaining() == 0 {
                this.bulk = Some(Box::new(Bulk {
                    buf: BytesMut::with_capacity(READ_AHEAD),
                    quiet: Box::pin(tokio::time::sleep(BULK_LINGER)),
                    active: true,
                }));
            }
            return Poll::Ready(Ok(()));
        };
        if bulk.buf.is_empty() {
            // Reuses the allocation once everything in it was handed out.
            bulk.buf.reserve(READ_AHEAD);
            match tokio_util::io::poll_read_buf(this.transport.as_io(), cx, &mut bulk.buf) {
                Poll::Ready(read) => {
                    read?;
                    bulk.active = true;
                }
                Poll::Pending => {
                    if bulk.active {
                        bulk.active = false;
                        let at = Instant::now() + BULK_LINGER;
                        bulk.quiet.as_mut().reset(at);
                    }
                    if bulk.quiet.as_mut().poll(cx).is_ready() {
                        // Quiet for a while: back to plain reads, buffer freed.
                        this.bulk = None;
                    }
                    return Poll::Pending;
                }
            }
        }
        let n = bulk.buf.len().min(buf.remaining());
        buf.put_slice(&bulk.buf[..n]);
        bulk.buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().transport().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().transport().poll_write_vectored(cx, bufs)
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
        self.get_mut().transport().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().transport().poll_shutdown(cx)
    }
}
