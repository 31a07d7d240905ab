//! Graceful shutdown: stop accepting, deliver what is queued, send 1001 to
//! every socket, run every `on_close`, return when done or at the deadline.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::raw_websocket;
use squall::testing::{assert_closed_with, next_text, within, Wait};
use squall::{Application, Message, WebSocket, WebSocketHandler, WebSocketSender};
use tokio::sync::mpsc;

/// Hands each connection's sender to the test, and reports the close code
/// each `on_close` sees.
struct Tracked {
    senders: mpsc::UnboundedSender<WebSocketSender>,
    closed: mpsc::UnboundedSender<Option<u16>>,
}

impl WebSocketHandler for Tracked {
    async fn open(&mut self, ws: &WebSocket) {
        self.senders.send(ws.sender()).unwrap();
    }
    async fn on_message(&mut self, _ws: &WebSocket, _msg: Message) {}
    async fn on_close(&mut self, ws: &WebSocket) {
        let _ = self.closed.send(ws.close_code());
    }
}

type Senders = mpsc::UnboundedReceiver<WebSocketSender>;
type Closed = mpsc::UnboundedReceiver<Option<u16>>;

/// `app` with [`Tracked`] handlers on `/ws`.
fn tracked(app: Application) -> (Application, Senders, Closed) {
    let (senders, senders_rx) = mpsc::unbounded_channel();
    let (closed, closed_rx) = mpsc::unbounded_channel();
    let app = app.websocket("/ws", move || Tracked {
        senders: senders.clone(),
        closed: closed.clone(),
    });
    (app, senders_rx, closed_rx)
}

const CONNECTIONS: usize = 1000;
const QUEUED: usize = 5;

/// 1 000 connections, each with messages queued at the moment of the
/// shutdown call: each receives all of them, then 1001; every `on_close`
/// runs exactly once and sees the client's answering 1001; the server returns.
#[tokio::test]
async fn thousand_connections_get_their_queue_then_1001() {
    let (app, mut senders_rx, mut closed) = tracked(Application::new());
    let handle = app.handle();
    let server = app.bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let running = tokio::spawn(server.run());

    let url = format!("ws://{addr}/ws");
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        clients.push(within("connect", squall::connect(&url)).await.unwrap());
    }
    let mut senders = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        senders.push(within("open", senders_rx.recv()).await.unwrap());
    }

    // Queue messages and ask for shutdown in one go: on this current-thread
    // runtime no connection task runs in between, so every message is still
    // queued when the shutdown is seen.
    for (i, sender) in senders.iter().enumerate() {
        for m in 0..QUEUED {
            sender.send(format!("{i}:{m}")).unwrap();
        }
    }
    handle.shutdown();

    // No new connections once shutting down.
    let refused = tokio::time::timeout(Duration::from_secs(2), squall::connect(&url)).await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a connection was accepted during shutdown"
    );

    // Clients finish in parallel: each answers the close handshake.
    let mut readers = tokio::task::JoinSet::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        readers.spawn(async move {
            for m in 0..QUEUED {
                assert_eq!(next_text(&mut client).await, format!("{i}:{m}"));
            }
            assert_closed_with(&mut client, 1001).await;
        });
    }
    while let Some(result) = within("the clients", readers.join_next()).await {
        result.unwrap();
    }
    within("the server to return", running)
        .await
        .unwrap()
        .unwrap();
    within("stopped", handle.stopped()).await;
    // The server has returned and dropped every handler: the channel ends.
    let mut codes = Vec::new();
    while let Some(code) = within("the on_close reports", closed.recv()).await {
        codes.push(code);
    }
    assert_eq!(codes.len(), CONNECTIONS, "one on_close per connection");
    assert!(codes.iter().all(|&code| code == Some(1001)), "{codes:?}");
}

/// A client that never answers the close frame cannot hold the shutdown past
/// its deadline: its connection is aborted there (its handler dropped
/// without `on_close`).
#[tokio::test]
async fn shutdown_returns_by_the_deadline() {
    let (app, mut senders_rx, mut closed) = tracked(
        Application::new()
            .shutdown_timeout(Duration::from_millis(300))
            .websocket_close_timeout(Duration::from_secs(60)),
    );
    let handle = app.handle();
    let server = app.bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let running = tokio::spawn(server.run());
    let _silent = raw_websocket(addr, "/ws").await;
    within("open", senders_rx.recv()).await.unwrap();
    let started = Instant::now();
    handle.shutdown();
    within("the server to return", running)
        .await
        .unwrap()
        .unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // Still waiting for the close (its timeout is a minute) when aborted:
    // every handler is gone, none ran on_close, so the channel just ends.
    within("stopped", handle.stopped()).await;
    assert_eq!(within("the aborted handler", closed.recv()).await, None);
}

/// The echo example shuts down gracefully on SIGTERM: its client gets 1001
/// and the process exits 0.
#[tokio::test]
async fn echo_example_handles_sigterm() {
    let echo = common::example("echo");
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut child = tokio::process::Command::new(&echo)
        .arg(format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut client = Wait::default()
        .connect_when_listening(addr, "/socket/")
        .await;
    client.send("hi").await.unwrap();
    assert_eq!(next_text(&mut client).await, "You said: hi");
    let pid = child.id().unwrap() as i32;
    // SAFETY: kill(2) on the child we spawned and still own.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert_closed_with(&mut client, 1001).await;
    let status = within("the example to exit", child.wait()).await.unwrap();
    assert!(status.success(), "{status:?}");
}
