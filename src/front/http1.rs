//! HTTP/1.1 on an accepted connection: reading request heads (with size and
//! time limits), serving plain pages with keep-alive, and handing WebSocket
//! routes over to the upgrade.
//!
//! squall reads no request bodies: a request that announces one is answered
//! and the connection closed, so the next request can never be read out of
//! the middle of a body.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt as _;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::access_log::log_access;
use super::head_rules::check_head;
use crate::client_limits;
use crate::engine::BoxFuture;
use crate::handshake::{header_has_token, put_switching_protocols, Handshake, Via};
use crate::request::RemoteAddr;
use crate::response::text_response;
use crate::router::{answer_page, Route};
use crate::runtime::Runtime;
use crate::stream::Stream;

/// Most headers in one request head; more answers 431.
const MAX_HEADERS: usize = 64;

/// Why no request head could be read.
#[derive(Debug)]
pub(crate) enum HeadError {
    /// The head passed `max_head_size` (or `MAX_HEADERS`): 431.
    TooLarge,
    /// Not HTTP/1.x: 400.
    Malformed,
    /// The head did not arrive in time, or the peer left mid-head: dropped.
    Gone,
}

/// Serves one accepted connection until it closes, upgrades, or the server
/// shuts down. An upgraded connection is returned, to be run once this
/// (larger) future is gone.
///
/// The future is boxed once per connection, so its size counts (1 144
/// bytes, was 1 992): a plain function returning an `async move` block (an
/// `async fn` would keep its arguments next to the locals they are moved
/// into), responses encoded before their write is awaited (`respond`,
/// `write_response`), a write's timer boxed only when the write waits
/// (`write_within`), and one request-sized slot, not two.
#[allow(clippy::manual_async_fn)] // on purpose, as said above
pub(crate) fn serve_connection(
    mut stream: Stream,
    remote: SocketAddr,
    app: Runtime,
) -> impl Future<Output = Option<BoxFuture<()>>> + Send {
    async move {
        let settings = app.settings();
        let timeout = settings.write_timeout;
        let mut buf = BytesMut::with_capacity(1024);
        // One request at a time: the next head is not read (nor a pipelined one
        // parsed) before the response to this one is written out in full, so a
        // client that stops reading stops the server reading too, and its
        // connection ends when the write timeout passes.
        loop {
            let mut request = match tokio::select! {
                head = read_head(&mut stream, &mut buf, settings.max_head_size, settings.head_timeout) => head,
                () = app.shutdown_token().cancelled() => return None,
            } {
                Ok(Some(request)) => request,
                Ok(None) | Err(HeadError::Gone) => return None,
                Err(error) => {
                    let status = match error {
                        HeadError::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        _ => StatusCode::BAD_REQUEST,
                    };
                    let response = text_response(status, status.canonical_reason().unwrap_or(""));
                    let _ = write_response(&mut stream, response, false, false, timeout).await;
                    tracing::info!(target: "squall::access", "{} - - ({}) bad request head", status.as_u16(), remote.ip());
                    return None;
                }
            };
            let started = Instant::now();
            // Behind a trusted proxy, the client is the address it forwarded.
            let client =
                crate::forwarded::client_addr(remote, request.headers(), &settings.trusted_proxies);
            request.extensions_mut().insert(RemoteAddr(client));
            if let Err(rule) = check_head(&request) {
                respond(
                    &mut stream,
                    &request,
                    rule.response(),
                    false,
                    started,
                    timeout,
                )
                .await;
                return None;
            }
            let route = match app.router().at(request.uri().path()) {
                Some((route, params)) => {
                    params.store_in(&mut request);
                    Some(route)
                }
                None => None,
            };
            let response = match route {
                None => text_response(StatusCode::NOT_FOUND, "Not Found"),
                Some(Route::Page(page)) => answer_page(page, &request).await,
                Some(Route::WebSocket(endpoint)) => {
                    // The per-address slot is taken before `prepare` runs, and
                    // travels with the connection (freed however it ends).
                    let slot = match app.client_limits() {
                        Some(limits) => match limits.try_acquire(client.ip()) {
                            Some(slot) => Some(slot),
                            None => {
                                tracing::warn!(client = %client.ip(), "connections per address reached: 429");
                                crate::telemetry::connection_refused("max_connections_per_ip");
                                endpoint.telemetry().metrics.handshake(429);
                                let response = client_limits::refusal();
                                respond(&mut stream, &request, response, false, started, timeout)
                                    .await;
                                return None;
                            }
                        },
                        None => None,
                    };
                    // The request comes back into the same binding: a new
                    // one would be a second request-sized slot in this
                    // future.
                    let outcome;
                    Handshake { request, outcome } =
                        endpoint.handshake(request, app.env(), Via::Http1).await;
                    let accepted = match outcome {
                        Ok(accepted) => accepted,
                        Err(response) => {
                            respond(&mut stream, &request, response, false, started, timeout).await;
                            return None;
                        }
                    };
                    // Only the bytes past the head are kept (usually none: no
                    // allocation); the buffer then holds the 101, and is freed
                    // rather than held for the connection's lifetime.
                    let leftover = BytesMut::from(&buf[..]);
                    buf.clear();
                    put_switching_protocols(&accepted.negotiated, &mut buf);
                    if write_within(timeout, stream.write_all(&buf)).await.is_err() {
                        tracing::debug!(%remote, "101 not written within the write timeout: dropped");
                        return None;
                    }
                    drop(buf);
                    log_access(StatusCode::SWITCHING_PROTOCOLS, &request, started);
                    let connection = accepted.into_connection(stream, leftover, request, app.env());
                    return Some(match slot {
                        Some(slot) => Box::pin(async move {
                            let _slot = slot;
                            connection.await;
                        }),
                        None => connection,
                    });
                }
            };
            // Decided here, past the WebSocket branch, which never keeps the
            // HTTP connection.
            let keep_alive = wants_keep_alive(&request);
            if !respond(
                &mut stream,
                &request,
                response,
                keep_alive,
                started,
                timeout,
            )
            .await
            {
                return None;
            }
        }
    }
}

/// Writes a response and logs it; `false` when the connection is done (not
/// kept alive, or the write failed or timed out).
fn respond<'a>(
    stream: &'a mut Stream,
    request: &'a Request<()>,
    response: Response<Bytes>,
    keep_alive: bool,
    started: Instant,
    timeout: Duration,
) -> impl Future<Output = bool> + Send + 'a {
    let status = response.status();
    let head_only = request.method() == Method::HEAD;
    // A map, not an `async move` block: the block would keep the write's
    // future twice (captured, and moved into its await).
    write_response(stream, response, head_only, keep_alive, timeout).map(move |written| {
        log_access(status, request, started);
        if let Err(error) = &written {
            tracing::debug!(%error, "response not written: connection dropped");
        }
        written.is_ok() && keep_alive
    })
}

/// Keep-alive unless the client asked to close, spoke HTTP/1.0 without
/// asking to keep it, or sent a body squall would have to skip.
fn wants_keep_alive(request: &Request<()>) -> bool {
    let headers = request.headers();
    if headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|len| len.as_bytes() != b"0")
    {
        return false;
    }
    let connection_has = |token| header_has_token(headers, header::CONNECTION, token);
    match request.version() {
        Version::HTTP_10 => connection_has("keep-alive"),
        _ => !connection_has("close"),
    }
}

/// Reads one request head into `buf`, leaving any bytes after it (a pipelined
/// request, or the first WebSocket frames) in `buf`. `Ok(None)` is a clean
/// end of the connection between requests.
pub(crate) async fn read_head(
    stream: &mut Stream,
    buf: &mut BytesMut,
    max_size: usize,
    timeout: Duration,
) -> Result<Option<Box<Request<()>>>, HeadError> {
    let read = async {
        loop {
            if !buf.is_empty() {
                if let Some(request) = parse_head(buf, max_size)? {
                    // Boxed: see `Handshake::request`.
                    return Ok(Some(Box::new(request)));
                }
            }
            if buf.len() >= max_size {
                return Err(HeadError::TooLarge);
            }
            buf.reserve(1024.min(max_size - buf.len()).max(1));
            match stream.read_buf(buf).await {
                Ok(0) if buf.is_empty() => return Ok(None),
                Ok(0) | Err(_) => return Err(HeadError::Gone),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(HeadError::Gone))
}

/// Parses a complete head at the front of `buf` and removes it; `Ok(None)`
/// if more bytes are needed.
pub(crate) fn parse_head(
    buf: &mut BytesMut,
    max_size: usize,
) -> Result<Option<Request<()>>, HeadError> {
    // Left uninitialised: httparse writes the ones it fills, and zeroing
    // 64 headers (2 KiB) cost more than parsing a usual head.
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    if len > max_size {
        return Err(HeadError::TooLarge);
    }
    // The head is copied once, and the URI and every header value are
    // slices of that copy: one allocation for the head instead of one per
    // value. The copy lives as long as the request (a WebSocket keeps it for
    // `ws.request()`); the read buffer, larger, does not.
    let head = Bytes::copy_from_slice(&buf[..len]);
    let base = buf.as_ptr() as usize;
    let shared = |part: &[u8]| match part.len() {
        0 => Bytes::new(),
        n => {
            // httparse's slices point into `buf[..len]`: same offsets in `head`.
            let start = part.as_ptr() as usize - base;
            head.slice(start..start + n)
        }
    };
    let mut request = Request::new(());
    *request.method_mut() = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| HeadError::Malformed)?;
    let path = parsed.path.unwrap_or_default().as_bytes();
    *request.uri_mut() = match path {
        // The usual path needs no slice (`Uri` has a static `/`).
        b"/" => http::Uri::from_static("/"),
        _ => http::Uri::from_maybe_shared(shared(path)).map_err(|_| HeadError::Malformed)?,
    };
    *request.version_mut() = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let map = request.headers_mut();
    map.reserve(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name =
            header::HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| HeadError::Malformed)?;
        let value =
            HeaderValue::from_maybe_shared(shared(h.value)).map_err(|_| HeadError::Malformed)?;
        map.append(name, value);
    }
    if request.uri().path().is_empty() || !request.uri().path().starts_with('/') {
        return Err(HeadError::Malformed);
    }
    buf.advance(len);
    Ok(Some(request))
}

/// Writes a response with `Content-Length` (and the body unless
/// `head_only`), all of it within `timeout`: a peer that stops reading gets
/// `TimedOut` and its connection is dropped.
pub(crate) fn write_response(
    stream: &mut Stream,
    response: Response<Bytes>,
    head_only: bool,
    keep_alive: bool,
    timeout: Duration,
) -> impl Future<Output = std::io::Result<()>> + Send + '_ {
    // Encoded now: the future keeps the bytes, not the response.
    let out = encode_response(response, head_only, keep_alive);
    write_within(timeout, async move {
        stream.write_all(&out).await?;
        stream.flush().await?;
        if !keep_alive {
            let _ = stream.shutdown().await;
        }
        Ok(())
    })
}

/// Runs a write, failing with `TimedOut` if it has not finished within
/// `timeout`.
async fn write_within(
    timeout: Duration,
    write: impl Future<Output = std::io::Result<()>>,
) -> std::io::Result<()> {
    let mut write = pin!(write);
    // Polled once before the timer is made: a write the socket takes at
    // once (the usual one) reads no clock and arms nothing.
    if let Poll::Ready(written) = poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await {
        return written;
    }
    // A slow peer: now the timer, boxed, so that this future (part of every
    // connection's HTTP phase) does not carry one inline.
    let mut deadline = Box::pin(tokio::time::sleep(timeout));
    poll_fn(|cx| {
        if let Poll::Ready(written) = write.as_mut().poll(cx) {
            return Poll::Ready(written);
        }
        deadline
            .as_mut()
            .poll(cx)
            .map(|()| Err(std::io::ErrorKind::TimedOut.into()))
    })
    .await
}

/// The bytes of a response with `Content-Length` (and the body unless
/// `head_only`).
pub(crate) fn encode_response(
    response: Response<Bytes>,
    head_only: bool,
    keep_alive: bool,
) -> Vec<u8> {
    let (parts, body) = response.into_parts();
    let mut out = Vec::with_capacity(128 + if head_only { 0 } else { body.len() });
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut connection: Vec<&[u8]> = Vec::new();
    for (name, value) in &parts.headers {
        if name == header::CONNECTION {
            // squall decides keep-alive itself; on a closing response the
            // response's own tokens (`Upgrade` on a 426) go before `close`.
            if !keep_alive {
                connection.push(value.as_bytes());
            }
            continue;
        }
        if name == header::CONTENT_LENGTH {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    if !keep_alive {
        connection.push(b"close");
    }
    if !connection.is_empty() {
        out.extend_from_slice(b"Connection: ");
        out.extend_from_slice(&connection.join(&b", "[..]));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(&body);
    }
    out
}
