//! Settings shared by every connection of an [`Application`](crate::Application).
//!
//! They are set through the application's builder methods, each of which
//! documents its default; this module holds the values and the policy types.

use std::time::Duration;

/// What happens when a non-waiting send (from another task, or a broadcast)
/// finds a connection's send queue full.
///
/// The sender always gets [`WriteError::QueueFull`](crate::WriteError::QueueFull):
/// squall never drops a message silently. The policy decides what happens to
/// the slow connection as well. How full is full is set by
/// [`websocket_max_queued_messages`](crate::Application::websocket_max_queued_messages)
/// and [`websocket_max_queued_bytes`](crate::Application::websocket_max_queued_bytes),
/// whose docs say how to size them; a close for overflow is logged with the
/// bound that was hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// Refuse the message and keep the connection open. The sender must handle
    /// the error (retry, drop, or close the connection itself).
    Reject,
    /// Refuse the message and close the connection with this close code, after
    /// the messages already queued. `1013` (try again later) or `1008`
    /// (policy violation) are the usual codes.
    Close(u16),
}

impl Default for OverflowPolicy {
    /// `Close(1013)`: a receiver that missed a message is out of step with
    /// the others, and closing tells its client so plainly (it can reconnect
    /// and resynchronise) instead of leaving a silent gap in the stream.
    fn default() -> Self {
        OverflowPolicy::Close(crate::close_code::TRY_AGAIN_LATER)
    }
}

/// What a connection does when its peer sends faster than
/// [`websocket_max_messages_per_second`](crate::Application::websocket_max_messages_per_second)
/// or [`websocket_max_bytes_per_second`](crate::Application::websocket_max_bytes_per_second)
/// allow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RateLimitPolicy {
    /// Stop reading the socket until the bucket has refilled: the peer's
    /// writes back up into TCP (backpressure), nothing is buffered beyond
    /// the socket's own buffers, and the connection stays open. The default.
    #[default]
    Pause,
    /// Close the connection with 1008 (policy violation) and the reason
    /// `message rate limit exceeded` or `byte rate limit exceeded`; the
    /// message over the limit is not delivered.
    Close,
}

/// A token bucket's size: `rate` tokens a second, at most `burst` saved up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

/// The input rate limits of every connection (off by default).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct InputLimits {
    pub messages: Option<Rate>,
    pub bytes: Option<Rate>,
    pub policy: RateLimitPolicy,
}

impl InputLimits {
    pub fn is_off(&self) -> bool {
        self.messages.is_none() && self.bytes.is_none()
    }
}

/// The resolved settings (see the `Application` builder for each default).
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub ping_interval: Option<Duration>,
    pub ping_timeout: Option<Duration>,
    pub max_message_size: usize,
    pub read_buffer_size: usize,
    pub write_buffer_size: usize,
    pub max_queued_messages: usize,
    pub max_queued_bytes: usize,
    pub overflow: OverflowPolicy,
    pub close_timeout: Duration,
    pub max_head_size: usize,
    pub head_timeout: Duration,
    pub write_timeout: Duration,
    pub listen_backlog: u32,
    pub max_connections: usize,
    pub shutdown_timeout: Duration,
    pub trusted_origins: std::sync::Arc<[String]>,
    pub prepare_timeout: Duration,
    pub broker_ready_timeout: Duration,
    pub input_limits: InputLimits,
    pub max_connections_per_ip: Option<usize>,
    pub trusted_proxies: std::sync::Arc<[std::net::IpAddr]>,
    /// One `on_message` in every this many is timed (feature `metrics`).
    pub handler_time_sampling: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ping_interval: None,
            ping_timeout: None,
            max_message_size: 10 * 1024 * 1024,
            read_buffer_size: 1024,
            write_buffer_size: 64 * 1024,
            max_queued_messages: 1024,
            max_queued_bytes: 1024 * 1024,
            overflow: OverflowPolicy::default(),
            close_timeout: Duration::from_secs(5),
            max_head_size: 16 * 1024,
            head_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            listen_backlog: 1024,
            max_connections: 25_000,
            shutdown_timeout: Duration::from_secs(10),
            trusted_origins: std::sync::Arc::new([]),
            prepare_timeout: Duration::from_secs(10),
            broker_ready_timeout: Duration::from_secs(5),
            input_limits: InputLimits::default(),
            max_connections_per_ip: None,
            trusted_proxies: std::sync::Arc::new([]),
            // one in 8: the recorder's per-sample cost about 1 % of an
            // echo (BENCHMARKS.md, "Metrics overhead")
            handler_time_sampling: 8,
        }
    }
}

impl Settings {
    /// The ping timeout in force: the configured one, never longer than the
    /// interval, and equal to it when not set (as Tornado 6.5+).
    pub fn effective_ping_timeout(&self) -> Option<Duration> {
        let interval = self.ping_interval?;
        Some(self.ping_timeout.map_or(interval, |t| t.min(interval)))
    }

    pub fn websocket_config(&self) -> tungstenite::protocol::WebSocketConfig {
        // The write buffer only holds what one flush combines plus one frame:
        // squall bounds the queue in front of it, so tungstenite's own limit is
        // a backstop, not the policy.
        let max_write = self
            .write_buffer_size
            .saturating_add(self.max_message_size)
            .saturating_add(64);
        tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_size)
            .write_buffer_size(self.write_buffer_size)
            .max_write_buffer_size(max_write)
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size))
    }
}
