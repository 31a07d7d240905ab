//! [`WebSocketSender`]: the cloneable handle other tasks use to reach one
//! connection. It never touches the socket: writes go into the
//! connection's send queue (`send_queue.rs`), which the connection task
//! drains.

use std::future::Future;
use std::sync::Arc;

use crate::deflate::SharedKey;
use crate::error::WriteError;
use crate::message::Message;
use crate::send_queue::SendQueue;
use crate::wire::Wire;

/// A cloneable handle to one connection, usable from any task: Tornado's
/// habit of keeping handler objects in a set to write to them later.
///
/// [`send`](Self::send) never waits: when the connection's send queue is full
/// it returns [`WriteError::QueueFull`] and applies the application's
/// [`OverflowPolicy`](crate::OverflowPolicy). [`write_message`](Self::write_message)
/// waits for room instead. Both return [`WriteError::Closed`] once the
/// connection is closing.
///
/// ```no_run
/// # async fn demo(ws: &squall::WebSocket) {
/// let sender = ws.sender();
/// tokio::spawn(async move {
///     sender.send("tick").ok();
/// });
/// # }
/// ```
#[derive(Clone)]
pub struct WebSocketSender {
    queue: Arc<SendQueue>,
}

/// A connection's identity in groups: its send queue's address, stable
/// while the connection lives.
pub(crate) type ConnectionId = usize;

impl WebSocketSender {
    pub(crate) fn new(queue: Arc<SendQueue>) -> Self {
        WebSocketSender { queue }
    }

    /// The key to share compressed broadcasts under, if any.
    pub(crate) fn shared_deflate(&self) -> Option<SharedKey> {
        self.queue.shared_deflate()
    }

    pub(crate) fn queue(&self) -> &SendQueue {
        &self.queue
    }

    /// Queues a message without waiting.
    pub fn send(&self, message: impl Into<Message>) -> Result<(), WriteError> {
        self.queue.try_enqueue(message.into().into_tungstenite())
    }

    /// Queues a message already converted for the wire, shared with other
    /// receivers (broadcast).
    pub(crate) fn send_shared(&self, message: Wire) -> Result<(), WriteError> {
        self.queue.try_enqueue(message)
    }

    /// Queues a message already converted for the wire, waiting while the
    /// send queue is full.
    pub(crate) async fn write_shared(
        &self,
        message: tungstenite::Message,
    ) -> Result<(), WriteError> {
        self.queue.enqueue(message).await
    }

    /// Queues a message, waiting while the send queue is full.
    pub fn write_message(
        &self,
        message: impl Into<Message>,
    ) -> impl Future<Output = Result<(), WriteError>> + Send + '_ {
        self.queue.enqueue(message.into().into_tungstenite())
    }

    /// Asks the connection to close with `code` and `reason`, after the
    /// messages already queued. Never waits.
    pub fn close(&self, code: u16, reason: &str) {
        self.queue.request_close(code, reason.into());
    }

    /// Whether the connection is closing or closed.
    pub fn is_closed(&self) -> bool {
        self.queue.is_closing()
    }

    /// Whether two handles reach the same connection.
    pub fn same_connection(&self, other: &WebSocketSender) -> bool {
        Arc::ptr_eq(&self.queue, &other.queue)
    }

    /// The connection's identity in groups.
    pub(crate) fn id(&self) -> ConnectionId {
        Arc::as_ptr(&self.queue) as usize
    }
}

impl std::fmt::Debug for WebSocketSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketSender")
            .field("closed", &self.is_closed())
            .finish()
    }
}
