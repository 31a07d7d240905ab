//! The WebSocket upgrade: from a routed request head to an accepted
//! upgrade (101, or 200 for HTTP/2's extended CONNECT) or an error response.
//!
//! This is where a WebSocket route's handler is made and checked: `prepare`,
//! then [`negotiate`] (Tornado's checks in Tornado's order, each way to fail
//! one [`HandshakeError`] variant with one status). It writes nothing: the
//! front that owns the connection (standalone HTTP/1.1, or hyper) sends the
//! response its own way and then hands the upgraded stream to
//! [`Accepted::into_connection`], which starts the engine.

use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::FutureExt;
use http::{header, HeaderMap, Method, Response, StatusCode};

use crate::deflate::{self, Agreed};
use crate::engine::{self, Agreements, BoxFuture, Env};
use crate::handler::WebSocketHandler;
use crate::request::TrustedOrigins;
use crate::response::text_response;
use crate::settings::Settings;
use crate::stream::Stream;
use crate::telemetry::RouteTelemetry;

/// How the client asked for the WebSocket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    /// HTTP/1.1 `GET` with `Upgrade: websocket` (RFC 6455).
    Http1,
    /// HTTP/2 extended `CONNECT` (RFC 8441); `websocket` tells whether its
    /// `:protocol` was `websocket`.
    #[cfg_attr(not(feature = "hyper"), allow(dead_code))]
    Http2 { websocket: bool },
}

/// A WebSocket route: makes a handler for each request and runs the
/// handshake with it. Erased once per route, so each handler type keeps its
/// own monomorphised engine.
pub(crate) trait Endpoint: Send + Sync + 'static {
    /// Runs `prepare` and the checks for `request`.
    fn handshake(
        &self,
        request: Box<http::Request<()>>,
        env: &Env,
        via: Via,
    ) -> BoxFuture<Handshake>;

    /// The route's pattern and metrics (a front refusing a request before
    /// the handshake counts it here).
    fn telemetry(&self) -> &RouteTelemetry;
}

/// A route's handler factory as an [`Endpoint`].
pub(crate) struct FactoryEndpoint<F> {
    pub factory: F,
    pub route: Arc<RouteTelemetry>,
}

impl<F, H> Endpoint for FactoryEndpoint<F>
where
    F: Fn() -> H + Send + Sync + 'static,
    H: WebSocketHandler,
{
    fn handshake(
        &self,
        request: Box<http::Request<()>>,
        env: &Env,
        via: Via,
    ) -> BoxFuture<Handshake> {
        Box::pin(handshake(
            (self.factory)(),
            request,
            env.settings.clone(),
            via,
            self.route.clone(),
        ))
    }

    fn telemetry(&self) -> &RouteTelemetry {
        &self.route
    }
}

/// The outcome of a handshake, with the request (for the access line and
/// for the connection).
pub(crate) struct Handshake {
    /// Boxed from the front's parse on: the request is kept across every
    /// wait of the HTTP phase and of the handshake, whose futures stay
    /// smaller (and quicker to allocate) for holding a pointer to it.
    pub request: Box<http::Request<()>>,
    pub outcome: Result<Accepted, Response<Bytes>>,
}

/// An accepted upgrade: what the response must say, and the handler that
/// will serve the connection once the front has the upgraded stream.
pub(crate) struct Accepted {
    pub negotiated: Negotiated,
    handler: Box<dyn Launch>,
    route: Arc<RouteTelemetry>,
}

impl Accepted {
    /// The connection to run on `stream`: the engine with this handler.
    /// `read_ahead` holds bytes the front read past the request head.
    pub fn into_connection(
        self,
        stream: Stream,
        read_ahead: BytesMut,
        request: Box<http::Request<()>>,
        env: &Env,
    ) -> BoxFuture<()> {
        let Negotiated {
            subprotocol,
            deflate,
            ..
        } = self.negotiated;
        self.handler.launch(
            stream,
            read_ahead,
            request,
            Agreements {
                subprotocol,
                deflate: deflate.map(|agreed| agreed.0),
            },
            env,
            self.route,
        )
    }
}

/// A handler of any type, ready to serve a connection.
trait Launch: Send {
    fn launch(
        self: Box<Self>,
        stream: Stream,
        read_ahead: BytesMut,
        request: Box<http::Request<()>>,
        agreements: Agreements,
        env: &Env,
        route: Arc<RouteTelemetry>,
    ) -> BoxFuture<()>;
}

impl<H: WebSocketHandler> Launch for H {
    fn launch(
        self: Box<Self>,
        stream: Stream,
        read_ahead: BytesMut,
        request: Box<http::Request<()>>,
        agreements: Agreements,
        env: &Env,
        route: Arc<RouteTelemetry>,
    ) -> BoxFuture<()> {
        // Set up here, not inside the future: its arguments would stay in
        // the future's memory for the life of the connection.
        let (context, connection) =
            engine::establish(stream, read_ahead, *request, agreements, env, &route);
        Box::pin(engine::run(*self, context, connection, &route.path))
    }
}

/// Runs `prepare` (bounded by `prepare_timeout`, a panic answering 500),
/// then the checks.
async fn handshake<H: WebSocketHandler>(
    mut handler: H,
    mut request: Box<http::Request<()>>,
    settings: Arc<Settings>,
    via: Via,
    route: Arc<RouteTelemetry>,
) -> Handshake {
    TrustedOrigins::store_in(&settings.trusted_origins, &mut request);
    let prepared = {
        let mut prepare = pin!(AssertUnwindSafe(handler.prepare(&mut request)).catch_unwind());
        // Polled once before the timeout is armed: a `prepare` that does
        // not wait (the default) costs no timer and no clock read.
        match poll_fn(|cx| Poll::Ready(prepare.as_mut().poll(cx))).await {
            Poll::Ready(prepared) => Ok(prepared),
            Poll::Pending => tokio::time::timeout(settings.prepare_timeout, prepare).await,
        }
    };
    let refusal = match prepared {
        Ok(Ok(Ok(()))) => None,
        Ok(Ok(Err(response))) => {
            route.metrics.prepare_refused();
            Some(response)
        }
        Ok(Err(_panic)) => {
            tracing::warn!("WebSocket handler panicked in prepare");
            Some(text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
            ))
        }
        Err(_elapsed) => {
            route.metrics.prepare_timed_out();
            Some(text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable",
            ))
        }
    };
    let outcome = match refusal {
        Some(response) => Err(response),
        None => match negotiate(&request, &handler, via) {
            Ok(negotiated) => Ok(Accepted {
                negotiated,
                handler: Box::new(handler),
                route: route.clone(),
            }),
            Err(error) => Err(error.response()),
        },
    };
    route.metrics.handshake(match &outcome {
        Ok(_) if via == Via::Http1 => 101,
        Ok(_) => 200,
        Err(response) => response.status().as_u16(),
    });
    Handshake { request, outcome }
}

/// Why an upgrade request was refused, with the response each case gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// 405: a WebSocket route was asked with a method other than GET.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 400 `Can "Upgrade" only to "WebSocket".`: no `Upgrade: websocket`.
    #[error("Can \"Upgrade\" only to \"WebSocket\".")]
    NotWebSocketUpgrade,
    /// 400 `"Connection" must be "Upgrade".`: the `Connection` token list
    /// lacks `upgrade`.
    #[error("\"Connection\" must be \"Upgrade\".")]
    ConnectionNotUpgrade,
    /// 403 `Cross origin websockets not allowed`: a cross-origin request that
    /// `check_origin` refused.
    #[error("Cross origin websockets not allowed")]
    CrossOrigin,
    /// 426 with `Sec-WebSocket-Version: 13`: any other protocol version.
    #[error("Upgrade Required")]
    UnsupportedVersion,
    /// 400: `Sec-WebSocket-Key` missing or not 16 base64-encoded bytes.
    #[error("Missing/Invalid WebSocket key")]
    InvalidKey,
    /// 500: `select_subprotocol` chose a protocol the client did not offer.
    #[error("selected subprotocol was not offered")]
    BadSubprotocol,
    /// 426 with `Upgrade: websocket` and `Connection: Upgrade`: an HTTP/1.0
    /// request. HTTP/1.0 has no upgrade (RFC 9110 §7.8: a server ignores
    /// `Upgrade` in it) and RFC 6455 §4.1 asks for HTTP/1.1 at least.
    #[error("WebSocket upgrades need HTTP/1.1")]
    UpgradeNeedsHttp11,
}

impl HandshakeError {
    /// The status code this refusal is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            HandshakeError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            HandshakeError::NotWebSocketUpgrade
            | HandshakeError::ConnectionNotUpgrade
            | HandshakeError::InvalidKey => StatusCode::BAD_REQUEST,
            HandshakeError::CrossOrigin => StatusCode::FORBIDDEN,
            HandshakeError::UnsupportedVersion | HandshakeError::UpgradeNeedsHttp11 => {
                StatusCode::UPGRADE_REQUIRED
            }
            HandshakeError::BadSubprotocol => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The full response: status, a plain-text body saying why, and the
    /// headers the case needs (`Allow`, `Sec-WebSocket-Version`, `Upgrade`).
    pub fn response(&self) -> Response<Bytes> {
        let mut response = text_response(self.status(), self.to_string());
        let headers = response.headers_mut();
        match self {
            HandshakeError::MethodNotAllowed => {
                headers.insert(header::ALLOW, header::HeaderValue::from_static("GET"));
            }
            HandshakeError::UnsupportedVersion => {
                headers.insert(
                    header::SEC_WEBSOCKET_VERSION,
                    header::HeaderValue::from_static("13"),
                );
            }
            HandshakeError::UpgradeNeedsHttp11 => {
                headers.insert(
                    header::UPGRADE,
                    header::HeaderValue::from_static("websocket"),
                );
                headers.insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("Upgrade"),
                );
            }
            _ => {}
        }
        response
    }
}

/// What a valid upgrade request settled.
#[derive(Debug)]
pub(crate) struct Negotiated {
    /// `Sec-WebSocket-Accept` for HTTP/1.1; HTTP/2 has no key.
    pub accept_key: Option<String>,
    pub subprotocol: Option<String>,
    /// permessage-deflate, when agreed: the parameters and the exact
    /// `Sec-WebSocket-Extensions` response value (boxed: most connections
    /// have none, and the front holds this across the 101's write).
    pub deflate: Option<Box<(Agreed, String)>>,
}

/// Checks an upgrade request in Tornado's order, after the HTTP version
/// (1.1 at least, as RFC 6455 asks): method, `Upgrade`,
/// `Connection`, origin, version, key; then lets the handler pick a
/// subprotocol. Over HTTP/2 the method is `CONNECT`, `:protocol` stands for
/// `Upgrade`, and there is no `Connection` header and no key (RFC 8441 §5).
pub(crate) fn negotiate<H: WebSocketHandler>(
    request: &http::Request<()>,
    handler: &H,
    via: Via,
) -> Result<Negotiated, HandshakeError> {
    let headers = request.headers();
    match via {
        Via::Http1 => {
            if request.version() < http::Version::HTTP_11 {
                return Err(HandshakeError::UpgradeNeedsHttp11);
            }
            if request.method() != Method::GET {
                return Err(HandshakeError::MethodNotAllowed);
            }
            if !header_has_token(headers, header::UPGRADE, "websocket") {
                return Err(HandshakeError::NotWebSocketUpgrade);
            }
            if !header_has_token(headers, header::CONNECTION, "upgrade") {
                return Err(HandshakeError::ConnectionNotUpgrade);
            }
        }
        Via::Http2 { websocket } => {
            if request.method() != Method::CONNECT {
                return Err(HandshakeError::MethodNotAllowed);
            }
            if !websocket {
                return Err(HandshakeError::NotWebSocketUpgrade);
            }
        }
    }
    if let Some(origin) = cross_origin(request) {
        if !handler.check_origin(origin, request) {
            return Err(HandshakeError::CrossOrigin);
        }
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes().trim_ascii() != b"13")
    {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let accept_key = match via {
        Via::Http1 => {
            let key = headers
                .get(header::SEC_WEBSOCKET_KEY)
                .map(|v| v.as_bytes().trim_ascii())
                .filter(|key| is_valid_key(key))
                .ok_or(HandshakeError::InvalidKey)?;
            Some(tungstenite::handshake::derive_accept_key(key))
        }
        Via::Http2 { .. } => None,
    };

    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let subprotocol = if offered.is_empty() {
        None
    } else {
        match handler.select_subprotocol(&offered) {
            Some(chosen) if !offered.contains(&chosen.as_str()) => {
                return Err(HandshakeError::BadSubprotocol)
            }
            chosen => chosen,
        }
    };
    // A declined offer is not an error: the upgrade goes on uncompressed.
    let deflate = handler.compression_options().and_then(|options| {
        deflate::accept_offer(
            headers.get_all(header::SEC_WEBSOCKET_EXTENSIONS).iter(),
            &options,
        )
        .map(Box::new)
    });
    Ok(Negotiated {
        accept_key,
        subprotocol,
        deflate,
    })
}

/// The `101 Switching Protocols` response head (HTTP/1.1).
#[cfg(feature = "fuzzing")]
pub(crate) fn switching_protocols(accepted: &Negotiated) -> Vec<u8> {
    let mut head = Vec::with_capacity(160);
    put_switching_protocols(accepted, &mut head);
    head
}

/// Appends the `101 Switching Protocols` response head to `out` (the
/// standalone front writes it into the buffer it read the request into:
/// no allocation per handshake).
pub(crate) fn put_switching_protocols(accepted: &Negotiated, out: &mut impl BufMut) {
    out.put_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.put_slice(
        accepted
            .accept_key
            .as_deref()
            .unwrap_or_default()
            .as_bytes(),
    );
    if let Some(protocol) = &accepted.subprotocol {
        out.put_slice(b"\r\nSec-WebSocket-Protocol: ");
        out.put_slice(protocol.as_bytes());
    }
    if let Some(agreed) = &accepted.deflate {
        let extension = &agreed.1;
        out.put_slice(b"\r\nSec-WebSocket-Extensions: ");
        out.put_slice(extension.as_bytes());
    }
    out.put_slice(b"\r\n\r\n");
}

/// Whether a comma-separated header holds `token` (case-insensitive):
/// `Connection` is a token list, and Firefox sends `keep-alive, Upgrade`.
pub(crate) fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|value| list_has_token(value.as_bytes(), token.as_bytes()))
}

/// Whether the comma-separated `list` holds `token`, ignoring ASCII case
/// and the spaces around each item. On bytes: a token is ASCII, so the
/// value need not be checked as text first.
fn list_has_token(list: &[u8], token: &[u8]) -> bool {
    list.split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
}

/// A key is 16 random bytes in base64: 24 characters, the last two `=`.
/// Checked without decoding it: 21 characters carry 126 bits, the 22nd the
/// last 2 bits in its high half (its low four bits must be zero, as in the
/// canonical encoding).
fn is_valid_key(key: &[u8]) -> bool {
    fn sextet(c: u8) -> Option<u8> {
        match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let Some((body, b"==")) = key.split_last_chunk::<2>() else {
        return false;
    };
    body.len() == 22
        && body[..21].iter().all(|&c| sextet(c).is_some())
        && sextet(body[21]).is_some_and(|last| last & 0x0f == 0)
}

/// The request's `Origin` if the request looks cross-origin (Tornado 6.6):
/// `Sec-Fetch-Site: same-origin` is trusted; without that header, an origin
/// whose host and port equal `Host` is same-origin; no `Origin` means no
/// browser, and no check.
fn cross_origin(request: &http::Request<()>) -> Option<&str> {
    let headers = request.headers();
    let origin = headers.get(header::ORIGIN)?.to_str().unwrap_or("null");
    if let Some(site) = headers.get("sec-fetch-site") {
        if site.as_bytes().eq_ignore_ascii_case(b"same-origin") {
            return None;
        }
        return Some(origin);
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'));
    match (origin_host, host) {
        (Some(origin_host), Some(host)) if origin_host.eq_ignore_ascii_case(host) => None,
        _ => Some(origin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> http::Request<()> {
        let mut builder = http::Request::get("/socket/");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn same_origin_by_host() {
        let r = request(&[
            ("host", "Example.com:8888"),
            ("origin", "http://example.com:8888"),
        ]);
        assert_eq!(cross_origin(&r), None);
    }

    #[test]
    fn other_port_is_cross_origin() {
        let r = request(&[
            ("host", "example.com:8888"),
            ("origin", "http://example.com:9999"),
        ]);
        assert_eq!(cross_origin(&r), Some("http://example.com:9999"));
    }

    #[test]
    fn sec_fetch_site_decides_when_present() {
        let r = request(&[
            ("host", "a.com"),
            ("origin", "http://b.com"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert_eq!(cross_origin(&r), None);
        let r = request(&[
            ("host", "a.com"),
            ("origin", "http://a.com"),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert_eq!(cross_origin(&r), Some("http://a.com"));
    }

    #[test]
    fn no_origin_is_not_a_browser() {
        assert_eq!(cross_origin(&request(&[("host", "a.com")])), None);
    }

    #[test]
    fn keys() {
        assert!(is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ"));
        assert!(!is_valid_key(b"c2hvcnQ="));
        assert!(!is_valid_key(b""));
        // Non-canonical trailing bits, a bad character, the wrong padding.
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZR=="));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25j*Q=="));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=A"));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ==="));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZ==="));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25j=Q=="));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ\r\n"));
        // Every 16-byte key a client may send is accepted.
        for seed in 0u8..=255 {
            let bytes: Vec<u8> = (0..16u8)
                .map(|i| seed.wrapping_mul(31).wrapping_add(i * 17))
                .collect();
            let key = data_encoding::BASE64.encode(&bytes);
            assert!(is_valid_key(key.as_bytes()), "{key}");
        }
        // A 24-character string is a key exactly when base64 decodes it to
        // 16 bytes (every value of the last two data characters).
        for (third, fourth) in (0..=255u8).flat_map(|a| (0..=255u8).map(move |b| (a, b))) {
            let mut key = *b"dGhlIHNhbXBsZSBub25jZQ==";
            key[20] = third;
            key[21] = fourth;
            let mut decoded = [0u8; 18];
            let decodes = data_encoding::BASE64
                .decode_mut(&key, &mut decoded)
                .is_ok_and(|len| len == 16);
            assert_eq!(is_valid_key(&key), decodes, "{key:?}");
        }
    }

    #[test]
    fn token_lists() {
        assert!(list_has_token(b"Upgrade", b"upgrade"));
        assert!(list_has_token(b"keep-alive, Upgrade", b"upgrade"));
        assert!(list_has_token(b" upgrade ,keep-alive", b"upgrade"));
        assert!(list_has_token(b"a,,UPGRADE", b"upgrade"));
        assert!(!list_has_token(b"upgraded", b"upgrade"));
        assert!(!list_has_token(b"up grade", b"upgrade"));
        assert!(!list_has_token(b"", b"upgrade"));
        assert!(!list_has_token(b"keep-alive,", b"upgrade"));
    }
}
