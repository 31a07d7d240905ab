//! One access line per request or upgrade, as Tornado logs them:
//! `101 GET /socket/ (127.0.0.1) 0.42ms`. Requests over HTTP/2 say so at
//! the end of the line.

use std::fmt;
use std::net::IpAddr;

use http::{Request, StatusCode, Version};
use tokio::time::Instant;

use crate::request::RemoteAddr;

/// Logs the access line for `request`, answered with `status`, that arrived
/// at `started`: at `info`, or at `warn` for a server error. Nothing is
/// formatted (and the clock is not read) unless the line is enabled.
pub(crate) fn log_access(status: StatusCode, request: &Request<()>, started: Instant) {
    let ip = ClientIp(
        request
            .extensions()
            .get::<RemoteAddr>()
            .map(|addr| addr.0.ip()),
    );
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let version = if request.version() == Version::HTTP_2 {
        " HTTP/2"
    } else {
        ""
    };
    // The macros evaluate their arguments only for an enabled line.
    if status.is_server_error() {
        tracing::warn!(target: "squall::access", "{} {} {} ({}) {:.2}ms{}", status.as_u16(), request.method(), path, ip, millis(started), version);
    } else {
        tracing::info!(target: "squall::access", "{} {} {} ({}) {:.2}ms{}", status.as_u16(), request.method(), path, ip, millis(started), version);
    }
}

fn millis(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// The client's address as the line shows it (empty when unknown).
struct ClientIp(Option<IpAddr>);

impl fmt::Display for ClientIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => Ok(()),
        }
    }
}
