//! squall: a Tornado-style WebSocket handler framework on tokio.
//!
//! Implement [`WebSocketHandler`] for each endpoint, register it with an
//! [`Application`] by path, and listen. A fresh handler serves each
//! connection; its methods run one at a time, in order, while squall answers
//! pings, drains the send queue and watches the close handshake underneath.
//!
//! ```
//! use squall::prelude::*;
//!
//! struct Echo;
//!
//! impl WebSocketHandler for Echo {
//!     async fn open(&mut self, _ws: &WebSocket) {
//!         tracing::info!("WebSocket opened");
//!     }
//!
//!     async fn on_message(&mut self, ws: &WebSocket, msg: Message) {
//!         if let Some(text) = msg.as_text() {
//!             ws.write_message(format!("You said: {text}")).await.ok();
//!         }
//!     }
//!
//!     async fn on_close(&mut self, ws: &WebSocket) {
//!         tracing::info!("WebSocket closed: {:?}", ws.close_code());
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let app = Application::new()
//!         .websocket("/socket/", || Echo)
//!         .page("/", "<!doctype html><title>echo</title>")
//!         .websocket_ping_interval(std::time::Duration::from_secs(1));
//!     // `listen("127.0.0.1:8888")` serves until Ctrl-C or SIGTERM (as does
//!     // `bind(..)` then `Server::run_until_signal`); here we bind a free
//!     // port, talk to it with squall's client, and shut it down.
//!     let handle = app.handle();
//!     let server = app.bind("127.0.0.1:0").await?;
//!     let url = format!("ws://{}/socket/", server.local_addr()?);
//!     let running = tokio::spawn(server.run());
//!
//!     let mut client = squall::connect(&url).await.expect("connect");
//!     client.send("hello world").await.expect("send");
//!     let reply = client.recv().await.expect("a reply");
//!     assert_eq!(reply.as_text(), Some("You said: hello world"));
//!     client.close(1000, "bye").await;
//!
//!     handle.shutdown();
//!     running.await.expect("server task")
//! }
//! ```
//!
//! Where a byte goes, by file: `front/server.rs` accepts, `front/http1.rs`
//! reads the request head and routes it (`router.rs`), `handshake.rs` runs
//! `prepare` and the checks and the front answers 101 or an error status;
//! then `engine/` owns the socket: `engine/mod.rs` reads frames and writes
//! the send queue (`send_queue.rs`) out, `engine/driver.rs` calls the
//! handler (`handler.rs`) with its context (`websocket.rs`).

#![deny(missing_docs)]

mod application;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod bench_support;
mod broker;
mod client;
mod client_limits;
mod deflate;
mod engine;
mod error;
mod forwarded;
mod front;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod group;
mod handler;
mod handshake;
mod history;
mod hub;
mod interest;
mod message;
pub mod prelude;
mod presence;
mod recovery;
#[cfg(feature = "redis")]
mod redis_backend;
#[cfg(feature = "redis")]
mod redis_broker;
#[cfg(feature = "redis")]
mod redis_history;
#[cfg(feature = "redis")]
mod redis_presence;
mod request;
mod response;
mod router;
mod runtime;
mod send_queue;
mod sender;
mod settings;
mod slots;
mod stream;
mod telemetry;
pub mod testing;
#[cfg(feature = "tls")]
mod tls;
mod websocket;
mod wire;

pub use application::Application;
pub use broker::{Broker, Delivery};
pub use client::{connect, Client, ClientError, ClientSender, ConnectOptions, MAX_REFUSAL_BODY};
pub use deflate::CompressionOptions;
pub use error::WriteError;
pub use front::server::Server;
#[cfg(feature = "hyper")]
pub use front::service::AppService;
pub use handler::WebSocketHandler;
pub use handshake::HandshakeError;
pub use history::{History, HistoryRead, HistoryUnavailable, Offset, Recovery};
pub use message::{close_code, Message, Utf8Bytes};
pub use presence::{Member, Presence, PresenceDiff, PresenceError, PresenceUpdate, PresenceWatch};
#[cfg(feature = "redis")]
pub use redis_broker::{RedisBroker, RedisBrokerError};
pub use request::{CurrentUser, PathParams, RemoteAddr, RequestExt, TrustedOrigins};
pub use runtime::{shutdown_signal, Handle};
pub use sender::WebSocketSender;
pub use settings::{OverflowPolicy, RateLimitPolicy};
pub use telemetry::HANDLER_SECONDS_BUCKETS;
#[cfg(feature = "tls")]
pub use tls::{tls_config_from_pem, TlsConfig};
pub use websocket::WebSocket;

pub use bytes::Bytes;
pub use http;

/// README.md's Rust snippets, compiled (and, unless `no_run`, run) by
/// `cargo test` so that they cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
