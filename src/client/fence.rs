//! [`HeadFence`]: the client's stream during its handshake.
//!
//! tokio-tungstenite reads the server's response through it, and it hands
//! over the response head and nothing after it: the bytes that follow a
//! 101 are frames (a server may send its first message, compressed even,
//! with the 101), and they stay here for the client's frame reader
//! (`engine/reader.rs`), which takes over once the handshake says how to read
//! them ([`HeadFence::into_parts`]). A refusal's body, and anything that is
//! not a response head, pass through for tungstenite to report as it always
//! did.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};

use crate::stream::hand_over;

/// How much one read from the stream may bring in.
const READ_SIZE: usize = 8 * 1024;

/// The longest response head the fence waits for.
const MAX_HEAD: usize = 64 * 1024;

/// The client's stream until the handshake is over.
pub(crate) struct HeadFence<S> {
    inner: S,
    /// Read from the stream and not handed over.
    raw: BytesMut,
    state: State,
}

enum State {
    /// No head end yet in the first `scanned` bytes of `raw`.
    Head { scanned: usize },
    /// A 101: `left` bytes of its head are still to hand over; what follows
    /// is kept.
    Upgraded { left: usize },
    /// Not an upgrade: everything passes through.
    Open,
}

impl<S: AsyncRead + Unpin> HeadFence<S> {
    pub fn new(inner: S) -> Self {
        HeadFence {
            inner,
            raw: BytesMut::new(),
            state: State::Head { scanned: 0 },
        }
    }

    /// After the handshake: the stream, and the bytes read past the head.
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.inner, self.raw)
    }

    /// Looks for the head's end in what was read, and moves the state on
    /// once it is found (or given up on).
    fn find_head(&mut self, eof: bool) {
        let State::Head { scanned } = &mut self.state else {
            return;
        };
        let from = scanned.saturating_sub(3);
        match self.raw[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            Some(at) if self.raw.starts_with(b"HTTP/1.1 101") => {
                self.state = State::Upgraded {
                    left: from + at + 4,
                };
            }
            // A refusal (its body follows the head, and tungstenite keeps
            // what it read along with the head as the body), or not a
            // response tungstenite will accept: let it say so.
            Some(_) => self.state = State::Open,
            None if self.raw.len() > MAX_HEAD || eof => self.state = State::Open,
            None => *scanned = self.raw.len(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadFence<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let available = match this.state {
                State::Head { .. } => 0,
                State::Upgraded { left } => left,
                State::Open => this.raw.len(),
            };
            if available > 0 {
                let n = hand_over(&mut this.raw, available, out);
                if let State::Upgraded { left } = &mut this.state {
                    *left -= n;
                }
                return Poll::Ready(Ok(()));
            }
            match this.state {
                // The head is handed over: the rest is not tungstenite's.
                State::Upgraded { .. } => return Poll::Pending,
                State::Open => return Pin::new(&mut this.inner).poll_read(cx, out),
                State::Head { .. } => {}
            }
            this.raw.reserve(READ_SIZE);
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.inner),
                cx,
                &mut this.raw
            ))?;
            this.find_head(read == 0);
        }
    }
}

crate::stream::write_through!(HeadFence<S>, inner);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_101_head_is_handed_over_and_the_frames_after_it_kept() {
        let (mut server, client) = tokio::io::duplex(1024);
        let mut fence = HeadFence::new(client);
        // The head arrives in two pieces, a frame right behind it.
        server
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgr")
            .await
            .unwrap();
        let mut head = Vec::new();
        let read = async {
            let mut buf = [0u8; 7];
            loop {
                let n = fence.read(&mut buf).await.unwrap();
                head.extend_from_slice(&buf[..n]);
                if head.ends_with(b"\r\n\r\n") {
                    break;
                }
            }
        };
        let write = async {
            server
                .write_all(b"ade: websocket\r\n\r\n\x81\x02hi")
                .await
                .unwrap();
        };
        tokio::join!(read, write);
        assert_eq!(
            head,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
        );
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut one = [0u8; 1];
        let mut buf = ReadBuf::new(&mut one);
        assert!(Pin::new(&mut fence)
            .poll_read(&mut cx, &mut buf)
            .is_pending());
        let (_, rest) = fence.into_parts();
        assert_eq!(&rest[..], b"\x81\x02hi");
    }

    #[tokio::test]
    async fn a_refusal_passes_through_with_its_body() {
        let (mut server, client) = tokio::io::duplex(1024);
        let mut fence = HeadFence::new(client);
        server
            .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
            .await
            .unwrap();
        drop(server);
        let mut all = Vec::new();
        fence.read_to_end(&mut all).await.unwrap();
        assert!(all.ends_with(b"\r\n\r\nno"));
    }
}
