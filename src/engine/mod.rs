//! The connection engine: the task that owns one upgraded socket.
//!
//! Everything that touches the socket after the upgrade happens here, in one
//! task: reading frames, answering pings, calling the handler, draining the
//! send queue into the socket, keep-alive pings, and the close handshake.
//! Nothing else holds the socket, so there is no lock between reading and
//! writing. The engine does not know which front (the standalone HTTP/1.1
//! server, or hyper through the tower `Service`) handed it the socket: it
//! needs only the stream, the request, and the application's [`Env`]
//! (its settings, the shutdown signal and the groups hub).
//!
//! Where a byte goes: `Connection::poll_progress` (`connection.rs`) reads
//! through the frame reader (`reader.rs`), which turns data frames into
//! messages itself and hands control frames up to tungstenite
//! (`protocol.rs`, its protocol state beside the stream); either way
//! the result becomes an [`Event`](inbox::Event); `driver.rs`
//! hands the event to the handler; the handler's writes land in the send
//! queue (`send_queue.rs`); `Connection::poll_feed` moves them into
//! tungstenite's write buffer, which is flushed only when no more input is
//! ready, so a burst of pipelined requests is answered with one write call.
//!
//! The other files: `env.rs` (what the engine needs from its application),
//! `close.rs` (the close state machine), `keepalive.rs`,
//! `shutdown.rs` (the server's shutdown as one connection watches it),
//! `linger.rs` (the lingering close after a protocol error), `inbox.rs`
//! (events read ahead while a handler method runs), `outgoing.rs` (the send
//! queue and close frames into tungstenite's write buffer, shared with the
//! client), `own_frames.rs` (pongs and other frames the engine writes by
//! itself, counted against the send queue's bound so that a ping flood meets
//! backpressure).

pub(crate) mod close;
mod connection;
mod driver;
mod env;
mod inbox;
mod keepalive;
pub(crate) mod linger;
pub(crate) mod outgoing;
mod own_frames;
pub(crate) mod protocol;
mod rate_limit;
pub(crate) mod reader;
mod shutdown;

use std::future::Future;
use std::pin::Pin;

pub(crate) use connection::{establish, Agreements};
pub(crate) use driver::run;
pub(crate) use env::Env;
pub(crate) use shutdown::ShutdownSignal;

/// A boxed future: a connection (small, long-lived) or a handshake (large,
/// short-lived) is boxed on its own, so a task does not hold the size of the
/// largest future it ever awaited.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
