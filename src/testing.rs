//! A test kit: run an [`Application`] in-process on `127.0.0.1:0` and talk to
//! it with squall's own [`Client`].
//!
//! Every wait here is bounded ([`TIMEOUT`]) and fails the test with a clear
//! message instead of hanging it.
//!
//! ```
//! use squall::testing::TestServer;
//! use squall::{Application, Message, WebSocket, WebSocketHandler};
//!
//! struct Echo;
//!
//! impl WebSocketHandler for Echo {
//!     async fn on_message(&mut self, ws: &WebSocket, msg: Message) {
//!         ws.write_message(msg).await.ok();
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (server, mut client) =
//!     TestServer::start_and_connect(Application::new().websocket("/ws", || Echo), "/ws").await;
//! client.send("hi").await.unwrap();
//! assert_eq!(squall::testing::next_text(&mut client).await, "hi");
//! client.close(1000, "").await;
//! server.shutdown().await;
//! # }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use crate::{Application, Client, ClientError, ConnectOptions, Handle, Message};

/// How long each helper here waits before failing the test.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// An application served on `127.0.0.1:0` in the current runtime.
pub struct TestServer {
    addr: SocketAddr,
    handle: Handle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    /// Binds `127.0.0.1:0` and serves `app` on a spawned task.
    ///
    /// # Panics
    ///
    /// If the port cannot be bound.
    pub async fn start(app: Application) -> TestServer {
        let handle = app.handle();
        let server = app.bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = server.local_addr().expect("local address");
        let task = tokio::spawn(server.run());
        TestServer { addr, handle, task }
    }

    /// Starts `app` and connects a client to `path`.
    pub async fn start_and_connect(app: Application, path: &str) -> (TestServer, Client) {
        let server = Self::start(app).await;
        let client = server.connect(path).await;
        (server, client)
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// The application's handle (broadcast, shutdown).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Connects a client to `path`.
    ///
    /// # Panics
    ///
    /// If the upgrade fails.
    pub async fn connect(&self, path: &str) -> Client {
        self.try_connect(path, ConnectOptions::new())
            .await
            .unwrap_or_else(|e| panic!("connect to {path}: {e}"))
    }

    /// Connects with options; the error tells a refused upgrade's status.
    pub async fn try_connect(
        &self,
        path: &str,
        options: ConnectOptions,
    ) -> Result<Client, ClientError> {
        within("connect", options.connect(&self.url(path))).await
    }

    /// Shuts the server down gracefully and waits until it has stopped.
    ///
    /// # Panics
    ///
    /// If it does not stop within the shutdown timeout plus [`TIMEOUT`].
    pub async fn shutdown(self) {
        self.handle.shutdown();
        let _ = within("shutdown", self.task).await;
    }
}

/// Awaits `future`, failing the test after [`TIMEOUT`] with `what`.
///
/// # Panics
///
/// When the time runs out.
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {TIMEOUT:?} waiting for {what}"))
}

/// The next message, failing the test if none arrives in time or the
/// connection closes.
///
/// # Panics
///
/// On timeout or close.
pub async fn next_message(client: &mut Client) -> Message {
    match within("the next message", client.recv()).await {
        Some(message) => message,
        None => panic!(
            "connection closed (code {:?}) while waiting for a message",
            client.close_code()
        ),
    }
}

/// The next message, which must be text.
///
/// # Panics
///
/// On timeout, close, or a binary message.
pub async fn next_text(client: &mut Client) -> String {
    match next_message(client).await {
        Message::Text(text) => text.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Reads until the server closes, and asserts its close code.
///
/// # Panics
///
/// If the connection does not close in time, or closes with another code.
pub async fn assert_closed_with(client: &mut Client, code: u16) {
    within("the close", async {
        while client.recv().await.is_some() {}
    })
    .await;
    assert_eq!(
        client.close_code(),
        Some(code),
        "close code (reason {:?})",
        client.close_reason()
    );
}
