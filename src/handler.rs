//! The trait users implement, one type per WebSocket endpoint.

use std::future::Future;

use bytes::Bytes;

use crate::deflate::CompressionOptions;
use crate::message::Message;
use crate::request::TrustedOrigins;
use crate::websocket::WebSocket;

/// A WebSocket endpoint: Tornado's `WebSocketHandler`.
///
/// A fresh value is made for every connection by the factory given to
/// [`Application::websocket`](crate::Application::websocket), so per-connection
/// state lives in `self`. The methods of one connection run one at a time, in
/// order: the next message waits for a running `on_message`, while pings,
/// pongs, close frames and queued writes keep flowing underneath.
///
/// Only [`on_message`](Self::on_message) must be written. Methods are plain
/// `async fn`s in the `impl` (no macro needed), and their futures must be
/// `Send`. They are called without boxing, so a message costs no allocation
/// on its way to the handler.
///
/// ```
/// use squall::{Message, WebSocket, WebSocketHandler};
///
/// struct Echo;
///
/// impl WebSocketHandler for Echo {
///     async fn on_message(&mut self, ws: &WebSocket, msg: Message) {
///         if let Some(text) = msg.as_text() {
///             ws.write_message(format!("You said: {text}")).await.ok();
///         }
///     }
/// }
/// ```
///
/// A panic in any method closes that connection with 1011 and is logged;
/// `on_close` still runs, and other connections are not affected.
pub trait WebSocketHandler: Send + 'static {
    /// Called before the upgrade, with the request head (headers, cookies,
    /// query, path parameters, remote address), before `check_origin`
    /// (Tornado's `prepare`).
    ///
    /// Return `Err(response)` to refuse the upgrade with any HTTP response
    /// (a 401 with `WWW-Authenticate`, a 403, a redirect to a login page…);
    /// its status, headers and body are sent as given, with
    /// `Connection: close`, and the handler is dropped without `open` or
    /// `on_close`. It may await (a token or database lookup) without holding
    /// up other connections; it is bounded by
    /// [`Application::prepare_timeout`](crate::Application::prepare_timeout),
    /// past which the client gets 503. A panic here answers 500.
    ///
    /// What it learns (the authenticated user, say) can be kept in two ways:
    ///
    /// - in `self`, since the handler serves this one connection: the plain
    ///   Rust way, readable in every later method;
    /// - as a [`CurrentUser`](crate::CurrentUser) in the request's extensions, which
    ///   [`WebSocket::current_user`](crate::WebSocket::current_user) reads
    ///   back, typed (Tornado's `current_user`).
    ///
    /// ```
    /// // The prelude brings `RequestExt`, so `query_argument` just works.
    /// use squall::prelude::*;
    /// use squall::http::{header, Request, Response, StatusCode};
    ///
    /// #[derive(Clone)]
    /// struct User {
    ///     name: String,
    /// }
    ///
    /// #[derive(Default)]
    /// struct Chat {
    ///     user: Option<User>,
    /// }
    ///
    /// impl WebSocketHandler for Chat {
    ///     async fn prepare(&mut self, request: &mut Request<()>) -> Result<(), Response<Bytes>> {
    ///         // A real server would await a token or session lookup here.
    ///         let user = match request.query_argument("token").as_deref() {
    ///             Some("s3cret") => User { name: "ada".into() },
    ///             _ => {
    ///                 let refusal = Response::builder()
    ///                     .status(StatusCode::UNAUTHORIZED)
    ///                     .header(header::WWW_AUTHENTICATE, "Bearer")
    ///                     .body(Bytes::from_static(b"token required"))
    ///                     .unwrap();
    ///                 return Err(refusal);
    ///             }
    ///         };
    ///         // Either keep it in `self`…
    ///         self.user = Some(user.clone());
    ///         // …or hand it to the connection, for `ws.current_user()`.
    ///         request.extensions_mut().insert(CurrentUser(user));
    ///         Ok(())
    ///     }
    ///
    ///     async fn open(&mut self, ws: &WebSocket) {
    ///         let from_self = self.user.as_ref().map(|u| u.name.as_str());
    ///         let from_ws = ws.current_user::<User>().map(|u| u.name.as_str());
    ///         assert_eq!(from_self, from_ws);
    ///         ws.write_message(format!("hello, {}", from_ws.unwrap_or("?"))).await.ok();
    ///     }
    ///
    ///     async fn on_message(&mut self, ws: &WebSocket, msg: Message) {
    ///         ws.write_message(msg).await.ok();
    ///     }
    /// }
    /// ```
    ///
    /// The default accepts every request.
    fn prepare(
        &mut self,
        request: &mut http::Request<()>,
    ) -> impl Future<Output = Result<(), http::Response<Bytes>>> + Send {
        let _ = request;
        async { Ok(()) }
    }

    /// Whether a cross-origin upgrade from `origin` may proceed.
    ///
    /// squall asks only about requests that look cross-origin (Tornado 6.6):
    /// a request with `Sec-Fetch-Site: same-origin`, or without that header an
    /// `Origin` whose host and port equal `Host`, or with no `Origin` at all
    /// (not a browser) is accepted without asking. A `false` answers 403
    /// `Cross origin websockets not allowed`.
    ///
    /// The default accepts the origins listed in
    /// [`Application::trusted_origins`](crate::Application::trusted_origins)
    /// (none by default) and refuses the rest.
    fn check_origin(&self, origin: &str, request: &http::Request<()>) -> bool {
        request
            .extensions()
            .get::<TrustedOrigins>()
            .is_some_and(|trusted| trusted.contains(origin))
    }

    /// Picks one of the subprotocols the client offered
    /// (`Sec-WebSocket-Protocol`), in the client's order. `None`, the default,
    /// answers without the header. Returning a name the client did not offer
    /// is a bug; squall refuses it with a 500 rather than break the client.
    fn select_subprotocol(&self, subprotocols: &[&str]) -> Option<String> {
        let _ = subprotocols;
        None
    }

    /// Whether this endpoint accepts permessage-deflate (RFC 7692), and how:
    /// Tornado's `get_compression_options`. `None`, the default, declines
    /// every offer, as Tornado does. With options, the first offer the
    /// client makes that squall can keep to is accepted; an offer with an
    /// unknown parameter is skipped and a malformed header declines
    /// compression (the upgrade itself goes on either way).
    ///
    /// ```
    /// use squall::{CompressionOptions, Message, WebSocket, WebSocketHandler};
    ///
    /// struct Chat;
    ///
    /// impl WebSocketHandler for Chat {
    ///     fn compression_options(&self) -> Option<CompressionOptions> {
    ///         Some(CompressionOptions::new().server_no_context_takeover(true))
    ///     }
    ///
    ///     async fn on_message(&mut self, ws: &WebSocket, msg: Message) {
    ///         ws.write_message(msg).await.ok();
    ///     }
    /// }
    /// ```
    ///
    /// Messages the handler writes are then compressed (control frames
    /// never are), and compressed messages from the client are inflated
    /// before `on_message`, never past
    /// [`websocket_max_message_size`](crate::Application::websocket_max_message_size)
    /// (close 1009). See [`CompressionOptions`] for the memory it costs.
    fn compression_options(&self) -> Option<CompressionOptions> {
        None
    }

    /// Called once the connection is open, before any message.
    fn open(&mut self, ws: &WebSocket) -> impl Future<Output = ()> + Send {
        let _ = ws;
        async {}
    }

    /// Called for every complete message, in order.
    fn on_message(&mut self, ws: &WebSocket, message: Message) -> impl Future<Output = ()> + Send;

    /// Called for every ping from the client. The pong is sent by squall
    /// already; the default does nothing else.
    fn on_ping(&mut self, ws: &WebSocket, data: Bytes) -> impl Future<Output = ()> + Send {
        let _ = (ws, data);
        async {}
    }

    /// Called for every pong from the client (answers to squall's keep-alive
    /// pings included). The default does nothing.
    fn on_pong(&mut self, ws: &WebSocket, data: Bytes) -> impl Future<Output = ()> + Send {
        let _ = (ws, data);
        async {}
    }

    /// Called exactly once when an opened connection ends, whatever the cause
    /// (close handshake, peer vanished, ping timeout, shutdown, a panic).
    /// [`WebSocket::close_code`] tells the peer's close code, `None` when the
    /// peer sent none or vanished. Writes here return
    /// [`WriteError::Closed`](crate::WriteError::Closed).
    fn on_close(&mut self, ws: &WebSocket) -> impl Future<Output = ()> + Send {
        let _ = ws;
        async {}
    }
}
