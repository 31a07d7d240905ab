//! squall as a tower `Service` (feature `hyper`): the front for users who
//! already run axum or hyper.
//!
//! hyper owns the HTTP connection; [`AppService`] answers the requests it is
//! given. Pages are answered as the standalone server answers them. A
//! WebSocket route runs the same handshake (`prepare`, `check_origin`,
//! `select_subprotocol`, every check of the wire table), answers `101` (or
//! `200` to an HTTP/2 extended CONNECT, RFC 8441), and once hyper hands over
//! the upgraded stream (`hyper::upgrade::on`), runs the same engine as the
//! standalone server: same settings, same groups and broker, same graceful
//! shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::Full;
use tokio::time::Instant;

use super::access_log::log_access;
use super::head_rules::check_head;
use super::server::Server;
use crate::engine::BoxFuture;
use crate::handshake::{Handshake, Negotiated, Via};
use crate::request::RemoteAddr;
use crate::response::text_response;
use crate::router::{answer_page, Route};
use crate::runtime::{Handle, Runtime};
use crate::stream::Stream;

/// An [`Application`](crate::Application) as a `Clone` tower
/// [`Service`](tower_service::Service) (feature `hyper`), made by
/// [`Application::into_service`](crate::Application::into_service).
///
/// Mount it in axum with `.route_service("/socket/", service)` or
/// `.nest_service("/squall", service)` (nesting strips the prefix: squall's
/// routes are matched against the path the service is given), or serve it
/// with hyper through `hyper_util::service::TowerToHyperService`. For
/// WebSockets over HTTP/2, hyper's HTTP/2 server must enable the extended
/// CONNECT protocol (`axum::serve` does; with hyper-util,
/// `builder.http2().enable_connect_protocol()`), and the upgrade needs
/// `serve_connection_with_upgrades`.
///
/// The client's address comes from a [`RemoteAddr`] in the request's
/// extensions, or (feature `axum`) axum's `ConnectInfo<SocketAddr>`.
/// [`Handle::shutdown`] closes the sockets opened through the service with
/// 1001, as it does for the standalone server's.
///
/// ```no_run
/// # #[cfg(feature = "axum")]
/// # async fn run() -> std::io::Result<()> {
/// use squall::{Application, Message, WebSocket, WebSocketHandler};
///
/// struct Echo;
///
/// impl WebSocketHandler for Echo {
///     async fn on_message(&mut self, ws: &WebSocket, msg: Message) {
///         ws.write_message(msg).await.ok();
///     }
/// }
///
/// let squall = Application::new().websocket("/socket/", || Echo);
/// let handle = squall.handle();
/// let app = axum::Router::new()
///     .route("/hello", axum::routing::get(|| async { "hello" }))
///     .route_service("/socket/", squall.into_service());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// axum::serve(listener, app)
///     .with_graceful_shutdown(async move {
///         squall::shutdown_signal().await;
///         handle.shutdown();
///     })
///     .await?;
/// // Wait for the WebSockets to finish their close handshakes.
/// # let handle = squall::Application::new().handle();
/// handle.stopped().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AppService {
    app: Runtime,
}

impl AppService {
    pub(crate) fn new(app: Runtime) -> Self {
        if tokio::runtime::Handle::try_current().is_ok() {
            app.start();
        }
        AppService { app }
    }

    /// A handle to stop the application, or broadcast, from any task.
    pub fn handle(&self) -> Handle {
        self.app.handle()
    }

    /// Binds `addr` for the standalone server of the same application, so
    /// that one application serves both fronts: groups, broadcasts, the
    /// broker and shutdown are shared.
    pub async fn bind(&self, addr: impl tokio::net::ToSocketAddrs) -> std::io::Result<Server> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        Ok(Server::new(listener, self.app.clone()))
    }
}

impl std::fmt::Debug for AppService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppService").finish_non_exhaustive()
    }
}

impl<B> tower_service::Service<Request<B>> for AppService
where
    B: Send + 'static,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let app = self.app.clone();
        // Taken before the body is dropped: the upgrade lives in the
        // request's extensions.
        let on_upgrade = hyper::upgrade::on(&mut request);
        let (parts, _body) = request.into_parts();
        let request = Request::from_parts(parts, ());
        Box::pin(async move { Ok(respond(app, request, on_upgrade).await) })
    }
}

/// Answers one request given by hyper.
async fn respond(
    app: Runtime,
    mut request: Request<()>,
    on_upgrade: hyper::upgrade::OnUpgrade,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    app.start();
    if let Some(remote) = client_address(&request) {
        // Behind a trusted proxy, the client is the address it forwarded.
        let settings = app.settings();
        let client =
            crate::forwarded::client_addr(remote, request.headers(), &settings.trusted_proxies);
        request.extensions_mut().insert(RemoteAddr(client));
    }
    if let Err(rule) = check_head(&request) {
        let response = rule.response();
        log_access(response.status(), &request, started);
        return into_full(response, &request);
    }
    let Some((route, params)) = app.router().at(request.uri().path()) else {
        let response = text_response(StatusCode::NOT_FOUND, "Not Found");
        log_access(response.status(), &request, started);
        return into_full(response, &request);
    };
    params.store_in(&mut request);
    let endpoint = match route {
        Route::Page(page) => {
            let response = answer_page(page, &request).await;
            log_access(response.status(), &request, started);
            return into_full(response, &request);
        }
        Route::WebSocket(endpoint) => endpoint.clone(),
    };
    if app.shutdown_token().is_cancelled() {
        let response = text_response(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
        log_access(response.status(), &request, started);
        return into_full(response, &request);
    }
    let Ok(permit) = app.connection_limit().clone().try_acquire_owned() else {
        tracing::warn!("connection limit reached: 503");
        crate::telemetry::connection_refused("max_connections");
        let response = text_response(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
        log_access(response.status(), &request, started);
        return into_full(response, &request);
    };
    // The per-address slot travels with the connection (freed however it
    // ends, or with this future if the handshake fails).
    let slot = match (
        app.client_limits(),
        request.extensions().get::<RemoteAddr>(),
    ) {
        (Some(limits), Some(RemoteAddr(client))) => match limits.try_acquire(client.ip()) {
            Some(slot) => Some(slot),
            None => {
                tracing::warn!(client = %client.ip(), "connections per address reached: 429");
                crate::telemetry::connection_refused("max_connections_per_ip");
                endpoint.telemetry().metrics.handshake(429);
                let response = crate::client_limits::refusal();
                log_access(response.status(), &request, started);
                return into_full(response, &request);
            }
        },
        _ => None,
    };
    let via = via(&request);
    let Handshake { request, outcome } =
        endpoint.handshake(Box::new(request), app.env(), via).await;
    let accepted = match outcome {
        Ok(accepted) => accepted,
        Err(response) => {
            log_access(response.status(), &request, started);
            return into_full(response, &request);
        }
    };
    let response = accepted_response(&accepted.negotiated, via);
    log_access(response.status(), &request, started);
    let env = app.env().clone();
    tokio::spawn(app.track(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let stream = Stream::upgraded(upgraded);
                accepted
                    .into_connection(stream, bytes::BytesMut::new(), request, &env)
                    .await;
            }
            Err(error) => tracing::debug!(%error, "the upgrade did not complete"),
        }
        drop(slot);
        drop(permit);
    }));
    response
}

/// How the client asked: an HTTP/2 CONNECT is RFC 8441's extended CONNECT
/// when its `:protocol` is `websocket`; anything else is read as an
/// HTTP/1.1 upgrade (and refused by its checks if it is not one).
fn via(request: &Request<()>) -> Via {
    if request.version() == Version::HTTP_2 && request.method() == Method::CONNECT {
        let websocket = request
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|protocol| protocol.as_str().eq_ignore_ascii_case("websocket"));
        Via::Http2 { websocket }
    } else if request.version() == Version::HTTP_2 {
        Via::Http2 { websocket: false }
    } else {
        Via::Http1
    }
}

/// The answer to an accepted upgrade: 101 with the accept key over
/// HTTP/1.1, 200 over HTTP/2; the chosen subprotocol and the agreed
/// permessage-deflate parameters either way.
fn accepted_response(negotiated: &Negotiated, via: Via) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    let headers = response.headers_mut();
    if via == Via::Http1 {
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(key) = negotiated
            .accept_key
            .as_deref()
            .and_then(|key| HeaderValue::from_str(key).ok())
        {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, key);
        }
    }
    if let Some(protocol) = negotiated
        .subprotocol
        .as_deref()
        .and_then(|p| HeaderValue::from_str(p).ok())
    {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    if let Some(extension) = negotiated
        .deflate
        .as_ref()
        .and_then(|agreed| HeaderValue::from_str(&agreed.1).ok())
    {
        headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, extension);
    }
    if via == Via::Http1 {
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    }
    response
}

/// The client's address: squall's own [`RemoteAddr`] if the server put one
/// in the extensions, else axum's `ConnectInfo` (feature `axum`).
fn client_address(request: &Request<()>) -> Option<SocketAddr> {
    if let Some(RemoteAddr(addr)) = request.extensions().get::<RemoteAddr>() {
        return Some(*addr);
    }
    #[cfg(feature = "axum")]
    if let Some(info) = request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(info.0);
    }
    None
}

/// A squall response as hyper's body type; a HEAD request gets the head
/// only (hyper keeps the `Content-Length`).
fn into_full(response: Response<Bytes>, request: &Request<()>) -> Response<Full<Bytes>> {
    let head_only = request.method() == Method::HEAD;
    response.map(|body| {
        if head_only {
            Full::new(Bytes::new())
        } else {
            Full::new(body)
        }
    })
}
