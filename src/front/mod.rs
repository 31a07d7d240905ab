//! HTTP fronts: the ways a client's connection reaches squall before the
//! engine takes over the socket.
//!
//! - `server.rs`: the standalone server's accept loop (limits, backoff,
//!   graceful shutdown), the default;
//! - `connection_tasks.rs`: the accept loop's connection tasks, tracked and
//!   abortable at the shutdown deadline;
//! - `http1.rs`: HTTP/1.1 on an accepted connection (request heads, pages,
//!   handing WebSocket routes to the handshake);
//! - `service.rs` (feature `hyper`): a tower `Service` for axum and hyper,
//!   HTTP/1.1 upgrades and HTTP/2 extended CONNECT;
//! - `listener.rs`: binding the listening socket with the `listen_backlog`;
//! - `head_rules.rs`: the rules every request head must meet before it is
//!   routed (RFC 9112 `Host`);
//! - `access_log.rs`: the access line every front writes.

pub(crate) mod access_log;
pub(crate) mod connection_tasks;
pub(crate) mod head_rules;
pub(crate) mod http1;
pub(crate) mod listener;
pub(crate) mod server;
#[cfg(feature = "hyper")]
pub(crate) mod service;
