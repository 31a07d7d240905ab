//! What a handler module needs, in one import: `use squall::prelude::*;`.
//!
//! It brings the types every endpoint names ([`Application`],
//! [`WebSocketHandler`], [`WebSocket`], [`Message`], [`Bytes`]), the
//! [`http`] crate squall uses, and the [`RequestExt`] accessors, so that
//! `request.query_argument("token")`, `request.cookie("session")` or
//! `request.path_param("room")` work in
//! [`prepare`](WebSocketHandler::prepare) and in page handlers without
//! naming the trait.
//!
//! ```
//! use squall::prelude::*;
//!
//! struct Guarded;
//!
//! impl WebSocketHandler for Guarded {
//!     async fn prepare(&mut self, request: &mut http::Request<()>) -> Result<(), http::Response<Bytes>> {
//!         match request.query_argument("token").as_deref() {
//!             Some("s3cret") => Ok(()),
//!             _ => {
//!                 let mut refusal = http::Response::new(Bytes::from_static(b"token required"));
//!                 *refusal.status_mut() = http::StatusCode::UNAUTHORIZED;
//!                 Err(refusal)
//!             }
//!         }
//!     }
//!
//!     async fn on_message(&mut self, ws: &WebSocket, msg: Message) {
//!         ws.write_message(msg).await.ok();
//!     }
//! }
//!
//! let app = Application::new().websocket("/socket/", || Guarded);
//! # drop(app);
//! ```

pub use crate::http;
pub use crate::{
    Application, Bytes, CompressionOptions, CurrentUser, Message, RequestExt, WebSocket,
    WebSocketHandler, WebSocketSender, WriteError,
};
