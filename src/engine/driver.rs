//! The handler driver: runs a connection from `open` to `on_close`, one
//! handler method at a time, while the socket keeps moving underneath.
//!
//! While a method runs, [`Connection::call`] keeps polling the socket:
//! queued writes keep draining (so a handler waiting for queue room is never
//! waiting on itself), pings are answered, and incoming messages are read
//! ahead into the bounded inbox, delivered in order once the method returns.

use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::CatchUnwind;
use futures_util::FutureExt;
use tracing::Instrument;

use super::connection::Connection;
use super::inbox::Event;
use crate::handler::WebSocketHandler;
use crate::message::{close_code, Utf8Bytes};
use crate::send_queue::SendQueue;
use crate::websocket::WebSocket;

/// The source of connection ids (for spans): 1, 2, 3… per process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Runs a connection from `open` to `on_close`, inside a `websocket` span
/// carrying the connection's `id`, `route` and `client` address, so the
/// handler's own events carry them too.
///
/// `on_close` runs exactly once, whatever ends the connection, and after the
/// socket is closed.
///
/// The span is made here, before the future: the connection itself keeps
/// neither its id nor its route.
pub(crate) fn run<H: WebSocketHandler>(
    handler: H,
    ws: WebSocket,
    io: Connection,
    route: &str,
) -> impl Future<Output = ()> + Send {
    let span = tracing::info_span!(
        "websocket",
        id = NEXT_ID.fetch_add(1, Ordering::Relaxed),
        route,
        client = %ws.remote_addr(),
    );
    // A span no subscriber wants is swapped for `Span::none()`, which the
    // connection then enters and leaves for free on every poll: a disabled
    // span still carries its metadata, and with `tracing`'s `log` feature
    // on (another crate may turn it on) each enter and exit asks the `log`
    // crate whether to print it.
    let span = if span.is_disabled() {
        tracing::Span::none()
    } else {
        span
    };
    // The handler's context is boxed on its own, as tungstenite's state is
    // (`protocol.rs`): the connection's future then stays under the size
    // (1 KiB) up to which the allocator serves a block from its per-thread
    // cache, so each connection's largest allocation is a quick one.
    drive(handler, Box::new(ws), io).instrument(span)
}

/// The connection's life ([`life`]), each poll of it bracketed for the send
/// queue ([`Polling`]).
fn drive<H: WebSocketHandler>(
    handler: H,
    ws: Box<WebSocket>,
    io: Connection,
) -> impl Future<Output = ()> + Send {
    Polling {
        queue: io.send_queue().clone(),
        life: life(handler, ws, io),
    }
}

pin_project_lite::pin_project! {
    /// A connection's future, each poll of it bracketed by `SendQueue::enter`
    /// and `leave`: what the handler writes while the task runs is picked up
    /// in the same poll, without the queue waking the task (which, on a
    /// multi-thread runtime, would poll it a second time for nothing).
    struct Polling<F> {
        queue: Arc<SendQueue>,
        #[pin]
        life: F,
    }
}

impl<F: Future> Future for Polling<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        this.queue.enter();
        let poll = this.life.poll(cx);
        if this.queue.leave() {
            // Something came in from another task while this one ran, and
            // is still queued.
            cx.waker().wake_by_ref();
        }
        poll
    }
}

/// The connection's life as one future. This future is most of what an idle
/// connection costs, so it is kept small: an `async fn` would keep its
/// arguments and a moved copy of each (the connection twice over), so this
/// is a plain function whose `async move` block works on the captured
/// values themselves; and each handler method's future is pinned here, in
/// place, and lent to [`Connection::call`], not moved into its future.
#[allow(clippy::manual_async_fn)] // on purpose, as said above
fn life<H: WebSocketHandler>(
    mut handler: H,
    ws: Box<WebSocket>,
    mut io: Connection,
) -> impl Future<Output = ()> + Send {
    async move {
        tracing::debug!(path = %ws.request().uri().path(), "WebSocket opened");
        let mut healthy = io.call(pin!(guarded(handler.open(&ws)))).await;
        loop {
            // (`let … else`, not `while let`: the scrutinee would live, a
            // second copy of the event, across every handler call.)
            let Some(event) = io.next_event().await else {
                break;
            };
            if !healthy {
                // A method panicked: the close is under way, nothing more
                // reaches the handler until on_close.
                continue;
            }
            healthy = match event {
                Event::Message(message) => {
                    let timer = io.metrics.start_timer();
                    let healthy = io
                        .call(pin!(guarded(handler.on_message(&ws, message))))
                        .await;
                    io.metrics.handler_done(timer);
                    healthy
                }
                Event::Ping(data) => io.call(pin!(guarded(handler.on_ping(&ws, data)))).await,
                Event::Pong(data) => io.call(pin!(guarded(handler.on_pong(&ws, data)))).await,
            };
        }
        ws.leave_all();
        ws.set_peer_close(io.peer_close.take().unwrap_or_default());
        io.finish().await;
        let ended = io.into_ended();
        if guarded(handler.on_close(&ws)).await.is_err() {
            ended.metrics.panicked();
            tracing::warn!("WebSocket handler panicked in on_close");
        }
        ended.metrics.closed(ended.code, ended.side);
        tracing::debug!(code = ended.code, side = ?ended.side, "WebSocket closed");
    }
}

/// A handler method's future, with a panic in it caught.
type Guarded<F> = CatchUnwind<AssertUnwindSafe<F>>;

fn guarded<F: Future<Output = ()>>(method: F) -> Guarded<F> {
    AssertUnwindSafe(method).catch_unwind()
}

impl Connection {
    /// Runs one handler method to completion while the socket keeps going.
    /// Returns `false` if the method panicked (the connection is then closing
    /// with 1011).
    async fn call<F: Future<Output = ()>>(&mut self, mut method: Pin<&mut Guarded<F>>) -> bool {
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
                self.metrics.panicked();
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
            let room = self.inbox.has_room();
            match self.poll_progress(cx, room) {
                Poll::Ready(Some(event)) => self.inbox.push(event),
                Poll::Ready(None) | Poll::Pending => return,
            }
        }
    }

    /// The next event for the handler, or `None` once the connection is closed.
    async fn next_event(&mut self) -> Option<Event> {
        if let Some(event) = self.inbox.pop() {
            return Some(event);
        }
        poll_fn(|cx| self.poll_progress(cx, true)).await
    }
}
