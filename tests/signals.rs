//! `Server::run_until_signal`: a server bound to port 0 reports its address
//! and still stops gracefully on SIGTERM, as `listen` does.
//!
//! In a test binary of its own: it sends SIGTERM to its own process.

#![cfg(unix)]

use std::time::Duration;

use squall::testing::{assert_closed_with, connect, next_text, within};
use squall::{Application, Message, WebSocket, WebSocketHandler};
use tokio::signal::unix::{signal, SignalKind};

struct Echo;

impl WebSocketHandler for Echo {
    async fn on_message(&mut self, ws: &WebSocket, message: Message) {
        ws.write_message(message).await.ok();
    }
}

#[tokio::test]
async fn run_until_signal_reports_its_address_and_stops_on_sigterm() {
    // Listening here first makes SIGTERM a tokio event for the whole
    // process, so it cannot kill the test whatever the timing.
    let mut sigterm = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let app = Application::new().websocket("/ws", || Echo);
    let handle = app.handle();
    let server = app.bind("127.0.0.1:0").await.expect("bind");
    let addr = server.local_addr().expect("local address");
    assert_ne!(addr.port(), 0);
    let mut running = tokio::spawn(server.run_until_signal());

    let mut client = connect(addr, "/ws").await;
    client.send("hi").await.unwrap();
    assert_eq!(next_text(&mut client).await, "hi");
    assert!(!handle.is_shutting_down());

    // The server's signal watcher may not be registered yet when the first
    // SIGTERM arrives: raise it again until the server stops.
    let result = within("the server to stop on SIGTERM", async {
        loop {
            // SAFETY: kill(2) on our own process, whose SIGTERM tokio handles.
            assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGTERM) }, 0);
            sigterm.recv().await;
            if let Ok(result) = tokio::time::timeout(Duration::from_millis(200), &mut running).await
            {
                return result;
            }
        }
    })
    .await;
    result.expect("server task").expect("server result");
    assert!(handle.is_shutting_down());
    // Graceful: the open socket got 1001 before the server returned.
    assert_closed_with(&mut client, 1001).await;
}
