//! SPEC §3: `on_close` runs exactly once per opened connection, whatever the
//! cause: a close by the client, a vanished peer, a ping timeout, or a server
//! shutdown that the client never answers. (Panicking handlers are in
//! `hardening_panics.rs`, a shutdown's 1001 in `hardening_shutdown.rs`.)
//!
//! "Exactly once" is checked without waiting on the clock: after the test,
//! the server is shut down, which drops every handler and the factory, so the
//! event channel ends and every event ever sent can be counted.

mod common;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};

use common::{next_event, raw_websocket, read_close, read_frame, read_to_eof, PING};
use squall::testing::{within, TestServer};
use squall::{Application, Message, WebSocket, WebSocketHandler};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Echoes, and reports `open`, `on_pong` and `on_close` with the request
/// path (and the peer's close code).
struct Life {
    events: mpsc::UnboundedSender<String>,
}

fn path(ws: &WebSocket) -> String {
    ws.request().uri().to_string()
}

impl WebSocketHandler for Life {
    async fn open(&mut self, ws: &WebSocket) {
        self.events.send(format!("open {}", path(ws))).ok();
    }

    async fn on_message(&mut self, ws: &WebSocket, msg: Message) {
        ws.write_message(msg).await.ok();
    }

    async fn on_pong(&mut self, ws: &WebSocket, _data: squall::Bytes) {
        self.events.send(format!("pong {}", path(ws))).ok();
    }

    async fn on_close(&mut self, ws: &WebSocket) {
        self.events
            .send(format!("close {} {:?}", path(ws), ws.close_code()))
            .ok();
    }
}

type Events = mpsc::UnboundedReceiver<String>;

async fn start_with(settings: impl FnOnce(Application) -> Application) -> (TestServer, Events) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Application::new().websocket("/ws", move || Life { events: tx.clone() });
    (TestServer::start(settings(app)).await, rx)
}

async fn start() -> (TestServer, Events) {
    start_with(|app| app).await
}

/// Shuts the server down and returns every event not yet read.
async fn shutdown_and_collect(server: TestServer, mut events: Events) -> Vec<String> {
    server.shutdown().await;
    let mut rest = Vec::new();
    within("the handlers to be dropped", async {
        while let Some(event) = events.recv().await {
            rest.push(event);
        }
    })
    .await;
    rest
}

#[tokio::test]
async fn normal_close_by_client_runs_on_close_once_with_its_code() {
    let (server, mut events) = start().await;
    let mut client = server.connect("/ws").await;
    assert_eq!(next_event(&mut events).await, "open /ws");
    client.close(1000, "bye").await;
    assert_eq!(next_event(&mut events).await, "close /ws Some(1000)");
    assert_eq!(
        shutdown_and_collect(server, events).await,
        Vec::<String>::new()
    );
}

/// A raw client vanishes, with an EOF or (`reset`) a TCP reset: `on_close`
/// runs once, without a code.
async fn assert_vanished_peer_closes_once(reset: bool) {
    let (server, mut events) = start().await;
    let raw = raw_websocket(server.addr(), "/ws").await;
    assert_eq!(next_event(&mut events).await, "open /ws");
    if reset {
        raw.get_ref().set_zero_linger().unwrap();
    }
    drop(raw);
    assert_eq!(next_event(&mut events).await, "close /ws None");
    assert_eq!(
        shutdown_and_collect(server, events).await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn peer_vanished_with_eof_runs_on_close_once_without_code() {
    assert_vanished_peer_closes_once(false).await;
}

#[tokio::test]
async fn peer_vanished_with_tcp_reset_runs_on_close_once_without_code() {
    assert_vanished_peer_closes_once(true).await;
}

#[tokio::test]
async fn ping_timeout_closes_the_connection_and_runs_on_close_once() {
    // The close handshake with a peer that no longer answers is bounded by
    // the close timeout; keep it short so the test is.
    let (server, mut events) = start_with(|app| {
        app.websocket_ping_interval(Duration::from_millis(50))
            .websocket_close_timeout(Duration::from_millis(200))
    })
    .await;
    // A raw client: it never answers pings.
    let mut raw = raw_websocket(server.addr(), "/ws").await;
    assert_eq!(next_event(&mut events).await, "open /ws");

    let ping = read_frame(&mut raw).await;
    assert_eq!((ping.fin, ping.rsv, ping.opcode), (true, 0, PING), "a ping");
    let (code, _reason) = read_close(&mut raw).await;
    assert_eq!(code, 1001);
    assert_eq!(read_to_eof(&mut raw).await, b"", "bytes after the close");

    assert_eq!(next_event(&mut events).await, "close /ws None");
    assert_eq!(
        shutdown_and_collect(server, events).await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn answered_pings_keep_the_connection_open() {
    let (server, mut events) =
        start_with(|app| app.websocket_ping_interval(Duration::from_millis(20))).await;
    let (mut ws, _) = within(
        "connect",
        tokio_tungstenite::connect_async(server.url("/ws")),
    )
    .await
    .unwrap();
    assert_eq!(next_event(&mut events).await, "open /ws");

    // Answer five keep-alive pings: many ping timeouts go by, none closes.
    for _ in 0..5 {
        match within("a keep-alive ping", ws.next()).await {
            Some(Ok(WsMessage::Ping(_))) => ws.flush().await.unwrap(),
            other => panic!("expected a ping, got {other:?}"),
        }
        assert_eq!(next_event(&mut events).await, "pong /ws");
    }
    ws.send(WsMessage::text("still open")).await.unwrap();
    loop {
        match within("the echo", ws.next()).await {
            Some(Ok(WsMessage::Ping(_))) => continue,
            Some(Ok(WsMessage::Text(text))) => break assert_eq!(text.as_str(), "still open"),
            other => panic!("expected the echo, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn server_shutdown_completes_when_a_client_never_answers_the_close() {
    let (server, mut events) =
        start_with(|app| app.websocket_close_timeout(Duration::from_millis(200))).await;
    let mut raw = raw_websocket(server.addr(), "/ws").await;
    assert_eq!(next_event(&mut events).await, "open /ws");

    let handle = server.handle().clone();
    let stopping = tokio::spawn(shutdown_and_collect(server, events));
    // The close frame arrives; the client never answers it.
    assert_eq!(read_close(&mut raw).await.0, 1001);
    let rest = within("the shutdown", stopping).await.unwrap();
    assert!(handle.is_shutting_down());
    assert_eq!(rest, ["close /ws None"]);
}
