//! The task that owns a client connection's socket.
//!
//! As on the server, one task does everything that touches the socket:
//! draining the send queue (combining writes, flushing when no more input is
//! ready), reading frames into the reader's bounded inbox, answering pings,
//! and the close handshake. The [`Client`](super::Client) and its
//! [`ClientSender`](super::ClientSender)s only talk to it through the send
//! queue (`send_queue.rs`, as on the server) and the inbox, so
//! reading and writing never wait on each other and nothing locks the socket.
//! The close handshake is the server engine's state machine
//! (`engine/close.rs`), lingering close included.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::MaybeTlsStream;

use crate::engine::close::Phase;
use crate::engine::linger::poll_linger;
use crate::engine::outgoing;
use crate::engine::protocol::{Frame, Protocol};
use crate::engine::reader::FrameReader;
use crate::message::Message;
use crate::send_queue::SendQueue;

/// The client's socket: TCP or TLS, read by the same frame reader as a
/// server's connection (data frames and compressed messages handled
/// there, control frames up to tungstenite).
pub(super) type Socket = Protocol<FrameReader<MaybeTlsStream<TcpStream>>>;

/// A client masks every frame it sends: its messages all go through
/// tungstenite.
impl outgoing::Socket for FrameReader<MaybeTlsStream<TcpStream>> {
    fn frames(&mut self) -> Option<&mut crate::stream::Stream> {
        None
    }

    fn deflater(&mut self) -> Option<&mut crate::deflate::write::Deflater> {
        FrameReader::deflater(self)
    }
}

/// Most messages held for a reader that is not reading; past this (or past
/// the message size limit in bytes) the task stops reading and TCP pushes
/// back on the server.
const INBOX_MESSAGES: usize = 32;

/// Most frames read in one wake-up, so that a server that never stops
/// sending cannot keep the task from writing (or other tasks from running).
const READ_BUDGET: usize = 64;

/// How the connection ended: the server's close code and reason, if it sent
/// a close frame.
#[derive(Clone, Debug, Default)]
pub(super) struct Ended {
    pub code: Option<u16>,
    pub reason: String,
}

/// What the driver, the reader and the senders share besides the send queue.
pub(super) struct Link {
    inbox: Mutex<Inbox>,
    /// Wakes the reader when a message arrives or the connection ends.
    reader: AtomicWaker,
    /// Wakes the driver when the reader makes room (or goes away).
    driver: AtomicWaker,
    ended: OnceLock<Ended>,
    max_inbox_bytes: usize,
}

#[derive(Default)]
struct Inbox {
    messages: VecDeque<Message>,
    bytes: usize,
    finished: bool,
    reader_gone: bool,
}

impl Link {
    pub fn new(max_inbox_bytes: usize) -> Arc<Self> {
        Arc::new(Link {
            inbox: Mutex::default(),
            reader: AtomicWaker::new(),
            driver: AtomicWaker::new(),
            ended: OnceLock::new(),
            max_inbox_bytes,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inbox> {
        // Nothing panics while holding the lock; recover the data if it ever did.
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next message for the reader, or `None` once the connection has
    /// ended and everything read before was taken.
    pub async fn recv(&self) -> Option<Message> {
        poll_fn(|cx| {
            if let Some(ready) = self.try_recv() {
                return Poll::Ready(ready);
            }
            self.reader.register(cx.waker());
            match self.try_recv() {
                Some(ready) => Poll::Ready(ready),
                None => Poll::Pending,
            }
        })
        .await
    }

    fn try_recv(&self) -> Option<Option<Message>> {
        let mut inbox = self.lock();
        match inbox.messages.pop_front() {
            Some(message) => {
                inbox.bytes -= message.len();
                drop(inbox);
                self.driver.wake();
                Some(Some(message))
            }
            None if inbox.finished => Some(None),
            None => None,
        }
    }

    /// The reader is gone: what arrives from now on is dropped.
    pub fn reader_dropped(&self) {
        let mut inbox = self.lock();
        inbox.reader_gone = true;
        inbox.messages.clear();
        inbox.bytes = 0;
        drop(inbox);
        self.driver.wake();
    }

    pub fn ended(&self) -> Option<&Ended> {
        self.ended.get()
    }

    fn has_room(&self) -> bool {
        let inbox = self.lock();
        inbox.reader_gone
            || (inbox.messages.len() < INBOX_MESSAGES && inbox.bytes < self.max_inbox_bytes)
    }

    fn deliver(&self, message: Message) {
        let mut inbox = self.lock();
        if inbox.reader_gone {
            return;
        }
        inbox.bytes += message.len();
        inbox.messages.push_back(message);
        drop(inbox);
        self.reader.wake();
    }

    fn finish(&self) {
        let _ = self.ended.set(Ended::default());
        self.lock().finished = true;
        self.reader.wake();
    }
}

pub(super) struct Driver {
    ws: Socket,
    queue: Arc<SendQueue>,
    link: Arc<Link>,
    phase: Phase,
    unflushed: bool,
    close_timeout: Duration,
}

impl Driver {
    pub fn new(
        ws: Socket,
        queue: Arc<SendQueue>,
        link: Arc<Link>,
        close_timeout: Duration,
    ) -> Self {
        Driver {
            ws,
            queue,
            link,
            phase: Phase::Open,
            unflushed: false,
            close_timeout,
        }
    }

    /// Runs the connection until it has closed, then shuts the socket down
    /// (bounded: over TLS that writes a close_notify a dead peer would hold
    /// up).
    pub async fn run(mut self) {
        poll_fn(|cx| self.poll(cx)).await;
        let shutdown = self.ws.get_mut().shutdown();
        let _ = tokio::time::timeout(self.close_timeout, shutdown).await;
    }

    fn finish(&mut self) -> Poll<()> {
        self.phase = Phase::Closed;
        // Writers learn first, so that a reader that saw the end sees every
        // later write refused.
        self.queue.close();
        self.queue.discard();
        self.link.finish();
        Poll::Ready(())
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.phase.is_closed() {
            return Poll::Ready(());
        }
        self.queue.register(cx.waker());
        self.link.driver.register(cx.waker());

        if self.phase.is_open() {
            if let Some(request) = self.queue.take_close_request() {
                if self
                    .phase
                    .begin_close(request.code, request.reason, self.close_timeout)
                {
                    self.queue.close();
                }
            }
        }
        if self.phase.feeds_queue() {
            match outgoing::poll_feed(
                &mut self.ws,
                &self.queue,
                &mut self.phase,
                self.close_timeout,
                false,
                cx,
                |_| {},
            ) {
                Ok(fed) => self.unflushed |= fed,
                Err(()) => return self.finish(),
            }
        }

        let mut budget = READ_BUDGET;
        while self.phase.reads(self.link.has_room()) {
            if budget == 0 {
                cx.waker().wake_by_ref();
                break;
            }
            budget -= 1;
            let broken = match self.ws.poll_frame(cx) {
                Poll::Ready(Frame::Data(message)) => {
                    self.link.deliver(message);
                    continue;
                }
                Poll::Ready(Frame::Control(message)) => {
                    self.on_frame(message);
                    continue;
                }
                Poll::Ready(Frame::Broken(code, reason)) => Some((code, reason)),
                Poll::Ready(Frame::Over) => None,
                Poll::Pending => break,
            };
            match broken {
                Some((code, reason)) if self.phase.feeds_queue() => {
                    self.unflushed |= outgoing::fail(
                        &mut self.ws,
                        &self.queue,
                        &mut self.phase,
                        self.close_timeout,
                        code,
                        reason,
                        cx,
                    );
                    break;
                }
                // The close handshake is over, or the server vanished.
                _ => return self.finish(),
            }
        }
        if self.phase.is_closed() {
            // A protocol error whose close frame could not even be queued.
            return self.finish();
        }

        // No more input is ready (or the reader is full): now write.
        if self.phase.flushes(self.unflushed) {
            match self.ws.poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.unflushed = false;
                    self.phase.flushed();
                }
                Poll::Ready(Err(_)) => return self.finish(),
                Poll::Pending => {}
            }
        }

        if let Phase::Lingering { shut_down, .. } = &mut self.phase {
            if poll_linger(self.ws.get_mut().get_mut(), cx, shut_down).is_ready() {
                return self.finish();
            }
        }

        if self.phase.poll_deadline(cx, false).is_ready() {
            tracing::debug!("client close handshake timed out: dropping the connection");
            return self.finish();
        }
        Poll::Pending
    }

    fn on_frame(&mut self, message: tungstenite::Message) {
        match message {
            tungstenite::Message::Text(text) => self.link.deliver(Message::Text(text.into())),
            tungstenite::Message::Binary(data) => self.link.deliver(Message::Binary(data)),
            // tungstenite has queued the pong; make sure it is flushed.
            tungstenite::Message::Ping(_) => self.unflushed = true,
            tungstenite::Message::Pong(_) | tungstenite::Message::Frame(_) => {}
            tungstenite::Message::Close(frame) => {
                let _ = self.link.ended.set(Ended {
                    code: self.ws.get_ref().peer_close_code(frame.as_ref()),
                    reason: frame
                        .as_ref()
                        .map(|f| f.reason.as_str().to_owned())
                        .unwrap_or_default(),
                });
                // tungstenite has queued the echo of the close frame.
                self.unflushed = true;
                if self.phase.peer_closed(self.close_timeout) {
                    self.queue.close();
                }
            }
        }
    }
}
