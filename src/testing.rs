//! A test kit: run an [`Application`] in-process on `127.0.0.1:0`, or reach
//! a server running in another process by its address, and talk to it with
//! squall's own [`Client`].
//!
//! Every wait here is bounded and fails the test with a clear message instead
//! of hanging it. The bound is [`default_timeout`] (10 s, [`TIMEOUT`], unless
//! [`set_default_timeout`] or the `SQUALL_TEST_TIMEOUT` environment variable,
//! in seconds, says otherwise); a [`Wait`] sets it for the calls made
//! through it.
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
//!
//! A binary's own integration test starts the binary, learns its address
//! (from its log, or by choosing a port), and uses the same helpers:
//!
//! ```no_run
//! use std::time::Duration;
//! use squall::testing::{assert_closed_with, next_text, Wait};
//!
//! # async fn run() {
//! let addr: std::net::SocketAddr = "127.0.0.1:8888".parse().unwrap();
//! // The process may still be starting: retry refused connections for 30 s.
//! let mut client = Wait::new(Duration::from_secs(30))
//!     .connect_when_listening(addr, "/socket/")
//!     .await;
//! client.send("hi").await.unwrap();
//! assert_eq!(next_text(&mut client).await, "You said: hi");
//! // ... stop the process (SIGTERM), then:
//! assert_closed_with(&mut client, 1001).await;
//! # }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{Application, Client, ClientError, ConnectOptions, Handle, Message};

/// The default bound on each wait: 10 s.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The bound in force, in milliseconds; 0 until first read or set.
static DEFAULT_TIMEOUT_MS: AtomicU64 = AtomicU64::new(0);

/// The bound the free functions here put on each wait: what
/// [`set_default_timeout`] set, else `SQUALL_TEST_TIMEOUT` (seconds, may be
/// fractional) from the environment, else [`TIMEOUT`].
pub fn default_timeout() -> Duration {
    let ms = DEFAULT_TIMEOUT_MS.load(Ordering::Relaxed);
    if ms != 0 {
        return Duration::from_millis(ms);
    }
    let timeout = std::env::var("SQUALL_TEST_TIMEOUT")
        .ok()
        .and_then(|secs| secs.trim().parse::<f64>().ok())
        .filter(|secs| secs.is_finite() && *secs > 0.0)
        .map_or(TIMEOUT, Duration::from_secs_f64);
    let _ = DEFAULT_TIMEOUT_MS.compare_exchange(
        0,
        millis(timeout),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    timeout
}

/// Sets the bound of every later wait made through the free functions here
/// (and [`TestServer`]), for the whole process: e.g. longer on a slow CI
/// machine. For one call, use a [`Wait`] instead.
pub fn set_default_timeout(timeout: Duration) {
    DEFAULT_TIMEOUT_MS.store(millis(timeout), Ordering::Relaxed);
}

fn millis(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The test kit's waits with a bound of your choosing: the same helpers as
/// the free functions of this module, each failing the test once its
/// timeout has passed.
///
/// ```no_run
/// # async fn run(client: &mut squall::Client) {
/// use std::time::Duration;
/// use squall::testing::Wait;
///
/// let quick = Wait::new(Duration::from_millis(500));
/// let text = quick.next_text(client).await;
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    timeout: Duration,
}

impl Default for Wait {
    /// A wait bounded by [`default_timeout`].
    fn default() -> Self {
        Wait::new(default_timeout())
    }
}

impl Wait {
    /// Waits bounded by `timeout`.
    pub const fn new(timeout: Duration) -> Self {
        Wait { timeout }
    }

    /// The bound.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Awaits `future`, failing the test with `what` when the time runs out.
    ///
    /// # Panics
    ///
    /// When the time runs out.
    pub async fn within<F: Future>(&self, what: &str, future: F) -> F::Output {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, future)
            .await
            .unwrap_or_else(|_| panic!("timed out after {timeout:?} waiting for {what}"))
    }

    /// Connects a client to `path` on the server at `addr` (in this process
    /// or another).
    ///
    /// # Panics
    ///
    /// If the upgrade fails or takes too long.
    pub async fn connect(&self, addr: SocketAddr, path: &str) -> Client {
        self.try_connect(addr, path, ConnectOptions::new())
            .await
            .unwrap_or_else(|e| panic!("connect to {path} on {addr}: {e}"))
    }

    /// Connects with options; the error tells a refused upgrade's status,
    /// headers and body.
    ///
    /// # Panics
    ///
    /// If connecting takes too long.
    pub async fn try_connect(
        &self,
        addr: SocketAddr,
        path: &str,
        options: ConnectOptions,
    ) -> Result<Client, ClientError> {
        let url = format!("ws://{addr}{path}");
        self.within(&format!("connecting to {url}"), options.connect(&url))
            .await
    }

    /// Connects to a server that may still be starting (another process):
    /// a refused connection is tried again, with a short growing pause,
    /// until it succeeds or the time runs out.
    ///
    /// # Panics
    ///
    /// If the server is not listening in time, or refuses the upgrade.
    pub async fn connect_when_listening(&self, addr: SocketAddr, path: &str) -> Client {
        let url = format!("ws://{addr}{path}");
        self.within(&format!("a server listening at {addr}"), async {
            let mut pause = Duration::from_millis(5);
            loop {
                match ConnectOptions::new().connect(&url).await {
                    Ok(client) => return client,
                    Err(error @ ClientError::Refused(_)) => {
                        panic!("connect to {url}: {error}")
                    }
                    Err(_) => {
                        // Nothing to wait on across processes: poll, backing
                        // off to a tenth of a second.
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(100));
                    }
                }
            }
        })
        .await
    }

    /// The next message, failing the test if none arrives in time or the
    /// connection closes.
    ///
    /// # Panics
    ///
    /// On timeout or close.
    pub async fn next_message(&self, client: &mut Client) -> Message {
        match self.within("the next message", client.recv()).await {
            Some(message) => message,
            None => panic!(
                "connection closed (code {:?}, reason {:?}) while waiting for a message",
                client.close_code(),
                client.close_reason()
            ),
        }
    }

    /// The next message, which must be text.
    ///
    /// # Panics
    ///
    /// On timeout, close, or a binary message.
    pub async fn next_text(&self, client: &mut Client) -> String {
        match self.next_message(client).await {
            Message::Text(text) => text.to_string(),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// Reads until the server closes, and asserts its close code.
    ///
    /// # Panics
    ///
    /// If the connection does not close in time, or closes with another
    /// code.
    pub async fn assert_closed_with(&self, client: &mut Client, code: u16) {
        self.within("the close", async {
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
}

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
        connect(self.addr, path).await
    }

    /// Connects with options; the error tells a refused upgrade's status.
    pub async fn try_connect(
        &self,
        path: &str,
        options: ConnectOptions,
    ) -> Result<Client, ClientError> {
        Wait::default().try_connect(self.addr, path, options).await
    }

    /// Shuts the server down gracefully and waits until it has stopped.
    ///
    /// # Panics
    ///
    /// If it does not stop within the shutdown timeout plus
    /// [`default_timeout`].
    pub async fn shutdown(self) {
        self.handle.shutdown();
        let _ = within("shutdown", self.task).await;
    }
}

/// Connects a client to `path` on the server at `addr`, which may run in
/// another process: [`Wait::connect`] with the default bound.
///
/// # Panics
///
/// If the upgrade fails or takes too long.
pub async fn connect(addr: SocketAddr, path: &str) -> Client {
    Wait::default().connect(addr, path).await
}

/// Awaits `future`, failing the test after [`default_timeout`] with `what`.
///
/// # Panics
///
/// When the time runs out.
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    Wait::default().within(what, future).await
}

/// The next message, failing the test if none arrives in time or the
/// connection closes.
///
/// # Panics
///
/// On timeout or close.
pub async fn next_message(client: &mut Client) -> Message {
    Wait::default().next_message(client).await
}

/// The next message, which must be text.
///
/// # Panics
///
/// On timeout, close, or a binary message.
pub async fn next_text(client: &mut Client) -> String {
    Wait::default().next_text(client).await
}

/// Reads until the server closes, and asserts its close code.
///
/// # Panics
///
/// If the connection does not close in time, or closes with another code.
pub async fn assert_closed_with(client: &mut Client, code: u16) {
    Wait::default().assert_closed_with(client, code).await
}
