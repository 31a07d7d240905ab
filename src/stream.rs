//! The byte stream under a connection: plain TCP, or TLS with the `tls`
//! feature, behind one concrete type (no generics, no boxed trait object on
//! the hot path).
//!
//! It also sizes reads. tungstenite reads through a small buffer of its own
//! (`websocket_read_buffer_size`, kept small because an idle connection holds
//! it for life), so a large message would take one system call per few KiB.
//! When a read fills the caller's whole window, more data is probably
//! waiting: the stream then switches to reading ahead in large chunks into a
//! buffer of its own, hands them out from memory, and frees that buffer as
//! soon as the socket runs dry. Idle connections never hold it.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How much one read-ahead system call may bring in.
const READ_AHEAD: usize = 64 * 1024;

/// An accepted client connection.
pub(crate) struct Stream {
    transport: Transport,
    ahead: BytesMut,
    /// The last read filled the caller's window: read ahead next time.
    hot: bool,
}

enum Transport {
    Tcp(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
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

    #[cfg(feature = "fuzzing")]
    pub fn duplex(stream: tokio::io::DuplexStream) -> Self {
        Self::new(Transport::Duplex(stream))
    }

    fn new(transport: Transport) -> Self {
        Stream {
            transport,
            ahead: BytesMut::new(),
            hot: false,
        }
    }

    fn transport(&mut self) -> Pin<&mut (dyn AsyncReadWrite + Unpin + Send)> {
        self.transport.as_io()
    }

    /// Hands out buffered bytes; frees the buffer once it is drained and the
    /// socket is no longer busy.
    fn serve_ahead(&mut self, buf: &mut ReadBuf<'_>) {
        let n = self.ahead.len().min(buf.remaining());
        buf.put_slice(&self.ahead[..n]);
        self.ahead.advance(n);
        if self.ahead.is_empty() && !self.hot {
            self.ahead = BytesMut::new();
        }
    }
}

impl Transport {
    fn as_io(&mut self) -> Pin<&mut (dyn AsyncReadWrite + Unpin + Send)> {
        match self {
            Transport::Tcp(s) => Pin::new(s),
            #[cfg(feature = "tls")]
            Transport::Tls(s) => Pin::new(s.as_mut()),
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
        if !this.ahead.is_empty() {
            this.serve_ahead(buf);
            return Poll::Ready(Ok(()));
        }
        if !this.hot {
            let before = buf.remaining();
            ready!(this.transport().poll_read(cx, buf))?;
            this.hot = before > 0 && buf.remaining() == 0;
            return Poll::Ready(Ok(()));
        }
        this.ahead.reserve(READ_AHEAD);
        let read = match tokio_util::io::poll_read_buf(this.transport.as_io(), cx, &mut this.ahead)
        {
            Poll::Ready(read) => read?,
            Poll::Pending => {
                // The socket ran dry: go back to plain reads, free the buffer.
                this.hot = false;
                this.ahead = BytesMut::new();
                return Poll::Pending;
            }
        };
        // A short read means the backlog is gone.
        this.hot = read >= READ_AHEAD / 2;
        this.serve_ahead(buf);
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
