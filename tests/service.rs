//! squall mounted as a tower `Service` (feature `hyper`): the handshake rows
//! of the wire table, `prepare` refusals, subprotocols, pages, echo over
//! HTTP/1.1 and HTTP/2 (extended CONNECT), a broadcast that reaches sockets
//! of both fronts, and graceful shutdown, with plain hyper and with axum.
#![cfg(feature = "axum")]

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use common::{assert_accepted, next_event, Upgrade};
use futures_util::{SinkExt, StreamExt};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use squall::http::{header, Method, Request, Response, StatusCode, Version};
use squall::testing::within;
use squall::{AppService, Application, Message, WebSocket, WebSocketHandler};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;

/// Echoes with Tornado's prefix, joins `room`, reports its life.
struct Echo {
    events: mpsc::UnboundedSender<String>,
}

impl WebSocketHandler for Echo {
    async fn prepare(&mut self, request: &mut Request<()>) -> Result<(), Response<Bytes>> {
        if request.uri().query() == Some("token=no") {
            let refusal = Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header(header::WWW_AUTHENTICATE, "Bearer")
                .body(Bytes::from_static(b"token required"))
                .unwrap();
            return Err(refusal);
        }
        Ok(())
    }

    fn select_subprotocol(&self, offered: &[&str]) -> Option<String> {
        offered
            .iter()
            .find(|p| **p == "chat.v2")
            .map(|p| p.to_string())
    }

    async fn open(&mut self, ws: &WebSocket) {
        ws.join("room");
        self.events
            .send(format!(
                "open {} {:?}",
                ws.remote_addr().ip(),
                ws.request().version()
            ))
            .ok();
    }

    async fn on_message(&mut self, ws: &WebSocket, msg: Message) {
        if let Some(text) = msg.as_text() {
            ws.write_message(format!("You said: {text}")).await.ok();
        }
    }

    async fn on_close(&mut self, ws: &WebSocket) {
        self.events
            .send(format!("close {:?}", ws.close_code()))
            .ok();
    }
}

fn normal_close() -> tungstenite::protocol::CloseFrame {
    tungstenite::protocol::CloseFrame {
        code: tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "".into(),
    }
}

fn app(events: &mpsc::UnboundedSender<String>) -> Application {
    let events = events.clone();
    Application::new()
        .websocket("/socket/", move || Echo {
            events: events.clone(),
        })
        .page("/", "<h1>page</h1>")
}

/// Serves `service` with hyper-util (HTTP/1.1 and HTTP/2 with extended
/// CONNECT) until `stop`; returns the address.
async fn serve_with_hyper(service: AppService, stop: CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                accepted = listener.accept() => accepted.unwrap(),
                () = stop.cancelled() => return,
            };
            let service = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http2().enable_connect_protocol();
                let _ = builder
                    .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// Serves `app` inside an axum router (with a route of axum's own and
/// `ConnectInfo`) on a fresh port, until `stop`.
async fn serve_with_axum(
    service: AppService,
    stop: CancellationToken,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let router = axum::Router::new()
        .route("/api", axum::routing::get(|| async { "axum says hi" }))
        .route_service("/socket/", service.clone())
        .route_service("/", service);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .unwrap();
    });
    (addr, server)
}

async fn echo_once(
    addr: SocketAddr,
) -> tokio_tungstenite::WebSocketStream<impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/socket/"))
        .await
        .expect("upgrade through the service");
    ws.send(tungstenite::Message::text("hello world"))
        .await
        .unwrap();
    let reply = within("the echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), "You said: hello world");
    ws
}

#[tokio::test]
async fn handshake_rows_through_the_service() {
    let (tx, mut events) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let addr = serve_with_hyper(app(&tx).into_service(), stop.clone()).await;

    let cases: Vec<(Upgrade, u16, Option<&str>)> = vec![
        (Upgrade::new(addr, "/socket/").method("POST"), 405, None),
        (
            Upgrade::new(addr, "/socket/").without("Upgrade"),
            400,
            Some("Can \"Upgrade\" only to \"WebSocket\"."),
        ),
        (
            Upgrade::new(addr, "/socket/").header("Connection", "keep-alive"),
            400,
            Some("\"Connection\" must be \"Upgrade\"."),
        ),
        (
            Upgrade::new(addr, "/socket/").header("Sec-WebSocket-Key", "short"),
            400,
            None,
        ),
        (
            Upgrade::new(addr, "/socket/").header("Sec-WebSocket-Version", "8"),
            426,
            None,
        ),
        (
            Upgrade::new(addr, "/socket/").header("Origin", "http://evil.example"),
            403,
            Some("Cross origin websockets not allowed"),
        ),
        (Upgrade::new(addr, "/nowhere"), 404, None),
        (
            Upgrade::new(addr, "/socket/").without("Host"),
            400,
            Some("Missing Host header"),
        ),
    ];
    for (upgrade, status, body) in cases {
        let (response, _raw) = upgrade.send(addr).await;
        assert_eq!(response.status, status, "{response:?}");
        if let Some(body) = body {
            assert_eq!(response.body_text(), body);
        }
        if status == 426 {
            assert_eq!(response.header("sec-websocket-version"), Some("13"));
        }
    }

    // prepare's own refusal, as given.
    let (response, _raw) = Upgrade::new(addr, "/socket/?token=no").send(addr).await;
    assert_eq!(response.status, 401);
    assert_eq!(response.header("www-authenticate"), Some("Bearer"));
    assert_eq!(response.body_text(), "token required");

    // A subprotocol is chosen from the offer.
    let (response, _raw) = Upgrade::new(addr, "/socket/")
        .header("Sec-WebSocket-Protocol", "chat.v1, chat.v2")
        .send(addr)
        .await;
    assert_accepted(&response);
    assert_eq!(response.header("sec-websocket-protocol"), Some("chat.v2"));
    assert!(next_event(&mut events).await.starts_with("open"));

    // Same-origin passes without asking check_origin.
    let (response, _raw) = Upgrade::new(addr, "/socket/")
        .header("Origin", &format!("http://{addr}"))
        .send(addr)
        .await;
    assert_accepted(&response);
    stop.cancel();
}

#[tokio::test]
async fn pages_through_the_service() {
    let (tx, _events) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let addr = serve_with_hyper(app(&tx).into_service(), stop.clone()).await;
    let (response, _raw) = common::request(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body_text(), "<h1>page</h1>");
    assert_eq!(
        response.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let (response, _raw) = common::request(
        addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("GET, HEAD"));
    stop.cancel();
}

#[tokio::test]
async fn echo_over_http1_through_hyper() {
    let (tx, mut events) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let addr = serve_with_hyper(app(&tx).into_service(), stop.clone()).await;
    let mut ws = echo_once(addr).await;
    assert_eq!(next_event(&mut events).await, "open 0.0.0.0 HTTP/1.1");
    ws.close(Some(normal_close())).await.unwrap();
    assert_eq!(next_event(&mut events).await, "close Some(1000)");
    stop.cancel();
}

/// Opens a WebSocket over HTTP/2 with extended CONNECT (RFC 8441) using
/// hyper's client.
async fn connect_h2(
    addr: SocketAddr,
    path: &str,
) -> (
    StatusCode,
    Option<tokio_tungstenite::WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .version(Version::HTTP_2)
        .uri(format!("http://{addr}{path}"))
        .header("sec-websocket-version", "13")
        .body(Empty::<Bytes>::new())
        .unwrap();
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let response = within("the extended CONNECT", sender.send_request(request))
        .await
        .expect("extended CONNECT");
    let status = response.status();
    if status != StatusCode::OK {
        return (status, None);
    }
    let upgraded = hyper::upgrade::on(response).await.expect("upgraded stream");
    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    (status, Some(ws))
}

#[tokio::test]
async fn echo_over_http2_extended_connect() {
    let (tx, mut events) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let addr = serve_with_hyper(app(&tx).into_service(), stop.clone()).await;
    let (status, ws) = connect_h2(addr, "/socket/").await;
    assert_eq!(status, StatusCode::OK);
    let mut ws = ws.unwrap();
    assert_eq!(next_event(&mut events).await, "open 0.0.0.0 HTTP/2.0");
    ws.send(tungstenite::Message::text("hello world"))
        .await
        .unwrap();
    let reply = within("the echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), "You said: hello world");
    ws.close(Some(normal_close())).await.unwrap();
    assert_eq!(next_event(&mut events).await, "close Some(1000)");

    // The checks hold over HTTP/2 too: an unknown path is a 404.
    let (status, _) = connect_h2(addr, "/nowhere").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    stop.cancel();
}

#[tokio::test]
async fn axum_routes_next_to_squall_with_the_client_address() {
    let (tx, mut events) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let (addr, server) = serve_with_axum(app(&tx).into_service(), stop.clone()).await;
    let (response, _raw) = common::request(addr, b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(response.body_text(), "axum says hi");
    let (response, _raw) = common::request(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(response.body_text(), "<h1>page</h1>");
    let mut ws = echo_once(addr).await;
    // ConnectInfo gave the real client address.
    assert_eq!(next_event(&mut events).await, "open 127.0.0.1 HTTP/1.1");
    ws.close(Some(normal_close())).await.unwrap();
    assert_eq!(next_event(&mut events).await, "close Some(1000)");
    stop.cancel();
    within("axum to stop", server).await.unwrap();
}

#[tokio::test]
async fn a_broadcast_reaches_sockets_of_both_fronts() {
    let (tx, mut events) = mpsc::unbounded_channel();
    let service = app(&tx).into_service();
    let handle = service.handle();
    let server = service.bind("127.0.0.1:0").await.unwrap();
    let standalone = server.local_addr().unwrap();
    let running = tokio::spawn(server.run());
    let stop = CancellationToken::new();
    let mounted = serve_with_hyper(service, stop.clone()).await;

    let (mut a, _) = tokio_tungstenite::connect_async(format!("ws://{standalone}/socket/"))
        .await
        .unwrap();
    next_event(&mut events).await;
    let (mut b, _) = tokio_tungstenite::connect_async(format!("ws://{mounted}/socket/"))
        .await
        .unwrap();
    next_event(&mut events).await;
    let (status, c) = connect_h2(mounted, "/socket/").await;
    assert_eq!(status, StatusCode::OK);
    let mut c = c.unwrap();
    next_event(&mut events).await;
    assert_eq!(handle.group_size("room"), 3);

    assert_eq!(handle.broadcast("room", "to all"), 3);
    for ws in [&mut a, &mut b] {
        let got = within("the broadcast", ws.next()).await.unwrap().unwrap();
        assert_eq!(got.into_text().unwrap().as_str(), "to all");
    }
    let got = within("the broadcast", c.next()).await.unwrap().unwrap();
    assert_eq!(got.into_text().unwrap().as_str(), "to all");

    // Shutdown closes every socket, of both fronts, with 1001.
    handle.shutdown();
    for ws in [&mut a, &mut b] {
        let close = within("the close frame", ws.next()).await.unwrap().unwrap();
        match close {
            tungstenite::Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1001),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
    match within("the close frame", c.next()).await.unwrap().unwrap() {
        tungstenite::Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a close frame, got {other:?}"),
    }
    drop((a, b, c));
    let mut closes = 0;
    while closes < 3 {
        if next_event(&mut events).await.starts_with("close") {
            closes += 1;
        }
    }
    within("the standalone server to stop", running)
        .await
        .unwrap()
        .unwrap();
    within("the application to stop", handle.stopped()).await;

    // Once shut down, the mounted service refuses new upgrades with 503.
    let (response, _raw) = Upgrade::new(mounted, "/socket/").send(mounted).await;
    assert_eq!(response.status, 503);
    stop.cancel();
}

#[tokio::test]
async fn axum_graceful_shutdown_closes_squall_sockets_with_1001() {
    let (tx, mut events) = mpsc::unbounded_channel();
    let service = app(&tx).into_service();
    let handle = service.handle();
    let stop = CancellationToken::new();
    let (addr, server) = serve_with_axum(service, stop.clone()).await;
    let mut ws = echo_once(addr).await;
    next_event(&mut events).await;

    // The user's graceful-shutdown future: stop axum, shut squall down.
    stop.cancel();
    handle.shutdown();
    match within("the close frame", ws.next()).await.unwrap().unwrap() {
        tungstenite::Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a close frame, got {other:?}"),
    }
    drop(ws);
    assert!(next_event(&mut events).await.starts_with("close"));
    within("axum to stop", server).await.unwrap();
    within("squall to stop", handle.stopped()).await;
}

/// Collects what the `fmt` subscriber writes.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_access_line_says_http2() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let captured = captured.clone();
            move || captured.clone()
        })
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (tx, mut events) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let addr = serve_with_hyper(app(&tx).into_service(), stop.clone()).await;
    let (status, ws) = connect_h2(addr, "/socket/").await;
    assert_eq!(status, StatusCode::OK);
    next_event(&mut events).await;
    drop(ws);
    let _ = echo_once(addr).await;
    next_event(&mut events).await;

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let access: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("squall::access"))
        .collect();
    assert!(
        access
            .iter()
            .any(|l| l.contains("200 CONNECT /socket/ (") && l.trim_end().ends_with("ms HTTP/2")),
        "{access:#?}"
    );
    assert!(
        access
            .iter()
            .any(|l| l.contains("101 GET /socket/ (") && l.trim_end().ends_with("ms")),
        "{access:#?}"
    );
    stop.cancel();
}

/// Through the service too: behind a trusted proxy the forwarded address is
/// the client's, and `max_connections_per_ip` counts it (429 past the cap).
#[tokio::test]
async fn trusted_proxy_and_the_cap_per_address_through_the_service() {
    let (tx, mut events) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let app = app(&tx)
        .trusted_proxies([std::net::IpAddr::from([127, 0, 0, 1])])
        .max_connections_per_ip(1);
    let (addr, _server) = serve_with_axum(app.into_service(), stop.clone()).await;
    let (response, _first) = Upgrade::new(addr, "/socket/")
        .header("X-Forwarded-For", "203.0.113.7")
        .send(addr)
        .await;
    assert_accepted(&response);
    assert_eq!(next_event(&mut events).await, "open 203.0.113.7 HTTP/1.1");
    let (refused, _) = Upgrade::new(addr, "/socket/")
        .header("X-Forwarded-For", "203.0.113.7")
        .send(addr)
        .await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("retry-after"), Some("5"));
    // Another client behind the same proxy is not held back.
    let (other, _second) = Upgrade::new(addr, "/socket/")
        .header("X-Forwarded-For", "198.51.100.4")
        .send(addr)
        .await;
    assert_accepted(&other);
    stop.cancel();
}
