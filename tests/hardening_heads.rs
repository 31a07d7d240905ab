//! Request heads the RFCs refuse (issue 15): an HTTP/1.0 upgrade request
//! (RFC 9110 §7.8, RFC 6455 §4.1) gets 426 naming the upgrade, and a request
//! without `Host` or with two (RFC 9112 §3.2) gets 400, on WebSocket and page
//! routes alike. Each refusal is a complete response, no handler runs, and
//! the server then closes the connection.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{refusal, request, Upgrade};
use squall::testing::TestServer;
use squall::{Application, Message, WebSocket, WebSocketHandler};

/// Counts `prepare` calls: a refused head must not reach the handler.
struct Counted(Arc<AtomicUsize>);

impl WebSocketHandler for Counted {
    async fn prepare(
        &mut self,
        _request: &mut http::Request<()>,
    ) -> Result<(), http::Response<bytes::Bytes>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn on_message(&mut self, _ws: &WebSocket, _msg: Message) {}
}

async fn start() -> (TestServer, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let app = Application::new()
        .websocket("/ws", move || Counted(c.clone()))
        .page("/", "<p>page</p>");
    (TestServer::start(app).await, calls)
}

/// A valid upgrade request to `/ws`, as text to edit.
fn upgrade(addr: SocketAddr) -> String {
    String::from_utf8(Upgrade::new(addr, "/ws").to_bytes()).unwrap()
}

#[tokio::test]
async fn http10_upgrade_request_is_426_with_upgrade_and_connection() {
    let (server, calls) = start().await;
    let head = upgrade(server.addr()).replace("HTTP/1.1", "HTTP/1.0");
    let response = refusal(server.addr(), head.as_bytes()).await;
    assert_eq!(response.status, 426, "{response:?}");
    assert_eq!(response.header("upgrade"), Some("websocket"));
    let connection = response.header("connection").unwrap_or_default();
    assert!(
        connection.to_ascii_lowercase().contains("upgrade")
            && connection.to_ascii_lowercase().contains("close"),
        "Connection: {connection:?}"
    );
    assert_eq!(response.body_text(), "WebSocket upgrades need HTTP/1.1");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "only prepare ran");
}

#[tokio::test]
async fn upgrade_without_host_is_400() {
    let (server, calls) = start().await;
    let head = Upgrade::new(server.addr(), "/ws")
        .without("Host")
        .to_bytes();
    let response = refusal(server.addr(), &head).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.body_text(), "Missing Host header");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no handler may run");
}

#[tokio::test]
async fn upgrade_with_two_hosts_is_400() {
    let (server, calls) = start().await;
    let head = upgrade(server.addr()).replacen("\r\n", "\r\nHost: elsewhere.example\r\n", 1);
    let response = refusal(server.addr(), head.as_bytes()).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.body_text(), "More than one Host header");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no handler may run");
}

#[tokio::test]
async fn page_without_host_is_400() {
    let (server, _) = start().await;
    let response = refusal(server.addr(), b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(response.status, 400);
    assert_eq!(response.body_text(), "Missing Host header");
}

#[tokio::test]
async fn page_with_two_hosts_is_400() {
    let (server, _) = start().await;
    let response = refusal(
        server.addr(),
        b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 400);
    assert_eq!(response.body_text(), "More than one Host header");
}

#[tokio::test]
async fn http10_page_without_host_is_served() {
    let (server, _) = start().await;
    let (response, _) = request(server.addr(), b"GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body_text(), "<p>page</p>");
}
