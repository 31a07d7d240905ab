//! The errors a write to a connection can return.

/// Why a message could not be queued for a connection.
///
/// Tornado raises `WebSocketClosedError` for a write to a closed socket; squall
/// returns [`WriteError::Closed`]. Nothing here ever panics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The connection is closed or closing: no more messages are accepted.
    #[error("the WebSocket is closed")]
    Closed,
    /// The connection's send queue is full (see
    /// [`Application::websocket_max_queued_messages`](crate::Application::websocket_max_queued_messages)
    /// and [`Application::websocket_overflow`](crate::Application::websocket_overflow)).
    /// Only non-waiting sends from other tasks return this.
    #[error("the WebSocket send queue is full")]
    QueueFull,
    /// The value could not be serialised to JSON.
    #[error("could not serialise the message to JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A ping payload longer than the 125 bytes a control frame may carry.
    #[error("a ping payload may be at most 125 bytes")]
    PingTooLong,
}

impl WriteError {
    /// Whether the connection was closed (Tornado's `WebSocketClosedError`).
    pub fn is_closed(&self) -> bool {
        matches!(self, WriteError::Closed)
    }

    /// Whether the send queue was full.
    pub fn is_queue_full(&self) -> bool {
        matches!(self, WriteError::QueueFull)
    }
}
