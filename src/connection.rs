//! The task that owns one WebSocket connection's socket.
//!
//! Everything that touches the socket after the 101 happens here, in one task:
//! reading frames, answering pings, calling the handler, draining the send
//! queue into the socket, keep-alive pings, and the close handshake. Nothing
//! else holds the socket, so there is no lock between reading and writing.
//!
//! The handler runs inside this task. While one of its methods is running,
//! [`Io::call`] keeps polling the socket underneath it: queued writes keep
//! draining (so a handler waiting for queue room is never waiting on itself),
//! pings are answered, and incoming messages are read ahead into a small,
//! bounded inbox that is delivered in order once the method returns.
//!
//! Writes are combined: each queued message is fed into tungstenite's write
//! buffer, and the buffer is flushed to the socket only when no more input is
//! ready, so a burst of pipelined requests is answered with one write call.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, Sink, Stream as _};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tungstenite::error::Error as WsError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role};

use crate::application::AppContext;
use crate::close_code;
use crate::stream::Stream;
use crate::websocket::{Outbound, PeerClose, Popped, Shared};
use crate::{Message, Utf8Bytes, WebSocket, WebSocketHandler};

/// Wraps an upgraded stream (and any bytes read past the request head) as a
/// WebSocket: the handler's context and the socket side, ready for [`run`].
pub(crate) async fn establish(
    stream: Stream,
    read_ahead: Vec<u8>,
    request: http::Request<()>,
    subprotocol: Option<String>,
    app: AppContext,
) -> (WebSocket, Io) {
    let settings = app.settings().clone();
    let ws = WebSocketStream::from_partially_read(
        stream,
        read_ahead,
        Role::Server,
        Some(settings.websocket_config()),
    )
    .await;
    let shared = Shared::new(
        settings.max_queued_messages,
        settings.max_queued_bytes,
        settings.overflow,
    );
    let io = Io::new(IoParts {
        ws,
        shared: shared.clone(),
        shutdown: app.shutdown_token().clone(),
        settings,
    });
    (WebSocket::new(shared, request, subprotocol, app), io)
}

/// Runs a connection from `open` to `on_close`.
///
/// `on_close` runs exactly once, whatever ends the connection, and after the
/// socket is closed.
pub(crate) async fn run<H: WebSocketHandler>(mut handler: H, ws: WebSocket, mut io: Io) {
    tracing::debug!(remote = %ws.remote_addr(), path = %ws.request().uri().path(), "WebSocket opened");
    let mut healthy = io.call(handler.open(&ws)).await;
    while let Some(event) = io.next_event().await {
        if !healthy {
            // A method panicked: the close is under way, nothing more reaches
            // the handler until on_close.
            continue;
        }
        healthy = match event {
            Event::Message(message) => io.call(handler.on_message(&ws, message)).await,
            Event::Ping(data) => io.call(handler.on_ping(&ws, data)).await,
            Event::Pong(data) => io.call(handler.on_pong(&ws, data)).await,
        };
    }
    ws.leave_all();
    ws.set_peer_close(io.peer_close.take().unwrap_or_default());
    io.finish().await;
    if AssertUnwindSafe(handler.on_close(&ws))
        .catch_unwind()
        .await
        .is_err()
    {
        tracing::warn!("WebSocket handler panicked in on_close");
    }
    tracing::debug!(remote = %ws.remote_addr(), code = ?ws.close_code(), "WebSocket closed");
}

/// What the socket delivers to the handler.
pub(crate) enum Event {
    Message(Message),
    Ping(Bytes),
    Pong(Bytes),
}

impl Event {
    fn size(&self) -> usize {
        match self {
            Event::Message(message) => message.len(),
            Event::Ping(data) | Event::Pong(data) => data.len(),
        }
    }
}

/// Where the connection is in its life. Each closing state carries the
/// deadline that bounds it, so no state can wait for ever.
enum Phase {
    Open,
    /// A close was asked for: the messages already queued are written first,
    /// then the close frame.
    Draining {
        code: u16,
        reason: Utf8Bytes,
        deadline: Pin<Box<Sleep>>,
    },
    /// Our close frame is out; waiting for the peer's.
    Closing {
        deadline: Pin<Box<Sleep>>,
    },
    /// The peer broke the protocol: our close frame is being flushed; the
    /// rest of what the peer sends is not parsed any more.
    Failing {
        deadline: Pin<Box<Sleep>>,
    },
    /// Our close frame is out after a protocol error: the write side is shut
    /// down and whatever the peer still sends is read and discarded until it
    /// closes (a lingering close, under the same deadline). Dropping the
    /// socket with unread input would reset the connection, and a reset can
    /// destroy the close frame before the peer reads it (a peer still
    /// writing an oversized message would then see 1006, not 1009).
    Lingering {
        shut_down: bool,
        deadline: Pin<Box<Sleep>>,
    },
    Closed,
}

/// Keep-alive pings (Tornado's `websocket_ping_interval`): a ping every
/// `interval`, and the connection is closed if no pong arrives within
/// `timeout`.
struct KeepAlive {
    interval: Duration,
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
    /// When the unanswered ping was sent, if one is outstanding.
    awaiting_since: Option<Instant>,
}

/// The server's shutdown signal, as one connection watches it.
///
/// The wait is registered once; after that an atomic load tells whether the
/// server is shutting down. Polling the registered wait again would take the
/// lock that every connection's wait shares, on every wake-up.
struct Shutdown {
    token: CancellationToken,
    wait: Pin<Box<WaitForCancellationFutureOwned>>,
    registered: bool,
}

impl Shutdown {
    fn poll_cancelled(&mut self, cx: &mut Context<'_>) -> bool {
        if self.registered {
            return self.token.is_cancelled();
        }
        // A task's waker stays valid for the task's life: this one
        // registration is enough to be woken by the cancellation.
        self.registered = true;
        self.wait.as_mut().poll(cx).is_ready()
    }
}

/// Most read-ahead events held while a handler method runs; past this (or
/// past `max_message_size` bytes) reading pauses and TCP pushes back.
const INBOX_EVENTS: usize = 32;

/// The socket side of a connection.
pub(crate) struct Io {
    ws: WebSocketStream<Stream>,
    shared: Arc<Shared>,
    inbox: VecDeque<Event>,
    inbox_bytes: usize,
    inbox_max_bytes: usize,
    phase: Phase,
    unflushed: bool,
    keepalive: Option<KeepAlive>,
    shutdown: Shutdown,
    close_timeout: Duration,
    peer_close: Option<PeerClose>,
}

struct IoParts {
    ws: WebSocketStream<Stream>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    settings: Arc<crate::settings::Settings>,
}

impl Io {
    fn new(parts: IoParts) -> Self {
        let settings = parts.settings;
        let keepalive = settings.ping_interval.map(|interval| KeepAlive {
            interval,
            timeout: settings.effective_ping_timeout().unwrap_or(interval),
            timer: Box::pin(tokio::time::sleep(interval)),
            awaiting_since: None,
        });
        Io {
            ws: parts.ws,
            shared: parts.shared,
            inbox: VecDeque::new(),
            inbox_bytes: 0,
            inbox_max_bytes: settings.max_message_size,
            phase: Phase::Open,
            unflushed: false,
            keepalive,
            shutdown: Shutdown {
                wait: Box::pin(parts.shutdown.clone().cancelled_owned()),
                token: parts.shutdown,
                registered: false,
            },
            close_timeout: settings.close_timeout,
            peer_close: None,
        }
    }

    /// Runs one handler method to completion while the socket keeps going.
    /// Returns `false` if the method panicked (the connection is then closing
    /// with 1011).
    async fn call<F: Future<Output = ()>>(&mut self, method: F) -> bool {
        let mut method = pin!(AssertUnwindSafe(method).catch_unwind());
        let outcome = poll_fn(|cx| {
            if let Poll::Ready(outcome) = method.as_mut().poll(cx) {
                return Poll::Ready(outcome);
            }
            self.poll_read_ahead(cx);
            Poll::Pending
        })
        .await;
        match outcome {
            Ok(()) => true,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::warn!(panic = %what, "WebSocket handler panicked: closing with 1011");
                self.begin_close(
                    close_code::INTERNAL_ERROR,
                    Utf8Bytes::from_static("internal error"),
                );
                false
            }
        }
    }

    /// While a handler method runs: move the socket along, reading ahead into
    /// the bounded inbox.
    fn poll_read_ahead(&mut self, cx: &mut Context<'_>) {
        loop {
            let room = self.inbox.len() < INBOX_EVENTS && self.inbox_bytes < self.inbox_max_bytes;
            match self.poll_progress(cx, room) {
                Poll::Ready(Some(event)) => {
                    self.inbox_bytes += event.size();
                    self.inbox.push_back(event);
                }
                Poll::Ready(None) | Poll::Pending => return,
            }
        }
    }

    /// The next event for the handler, or `None` once the connection is closed.
    async fn next_event(&mut self) -> Option<Event> {
        if let Some(event) = self.inbox.pop_front() {
            self.inbox_bytes -= event.size();
            return Some(event);
        }
        poll_fn(|cx| self.poll_progress(cx, true)).await
    }

    /// Closes the socket for good once the loop is over. The shutdown is
    /// bounded: over TLS it writes a close_notify, which a peer that stopped
    /// reading would otherwise hold up for ever (and `on_close` with it).
    async fn finish(&mut self) {
        self.shared.close_queue();
        self.shared.discard();
        let shutdown = self.ws.get_mut().shutdown();
        let _ = tokio::time::timeout(self.close_timeout, shutdown).await;
    }

    fn begin_close(&mut self, code: u16, reason: Utf8Bytes) {
        if !matches!(self.phase, Phase::Open) {
            return;
        }
        self.shared.close_queue();
        self.phase = Phase::Draining {
            code,
            reason,
            deadline: Box::pin(tokio::time::sleep(self.close_timeout)),
        };
    }

    /// Sends a close frame at once because the peer broke the protocol.
    fn fail(&mut self, code: u16, reason: &'static str, cx: &mut Context<'_>) {
        tracing::debug!(code, reason, "closing a WebSocket after a protocol error");
        self.shared.close_queue();
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let sent = Pin::new(&mut self.ws)
            .start_send(tungstenite::Message::Close(Some(frame)))
            .is_ok();
        self.phase = if sent {
            self.unflushed = true;
            Phase::Failing {
                deadline: Box::pin(tokio::time::sleep(self.close_timeout)),
            }
        } else {
            Phase::Closed
        };
        cx.waker().wake_by_ref();
    }

    fn closed(&mut self) -> Poll<Option<Event>> {
        if !matches!(self.phase, Phase::Closed) {
            self.shared.close_queue();
            self.phase = Phase::Closed;
        }
        Poll::Ready(None)
    }

    /// Does all the work the socket allows now and returns the next event
    /// read (if `read` is allowed), `Ready(None)` once the connection is over,
    /// or `Pending` with every source of progress registered for wake-up.
    fn poll_progress(&mut self, cx: &mut Context<'_>, read: bool) -> Poll<Option<Event>> {
        if matches!(self.phase, Phase::Closed) {
            return Poll::Ready(None);
        }
        self.shared.register(cx.waker());
        if matches!(self.phase, Phase::Open) {
            self.poll_close_triggers(cx);
        }

        // Queued writes go into tungstenite's buffer (no syscall yet, unless
        // the buffer passes `write_buffer_size`).
        if matches!(self.phase, Phase::Open | Phase::Draining { .. }) {
            if let Err(()) = self.poll_feed(cx) {
                return self.closed();
            }
        }

        let reading = match self.phase {
            Phase::Open => read,
            Phase::Draining { .. } | Phase::Closing { .. } => true,
            Phase::Failing { .. } | Phase::Lingering { .. } | Phase::Closed => false,
        };
        if reading {
            match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Ready(Some(Ok(message))) => {
                    if let Some(event) = self.on_frame(message) {
                        return Poll::Ready(Some(event));
                    }
                    // A close or an event outside the open phase: go round
                    // again to read on.
                    cx.waker().wake_by_ref();
                }
                Poll::Ready(Some(Err(error))) => {
                    if let Some((code, reason)) = close_for(&error) {
                        if matches!(self.phase, Phase::Open | Phase::Draining { .. }) {
                            self.fail(code, reason, cx);
                        } else {
                            return self.closed();
                        }
                    } else {
                        // The close handshake finished, or the peer vanished.
                        return self.closed();
                    }
                }
                Poll::Ready(None) => return self.closed(),
                Poll::Pending => {}
            }
        }

        // No more input is ready (or reading is paused): now write.
        if self.unflushed || !matches!(self.phase, Phase::Open | Phase::Lingering { .. }) {
            match Pin::new(&mut self.ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.unflushed = false;
                    if matches!(self.phase, Phase::Failing { .. }) {
                        let Phase::Failing { deadline } =
                            std::mem::replace(&mut self.phase, Phase::Closed)
                        else {
                            unreachable!()
                        };
                        self.phase = Phase::Lingering {
                            shut_down: false,
                            deadline,
                        };
                    }
                }
                Poll::Ready(Err(_)) => return self.closed(),
                Poll::Pending => {}
            }
        }

        if let Phase::Lingering { shut_down, .. } = &mut self.phase {
            if self.ws.get_mut().poll_linger(cx, shut_down).is_ready() {
                return self.closed();
            }
        }

        if let Phase::Draining { deadline, .. }
        | Phase::Closing { deadline }
        | Phase::Failing { deadline }
        | Phase::Lingering { deadline, .. } = &mut self.phase
        {
            if deadline.as_mut().poll(cx).is_ready() {
                tracing::debug!("close handshake timed out: dropping the connection");
                return self.closed();
            }
        }
        Poll::Pending
    }

    /// Close requests, server shutdown and the keep-alive timer.
    fn poll_close_triggers(&mut self, cx: &mut Context<'_>) {
        if let Some(request) = self.shared.take_close_request() {
            self.begin_close(request.code, request.reason);
            return;
        }
        if self.shutdown.poll_cancelled(cx) {
            self.begin_close(
                close_code::GOING_AWAY,
                Utf8Bytes::from_static("server shutting down"),
            );
            return;
        }
        let Some(keepalive) = &mut self.keepalive else {
            return;
        };
        while keepalive.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if keepalive.awaiting_since.is_some() {
                tracing::debug!("no pong within the ping timeout: closing");
                self.begin_close(
                    close_code::GOING_AWAY,
                    Utf8Bytes::from_static("ping timeout"),
                );
                return;
            }
            if Pin::new(&mut self.ws)
                .start_send(tungstenite::Message::Ping(Bytes::new()))
                .is_ok()
            {
                self.unflushed = true;
            }
            keepalive.awaiting_since = Some(now);
            keepalive.timer.as_mut().reset(now + keepalive.timeout);
        }
    }

    /// Moves queued messages into tungstenite's write buffer. In the draining
    /// phase, sends the close frame once the queue is empty.
    fn poll_feed(&mut self, cx: &mut Context<'_>) -> Result<(), ()> {
        loop {
            match Pin::new(&mut self.ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Err(()),
                Poll::Pending => return Ok(()),
            }
            match self.shared.pop() {
                Popped::Message(Outbound { message, .. }) => {
                    match Pin::new(&mut self.ws).start_send(message) {
                        Ok(()) => self.unflushed = true,
                        Err(WsError::Capacity(error)) => {
                            // A message over the size limit is refused at the
                            // door: drop it and say so, keep the connection.
                            tracing::warn!(%error, "dropped an outgoing message over the size limit");
                        }
                        Err(_) => return Err(()),
                    }
                }
                Popped::Finished => {
                    // The queue is closed and empty: only while draining.
                    if let Phase::Draining { code, reason, .. } = &self.phase {
                        let frame = CloseFrame {
                            code: CloseCode::from(*code),
                            reason: reason.clone().into_inner(),
                        };
                        if Pin::new(&mut self.ws)
                            .start_send(tungstenite::Message::Close(Some(frame)))
                            .is_err()
                        {
                            return Err(());
                        }
                        self.unflushed = true;
                        let deadline = Box::pin(tokio::time::sleep(self.close_timeout));
                        self.phase = Phase::Closing { deadline };
                    }
                    return Ok(());
                }
                Popped::Empty => return Ok(()),
            }
        }
    }

    /// Turns a message from tungstenite into an event for the handler, or
    /// records a close.
    fn on_frame(&mut self, message: tungstenite::Message) -> Option<Event> {
        let event = match message {
            tungstenite::Message::Text(text) => Event::Message(Message::Text(text.into())),
            tungstenite::Message::Binary(data) => Event::Message(Message::Binary(data)),
            tungstenite::Message::Ping(data) => {
                // tungstenite has queued the pong; make sure it is flushed.
                self.unflushed = true;
                Event::Ping(data)
            }
            tungstenite::Message::Pong(data) => {
                if let Some(keepalive) = &mut self.keepalive {
                    if let Some(sent) = keepalive.awaiting_since.take() {
                        keepalive.timer.as_mut().reset(sent + keepalive.interval);
                    }
                }
                Event::Pong(data)
            }
            tungstenite::Message::Close(frame) => {
                self.peer_close = Some(PeerClose {
                    code: frame.as_ref().map(|f| u16::from(f.code)),
                    reason: frame
                        .as_ref()
                        .map(|f| f.reason.as_str().to_owned())
                        .filter(|r| !r.is_empty()),
                });
                // tungstenite has queued the echo of the close frame.
                self.unflushed = true;
                if matches!(self.phase, Phase::Open | Phase::Draining { .. }) {
                    self.shared.close_queue();
                    self.phase = Phase::Closing {
                        deadline: Box::pin(tokio::time::sleep(self.close_timeout)),
                    };
                }
                return None;
            }
            tungstenite::Message::Frame(_) => return None,
        };
        matches!(self.phase, Phase::Open).then_some(event)
    }
}

/// The close code for a read error that is the peer's fault; `None` for the
/// end of the connection.
fn close_for(error: &WsError) -> Option<(u16, &'static str)> {
    match error {
        WsError::Protocol(_) | WsError::AttackAttempt => {
            Some((close_code::PROTOCOL_ERROR, "protocol error"))
        }
        WsError::Utf8(_) => Some((close_code::INVALID_PAYLOAD, "invalid UTF-8")),
        WsError::Capacity(_) => Some((close_code::TOO_BIG, "message too big")),
        _ => None,
    }
}

impl Stream {
    /// A lingering close: shuts the write side down (once), then reads and
    /// discards input. Ready when the peer has closed its side (or the
    /// socket failed).
    fn poll_linger(&mut self, cx: &mut Context<'_>, shut_down: &mut bool) -> Poll<()> {
        if !*shut_down {
            match Pin::new(&mut *self).poll_shutdown(cx) {
                Poll::Ready(_) => *shut_down = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        let mut scratch = [0u8; 8192];
        // Bounded, so that a peer that never stops sending cannot hold the
        // task here; it is woken again to go on.
        for _ in 0..64 {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *self).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {}
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
