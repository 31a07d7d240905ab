//! A close for a full send queue is logged with the bound that was hit.
//!
//! In a test binary of its own: the capturing subscriber is the process's
//! global one, so it sees every thread and no other test's callsites.

mod common;

use squall::testing::{assert_closed_with, within, TestServer};
use squall::{Application, Message, WebSocket, WebSocketHandler, WebSocketSender};
use tokio::sync::mpsc;

/// Hands each connection's sender to the test.
struct Exposed(mpsc::UnboundedSender<WebSocketSender>);

impl WebSocketHandler for Exposed {
    async fn open(&mut self, ws: &WebSocket) {
        self.0.send(ws.sender()).unwrap();
    }
    async fn on_message(&mut self, _ws: &WebSocket, _msg: Message) {}
}

#[tokio::test]
async fn an_overflow_close_names_the_limit_in_the_log() {
    let log = common::log();
    let (senders, mut senders_rx) = mpsc::unbounded_channel();
    let app = Application::new().websocket("/ws", move || Exposed(senders.clone()));
    let server = TestServer::start(app).await;
    let mut client = server.connect("/ws").await;
    let sender = within("open", senders_rx.recv()).await.unwrap();

    // On this single-threaded runtime nothing drains the queue between
    // these sends: 16 chunks of 64 KiB fill the default 1 MiB.
    let mut accepted = 0;
    let error = loop {
        match sender.send(vec![0u8; 64 * 1024]) {
            Ok(()) => accepted += 1,
            Err(error) => break error,
        }
    };
    assert!(error.is_queue_full(), "{error:?}");
    assert_eq!(accepted, 16);
    let text = log.text();
    let line = text
        .lines()
        .find(|line| line.contains("send queue full"))
        .unwrap_or_else(|| panic!("no overflow line in {text:?}"));
    assert!(line.contains("code=1013"), "{line}");
    assert!(
        line.contains("limit=\"websocket_max_queued_bytes\""),
        "{line}"
    );
    assert!(line.contains("max=1048576"), "{line}");
    assert_closed_with(&mut client, 1013).await;
    server.shutdown().await;
}
