//! One access line per request or upgrade, as Tornado logs them:
//! `101 GET /socket/ (127.0.0.1) 0.42ms`. Requests over HTTP/2 say so at
//! the end of the line.

use http::{Request, StatusCode, Version};
use tokio::time::Instant;

use crate::request::RemoteAddr;

/// Logs the access line for `request`, answered with `status`, that arrived
/// at `started`: at `info`, or at `warn` for a server error.
pub(crate) fn log_access(status: StatusCode, request: &Request<()>, started: Instant) {
    let ip = request
        .extensions()
        .get::<RemoteAddr>()
        .map(|addr| addr.0.ip().to_string())
        .unwrap_or_default();
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let version = if request.version() == Version::HTTP_2 {
        " HTTP/2"
    } else {
        ""
    };
    if status.is_server_error() {
        tracing::warn!(target: "squall::access", "{} {} {} ({}) {:.2}ms{}", status.as_u16(), request.method(), path, ip, ms, version);
    } else {
        tracing::info!(target: "squall::access", "{} {} {} ({}) {:.2}ms{}", status.as_u16(), request.method(), path, ip, ms, version);
    }
}
