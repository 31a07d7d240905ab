//! SPEC §3: `on_close` runs exactly once per opened connection, whatever the
//! cause: a close by the client, a vanished peer, a ping timeout, a server
//! shutdown, or a panicking handler (which closes with 1011).
//!
//! "Exactly once" is checked without waiting on the clock: after the test,
//! the server is shut down, which drops every handler and the factory, so the
//! event channel ends and every event ever sent can be counted.

mod common;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};

use common::{raw_websocket, read_close, read_frame, read_to_eof};
use squall::testing::{assert_closed_with, next_text, within, TestServer};
use squall::{Application, Message, WebSocket, WebSocketHandler};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Echoes, panics on "panic" (or in `open` if told to), and reports `open`
/// and `on_close` with the request path and the peer's close code.
struct Life {
    events: mpsc::UnboundedSender<String>,
    panic_in_open: bool,
}

fn path(ws: &WebSocket) -> String {
    ws.request().uri().to_string()
}

impl WebSocketHandler for Life {
    async fn open(&mut self, ws: &WebSocket) {
        self.events.send(format!("open {}", path(ws))).ok();
        if self.panic_in_open {
            panic!("open failed on purpose");
        }
    }

    async fn on_message(&mut self, ws: &WebSocket, msg: Message) {
        if msg.as_text() == Some("panic") {
            panic!("on_message failed on purpose");
        }
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
    let panicky = tx.clone();
    let app = Application::new()
        .websocket("/ws", move || Life {
            events: tx.clone(),
            panic_in_open: false,
        })
        .websocket("/panic-open", move || Life {
            events: panicky.clone(),
            panic_in_open: true,
        });
    (TestServer::start(settings(app)).await, rx)
}

async fn start() -> (TestServer, Events) {
    start_with(|app| app).await
}

async fn next_event(events: &mut Events) -> String {
    within("a handler event", events.recv())
        .await
        .expect("event channel open")
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

#[tokio::test]
async fn peer_vanished_with_eof_runs_on_close_once_without_code() {
    let (server, mut events) = start().await;
    let raw = raw_websocket(server.addr(), "/ws").await;
    assert_eq!(next_event(&mut events).await, "open /ws");
    drop(raw);
    assert_eq!(next_event(&mut events).await, "close /ws None");
    assert_eq!(
        shutdown_and_collect(server, events).await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn peer_vanished_with_tcp_reset_runs_on_close_once_without_code() {
    let (server, mut events) = start().await;
    let raw = raw_websocket(server.addr(), "/ws").await;
    assert_eq!(next_event(&mut events).await, "open /ws");
    raw.get_ref().set_zero_linger().unwrap();
    drop(raw);
    assert_eq!(next_event(&mut events).await, "close /ws None");
    assert_eq!(
        shutdown_and_collect(server, events).await,
        Vec::<String>::new()
    );
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

    let (first, _payload) = read_frame(&mut raw).await;
    assert_eq!(first, 0x89, "a final ping frame");
    let (code, _reason) = read_close(&mut raw).await;
    assert_eq!(code, 1001);
    read_to_eof(&mut raw).await;

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
async fn server_shutdown_closes_1001_runs_on_close_and_completes() {
    let (server, mut events) = start().await;
    let mut client = server.connect("/ws").await;
    assert_eq!(next_event(&mut events).await, "open /ws");

    // The client must keep reading to answer the close handshake.
    let reader = tokio::spawn(async move {
        assert_closed_with(&mut client, 1001).await;
    });
    let rest = shutdown_and_collect(server, events).await;
    within("the client", reader).await.unwrap();
    // The client echoed the server's 1001.
    assert_eq!(rest, ["close /ws Some(1001)"]);
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

#[tokio::test]
async fn handler_panic_closes_1011_runs_on_close_once_and_spares_others() {
    let (server, mut events) = start().await;
    let mut other = server.connect("/ws?other").await;
    assert_eq!(next_event(&mut events).await, "open /ws?other");
    let mut client = server.connect("/ws?victim").await;
    assert_eq!(next_event(&mut events).await, "open /ws?victim");

    client.send("panic").await.unwrap();
    assert_closed_with(&mut client, 1011).await;
    assert!(next_event(&mut events)
        .await
        .starts_with("close /ws?victim "));

    other.send("still here").await.unwrap();
    assert_eq!(next_text(&mut other).await, "still here");
    let late = server.connect("/ws?late").await;
    assert_eq!(next_event(&mut events).await, "open /ws?late");
    drop(late);
    drop(other);

    let mut rest = shutdown_and_collect(server, events).await;
    rest.sort();
    assert_eq!(rest.len(), 2, "{rest:?}");
    assert!(rest[0].starts_with("close /ws?late "), "{rest:?}");
    assert!(rest[1].starts_with("close /ws?other "), "{rest:?}");
}

#[tokio::test]
async fn panicking_open_closes_1011_and_runs_on_close_once() {
    let (server, mut events) = start().await;
    let mut client = server.connect("/panic-open").await;
    assert_eq!(next_event(&mut events).await, "open /panic-open");
    assert_closed_with(&mut client, 1011).await;
    assert!(next_event(&mut events)
        .await
        .starts_with("close /panic-open "));
    assert_eq!(
        shutdown_and_collect(server, events).await,
        Vec::<String>::new()
    );
}
