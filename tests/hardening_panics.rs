//! Panics in handler methods: the connection closes with 1011, the panic is
//! logged, `on_close` still runs exactly once, and the server and every other
//! connection carry on.

mod common;

use common::log;
use squall::testing::{assert_closed_with, next_text, within, TestServer};
use squall::{Application, Message, WebSocket, WebSocketHandler};
use tokio::sync::mpsc;

struct Fragile {
    closed: mpsc::UnboundedSender<&'static str>,
    panic_in_close: bool,
}

impl WebSocketHandler for Fragile {
    async fn open(&mut self, ws: &WebSocket) {
        if ws.query_argument("panic").as_deref() == Some("open") {
            panic!("boom in open");
        }
        if ws.query_argument("panic").as_deref() == Some("close") {
            self.panic_in_close = true;
        }
    }
    async fn on_message(&mut self, ws: &WebSocket, msg: Message) {
        match msg.as_text() {
            Some("panic") => panic!("boom in on_message"),
            Some("panic-after-write") => {
                ws.write_message("written before the panic").await.unwrap();
                panic!("boom after a write");
            }
            _ => {
                ws.write_message(msg).await.ok();
            }
        }
    }
    async fn on_close(&mut self, _ws: &WebSocket) {
        let _ = self.closed.send("closed");
        if self.panic_in_close {
            panic!("boom in on_close");
        }
    }
}

type Closed = mpsc::UnboundedReceiver<&'static str>;

fn app() -> (Application, Closed) {
    let (closed, closed_rx) = mpsc::unbounded_channel();
    let app = Application::new().websocket("/ws", move || Fragile {
        closed: closed.clone(),
        panic_in_close: false,
    });
    (app, closed_rx)
}

/// A new connection is served: the server carries on.
async fn assert_still_serving(server: &TestServer) {
    let mut other = server.connect("/ws").await;
    other.send("x").await.unwrap();
    assert_eq!(next_text(&mut other).await, "x");
    other.close(1000, "").await;
}

/// Shuts the server down, which drops every handler and the factory, and
/// asserts that no `on_close` ran beyond those already received.
async fn shutdown_with_no_more_closes(server: TestServer, mut closed: Closed) {
    server.shutdown().await;
    let more = within("the handlers to be dropped", closed.recv()).await;
    assert_eq!(more, None, "on_close ran more than once per connection");
}

/// 100 connections open; one panics in `on_message`: it alone closes with
/// 1011, the panic is logged, and the other 99 keep echoing.
#[tokio::test]
async fn panic_in_one_of_100_connections() {
    let log = log();
    let (app, mut closed) = app();
    let server = TestServer::start(app).await;
    let mut clients = Vec::new();
    for _ in 0..100 {
        clients.push(server.connect("/ws").await);
    }
    let mut victim = clients.remove(42);
    victim.send("panic").await.unwrap();
    assert_closed_with(&mut victim, 1011).await;
    assert_eq!(within("on_close", closed.recv()).await, Some("closed"));
    assert!(
        log.text().contains("boom in on_message"),
        "the panic must be logged: {}",
        log.text()
    );

    for (i, client) in clients.iter_mut().enumerate() {
        client.send(format!("hello {i}")).await.unwrap();
    }
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(next_text(client).await, format!("hello {i}"));
    }
    // New connections are still served.
    let mut late = server.connect("/ws").await;
    late.send("late").await.unwrap();
    assert_eq!(next_text(&mut late).await, "late");
    assert!(closed.try_recv().is_err(), "only the victim closed");

    clients.push(late);
    for client in &mut clients {
        client.close(1000, "").await;
    }
    for _ in 0..100 {
        within("on_close", closed.recv()).await.unwrap();
    }
    shutdown_with_no_more_closes(server, closed).await;
}

/// Messages written before the panic are delivered before the 1011.
#[tokio::test]
async fn writes_before_a_panic_are_delivered() {
    log();
    let (app, mut closed) = app();
    let server = TestServer::start(app).await;
    let mut client = server.connect("/ws").await;
    client.send("panic-after-write").await.unwrap();
    assert_eq!(next_text(&mut client).await, "written before the panic");
    assert_closed_with(&mut client, 1011).await;
    within("on_close", closed.recv()).await.unwrap();
    shutdown_with_no_more_closes(server, closed).await;
}

#[tokio::test]
async fn panic_in_open_closes_with_1011() {
    log();
    let (app, mut closed) = app();
    let server = TestServer::start(app).await;
    let mut client = server.connect("/ws?panic=open").await;
    assert_closed_with(&mut client, 1011).await;
    within("on_close", closed.recv()).await.unwrap();
    assert_still_serving(&server).await;
    within("on_close", closed.recv()).await.unwrap();
    shutdown_with_no_more_closes(server, closed).await;
}

/// A panic in `on_close` is contained too: the server keeps serving.
#[tokio::test]
async fn panic_in_on_close_is_contained() {
    log();
    let (app, mut closed) = app();
    let server = TestServer::start(app).await;
    let mut client = server.connect("/ws?panic=close").await;
    client.close(1000, "").await;
    within("on_close", closed.recv()).await.unwrap();
    assert_still_serving(&server).await;
    within("on_close", closed.recv()).await.unwrap();
    shutdown_with_no_more_closes(server, closed).await;
}
