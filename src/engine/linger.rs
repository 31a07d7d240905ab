//! A lingering close: after a protocol error our close frame is out, the
//! write side is shut down, and what the peer still sends is read and thrown
//! away until it closes its side. Dropping a socket with unread input resets
//! the connection, and a reset can destroy the close frame before the peer
//! reads it.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Shuts the write side down (once, recorded in `shut_down`), then reads and
/// discards input. Ready when the peer has closed its side (or the socket
/// failed).
pub(crate) fn poll_linger<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    cx: &mut Context<'_>,
    shut_down: &mut bool,
) -> Poll<()> {
    if !*shut_down {
        match Pin::new(&mut *stream).poll_shutdown(cx) {
            Poll::Ready(_) => *shut_down = true,
            Poll::Pending => return Poll::Pending,
        }
    }
    let mut scratch = [0u8; 8192];
    // Bounded, so that a peer that never stops sending cannot hold the task
    // here; it is woken again to go on.
    for _ in 0..64 {
        let mut buf = ReadBuf::new(&mut scratch);
        match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) if !buf.filled().is_empty() => {}
            Poll::Ready(_) => return Poll::Ready(()),
            Poll::Pending => return Poll::Pending,
        }
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}
