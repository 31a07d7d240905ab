//! The WebSocket upgrade: from a routed request head to a 101 response or an
//! error status.
//!
//! Each way a handshake can fail is one [`HandshakeError`] variant with one
//! status code, following Tornado's checks and their order.

use std::panic::AssertUnwindSafe;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::{header, HeaderMap, Method, Response, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::application::AppContext;
use crate::connection;
use crate::http1::{log_access, text_response, write_response};
use crate::router::BoxFuture;
use crate::stream::Stream;
use crate::{TrustedOrigins, WebSocketHandler};

/// A request routed to a WebSocket endpoint, with the connection it came on.
pub(crate) struct UpgradeRequest {
    pub stream: Stream,
    /// Bytes read past the request head: the client's first frames, if it
    /// did not wait for the 101.
    pub read_ahead: BytesMut,
    pub request: http::Request<()>,
    pub started: Instant,
    pub app: AppContext,
}

/// Runs `prepare`, checks the request, answers 101 or the refusal, and
/// returns the connection to run.
pub(crate) async fn upgrade<H: WebSocketHandler>(
    mut handler: H,
    upgrade: UpgradeRequest,
) -> Option<BoxFuture<()>> {
    let UpgradeRequest {
        mut stream,
        read_ahead,
        mut request,
        started,
        app,
    } = upgrade;
    let settings = app.settings();
    request
        .extensions_mut()
        .insert(TrustedOrigins(settings.trusted_origins.clone()));

    let prepared = tokio::time::timeout(
        settings.prepare_timeout,
        AssertUnwindSafe(handler.prepare(&mut request)).catch_unwind(),
    )
    .await;
    let refusal = match prepared {
        Ok(Ok(Ok(()))) => None,
        Ok(Ok(Err(response))) => Some(response),
        Ok(Err(_panic)) => {
            tracing::warn!("WebSocket handler panicked in prepare");
            Some(text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
            ))
        }
        Err(_elapsed) => Some(text_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
        )),
    };
    let accepted = match refusal {
        Some(response) => Err(response),
        None => negotiate(&request, &handler).map_err(|error| error.response()),
    };
    let accepted = match accepted {
        Ok(accepted) => accepted,
        Err(response) => {
            let status = response.status();
            let head_only = request.method() == Method::HEAD;
            let _ = write_response(&mut stream, response, head_only, false).await;
            log_access(status, &request, started);
            return None;
        }
    };
    if stream
        .write_all(&switching_protocols(&accepted))
        .await
        .is_err()
    {
        return None;
    }
    log_access(StatusCode::SWITCHING_PROTOCOLS, &request, started);

    // Only the bytes past the head are kept; the head buffer itself is freed
    // here rather than held for the connection's lifetime.
    let leftover = Vec::from(&read_ahead[..]);
    drop(read_ahead);
    let (context, io) =
        connection::establish(stream, leftover, request, accepted.subprotocol, app).await;
    Some(Box::pin(connection::run(handler, context, io)))
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
            HandshakeError::UnsupportedVersion => StatusCode::UPGRADE_REQUIRED,
            HandshakeError::BadSubprotocol => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The full response: status, a plain-text body saying why, and the
    /// headers the case needs (`Allow`, `Sec-WebSocket-Version`).
    pub fn response(&self) -> Response<Bytes> {
        let mut response = crate::http1::text_response(self.status(), self.to_string());
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
            _ => {}
        }
        response
    }
}

/// What a valid upgrade request settled.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub accept_key: String,
    pub subprotocol: Option<String>,
}

/// Checks an upgrade request in Tornado's order: method, `Upgrade`,
/// `Connection`, origin, version, key; then lets the handler pick a
/// subprotocol.
pub(crate) fn negotiate<H: WebSocketHandler>(
    request: &http::Request<()>,
    handler: &H,
) -> Result<Accepted, HandshakeError> {
    if request.method() != Method::GET {
        return Err(HandshakeError::MethodNotAllowed);
    }
    let headers = request.headers();
    if !header_has_token(headers, header::UPGRADE, "websocket") {
        return Err(HandshakeError::NotWebSocketUpgrade);
    }
    if !header_has_token(headers, header::CONNECTION, "upgrade") {
        return Err(HandshakeError::ConnectionNotUpgrade);
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
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|v| v.as_bytes().trim_ascii())
        .filter(|key| is_valid_key(key))
        .ok_or(HandshakeError::InvalidKey)?;

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
    Ok(Accepted {
        accept_key: tungstenite::handshake::derive_accept_key(key),
        subprotocol,
    })
}

/// The `101 Switching Protocols` response head.
pub(crate) fn switching_protocols(accepted: &Accepted) -> Vec<u8> {
    let mut head = Vec::with_capacity(160);
    head.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    head.extend_from_slice(accepted.accept_key.as_bytes());
    if let Some(protocol) = &accepted.subprotocol {
        head.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
        head.extend_from_slice(protocol.as_bytes());
    }
    head.extend_from_slice(b"\r\n\r\n");
    head
}

/// Whether a comma-separated header holds `token` (case-insensitive):
/// `Connection` is a token list, and Firefox sends `keep-alive, Upgrade`.
fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A key is 16 random bytes in base64: 24 characters ending in `==`.
fn is_valid_key(key: &[u8]) -> bool {
    data_encoding::BASE64
        .decode(key)
        .is_ok_and(|decoded| decoded.len() == 16)
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
    }
}
