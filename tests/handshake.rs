//! SPEC §3, the handshake rows: every way an upgrade is refused (status, body,
//! headers), the origin rule, and subprotocol selection. Refusals are checked
//! on the raw bytes; a refused upgrade must never reach `open`.

mod common;

use std::net::SocketAddr;

use common::{next_event, Upgrade, ACCEPT};
use squall::testing::TestServer;
use squall::{Application, ConnectOptions, Message, WebSocket, WebSocketHandler};
use tokio::sync::mpsc;

/// Reports every `open` with the request URI and the chosen subprotocol.
struct Recorder {
    events: mpsc::UnboundedSender<String>,
}

fn opened(ws: &WebSocket) -> String {
    format!(
        "open {} {:?}",
        ws.request().uri(),
        ws.selected_subprotocol()
    )
}

impl WebSocketHandler for Recorder {
    async fn open(&mut self, ws: &WebSocket) {
        self.events.send(opened(ws)).ok();
    }

    async fn on_message(&mut self, _ws: &WebSocket, _msg: Message) {}

    fn select_subprotocol(&self, offered: &[&str]) -> Option<String> {
        // Prefers v2 over v1, whatever the client's order.
        ["chat.v2", "chat.v1"]
            .into_iter()
            .find(|p| offered.contains(p))
            .map(str::to_owned)
    }
}

/// Overrides `check_origin`: any origin under `friend.example`.
struct Picky {
    events: mpsc::UnboundedSender<String>,
}

impl WebSocketHandler for Picky {
    async fn open(&mut self, ws: &WebSocket) {
        self.events.send(opened(ws)).ok();
    }

    async fn on_message(&mut self, _ws: &WebSocket, _msg: Message) {}

    fn check_origin(&self, origin: &str, _request: &http::Request<()>) -> bool {
        origin.ends_with(".friend.example")
    }
}

type Events = mpsc::UnboundedReceiver<String>;

async fn start_with(app: impl FnOnce(Application) -> Application) -> (TestServer, Events) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = app(Application::new()
        .websocket("/ws", move || Recorder { events: tx.clone() })
        .page("/page", "<p>page</p>"));
    (TestServer::start(app).await, rx)
}

async fn start() -> (TestServer, Events) {
    start_with(|app| app).await
}

/// A refused upgrade never reached `open`: a later good connection's `open`
/// is the next event.
async fn assert_no_open_before_probe(server: &TestServer, events: &mut Events) {
    let _client = server.connect("/ws?probe").await;
    assert_eq!(next_event(events).await, "open /ws?probe None");
}

fn addr(server: &TestServer) -> SocketAddr {
    server.addr()
}

#[tokio::test]
async fn unknown_path_is_404() {
    let (server, mut events) = start().await;
    let (response, _) = Upgrade::new(addr(&server), "/nowhere")
        .send(addr(&server))
        .await;
    assert_eq!(response.status, 404);
    assert_no_open_before_probe(&server, &mut events).await;
}

#[tokio::test]
async fn websocket_route_with_post_is_405() {
    let (server, mut events) = start().await;
    let (response, _) = Upgrade::new(addr(&server), "/ws")
        .method("POST")
        .send(addr(&server))
        .await;
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("GET"));
    assert_no_open_before_probe(&server, &mut events).await;
}

#[tokio::test]
async fn no_upgrade_websocket_is_400() {
    let (server, mut events) = start().await;
    for request in [
        Upgrade::new(addr(&server), "/ws").without("Upgrade"),
        Upgrade::new(addr(&server), "/ws").header("Upgrade", "h2c"),
    ] {
        let (response, _) = request.send(addr(&server)).await;
        assert_eq!(response.status, 400);
        assert_eq!(
            response.body_text(),
            r#"Can "Upgrade" only to "WebSocket"."#
        );
    }
    assert_no_open_before_probe(&server, &mut events).await;
}

#[tokio::test]
async fn connection_lacking_upgrade_is_400() {
    let (server, mut events) = start().await;
    let (response, _) = Upgrade::new(addr(&server), "/ws")
        .header("Connection", "keep-alive")
        .send(addr(&server))
        .await;
    assert_eq!(response.status, 400);
    assert_eq!(response.body_text(), r#""Connection" must be "Upgrade"."#);
    assert_no_open_before_probe(&server, &mut events).await;
}

#[tokio::test]
async fn connection_keep_alive_upgrade_as_firefox_sends_is_accepted() {
    let (server, mut events) = start().await;
    let (response, _raw) = Upgrade::new(addr(&server), "/ws?firefox")
        .header("Connection", "keep-alive, Upgrade")
        .send(addr(&server))
        .await;
    assert_eq!(response.status, 101);
    assert_eq!(response.header("sec-websocket-accept"), Some(ACCEPT));
    assert_eq!(next_event(&mut events).await, "open /ws?firefox None");
}

#[tokio::test]
async fn missing_sec_websocket_key_is_400() {
    let (server, mut events) = start().await;
    let (response, _) = Upgrade::new(addr(&server), "/ws")
        .without("Sec-WebSocket-Key")
        .send(addr(&server))
        .await;
    assert_eq!(response.status, 400);
    assert_no_open_before_probe(&server, &mut events).await;
}

#[tokio::test]
async fn invalid_sec_websocket_key_is_400() {
    let (server, mut events) = start().await;
    // Valid base64, but 5 bytes rather than 16; then not base64 at all.
    for key in ["c2hvcnQ=", "not a key at all!!!!!!=="] {
        let (response, _) = Upgrade::new(addr(&server), "/ws")
            .header("Sec-WebSocket-Key", key)
            .send(addr(&server))
            .await;
        assert_eq!(response.status, 400, "key {key:?}");
    }
    assert_no_open_before_probe(&server, &mut events).await;
}

#[tokio::test]
async fn sec_websocket_version_not_13_is_426_with_version_13() {
    let (server, mut events) = start().await;
    let (response, _) = Upgrade::new(addr(&server), "/ws")
        .header("Sec-WebSocket-Version", "8")
        .send(addr(&server))
        .await;
    assert_eq!(response.status, 426);
    assert_eq!(response.header("sec-websocket-version"), Some("13"));
    assert_no_open_before_probe(&server, &mut events).await;
}

#[tokio::test]
async fn cross_origin_with_default_check_origin_is_403() {
    let (server, mut events) = start().await;
    let (response, _) = Upgrade::new(addr(&server), "/ws")
        .header("Origin", "http://evil.example")
        .send(addr(&server))
        .await;
    assert_eq!(response.status, 403);
    assert_eq!(response.body_text(), "Cross origin websockets not allowed");
    assert_no_open_before_probe(&server, &mut events).await;
}

#[tokio::test]
async fn same_origin_host_and_port_case_insensitive_is_accepted() {
    let (server, mut events) = start().await;
    let port = addr(&server).port();
    let (response, _raw) = Upgrade::new(addr(&server), "/ws?same")
        .header("Host", &format!("Example.COM:{port}"))
        .header("Origin", &format!("http://example.com:{port}"))
        .send(addr(&server))
        .await;
    assert_eq!(response.status, 101);
    assert_eq!(next_event(&mut events).await, "open /ws?same None");

    // Same host, other port: cross-origin, refused by default.
    let (response, _) = Upgrade::new(addr(&server), "/ws")
        .header("Host", &format!("example.com:{port}"))
        .header("Origin", &format!("http://example.com:{}", port + 1))
        .send(addr(&server))
        .await;
    assert_eq!(response.status, 403);
}

#[tokio::test]
async fn sec_fetch_site_same_origin_is_accepted() {
    let (server, mut events) = start().await;
    let (response, _raw) = Upgrade::new(addr(&server), "/ws?fetch")
        .header("Origin", "http://elsewhere.example")
        .header("Sec-Fetch-Site", "same-origin")
        .send(addr(&server))
        .await;
    assert_eq!(response.status, 101);
    assert_eq!(next_event(&mut events).await, "open /ws?fetch None");
}

#[tokio::test]
async fn no_origin_is_accepted() {
    let (server, mut events) = start().await;
    let (response, _raw) = Upgrade::new(addr(&server), "/ws?no-origin")
        .without("Origin")
        .send(addr(&server))
        .await;
    assert_eq!(response.status, 101);
    assert_eq!(next_event(&mut events).await, "open /ws?no-origin None");
}

#[tokio::test]
async fn trusted_origins_accepts_listed_origin_and_refuses_others() {
    let (server, mut events) =
        start_with(|app| app.trusted_origins(["https://app.example.com"])).await;

    let refused = server
        .try_connect(
            "/ws?other",
            ConnectOptions::new().header("Origin", "https://other.example.com"),
        )
        .await
        .expect_err("an unlisted origin is refused");
    assert_eq!(refused.status(), Some(http::StatusCode::FORBIDDEN));

    let _client = server
        .try_connect(
            "/ws?trusted",
            ConnectOptions::new().header("Origin", "https://app.example.com"),
        )
        .await
        .expect("the listed origin is accepted");
    assert_eq!(next_event(&mut events).await, "open /ws?trusted None");
}

#[tokio::test]
async fn overriding_check_origin_accepts_and_refuses() {
    let (tx, mut events) = mpsc::unbounded_channel();
    let server = TestServer::start(
        Application::new().websocket("/ws", move || Picky { events: tx.clone() }),
    )
    .await;

    let (response, _) = Upgrade::new(server.addr(), "/ws?evil")
        .header("Origin", "https://evil.example")
        .send(server.addr())
        .await;
    assert_eq!(response.status, 403);
    assert_eq!(response.body_text(), "Cross origin websockets not allowed");

    let (response, _raw) = Upgrade::new(server.addr(), "/ws?friend")
        .header("Origin", "https://app.friend.example")
        .send(server.addr())
        .await;
    assert_eq!(response.status, 101);
    assert_eq!(next_event(&mut events).await, "open /ws?friend None");
}

#[tokio::test]
async fn subprotocol_selected_is_echoed_and_visible_to_the_handler() {
    let (server, mut events) = start().await;
    let client = server
        .try_connect(
            "/ws?proto",
            ConnectOptions::new()
                .subprotocol("chat.v1")
                .subprotocol("chat.v2"),
        )
        .await
        .expect("connect");
    assert_eq!(client.selected_subprotocol(), Some("chat.v2"));
    assert_eq!(
        next_event(&mut events).await,
        r#"open /ws?proto Some("chat.v2")"#
    );
}

#[tokio::test]
async fn no_subprotocol_selected_sends_no_header() {
    let (server, mut events) = start().await;
    // Raw: tungstenite's client fails a handshake that offered subprotocols
    // and got none back, but the server's answer is what is tested here.
    let (response, _raw) = Upgrade::new(addr(&server), "/ws?none")
        .header("Sec-WebSocket-Protocol", "mqtt, stomp")
        .send(addr(&server))
        .await;
    assert_eq!(response.status, 101);
    assert_eq!(response.header("sec-websocket-protocol"), None);
    assert_eq!(next_event(&mut events).await, "open /ws?none None");
}
