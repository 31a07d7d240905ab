//! The accept loop: connection limits, accept-error backoff, and graceful
//! shutdown.
//!
//! Each accepted connection gets its own task, holding a permit of the
//! connection-limit semaphore for as long as it lives. Shutdown cancels one
//! token that every connection watches; the loop then waits for the tasks to
//! finish their close handshakes and `on_close`, up to a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use super::connection_tasks::ConnectionTasks;
use super::http1;
use crate::engine::BoxFuture;
use crate::runtime::{Handle, Runtime};
use crate::stream::Stream;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// A bound, not yet running server. [`Application::bind`](crate::Application::bind)
/// makes one.
pub struct Server {
    listener: TcpListener,
    app: Runtime,
}

impl Server {
    pub(crate) fn new(listener: TcpListener, app: Runtime) -> Self {
        Server { listener, app }
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle to stop this server.
    pub fn handle(&self) -> Handle {
        self.app.handle()
    }

    /// Serves until [`Handle::shutdown`], Ctrl-C (SIGINT) or SIGTERM, then
    /// shuts down gracefully: what [`Application::listen`](crate::Application::listen)
    /// does once bound. Use it (after [`Application::bind`](crate::Application::bind))
    /// in a binary that needs the address before serving, e.g. one bound to
    /// port 0 that reports its port:
    ///
    /// ```no_run
    /// # async fn run() -> std::io::Result<()> {
    /// let server = squall::Application::new().bind("127.0.0.1:0").await?;
    /// tracing::info!("listening on {}", server.local_addr()?);
    /// server.run_until_signal().await
    /// # }
    /// ```
    pub async fn run_until_signal(self) -> std::io::Result<()> {
        self.shut_down_on_signal();
        self.run().await
    }

    /// Serves `wss://` as [`run_tls`](Self::run_tls), and also stops on
    /// Ctrl-C (SIGINT) or SIGTERM, as [`run_until_signal`](Self::run_until_signal)
    /// (feature `tls`).
    #[cfg(feature = "tls")]
    pub async fn run_tls_until_signal(self, config: crate::TlsConfig) -> std::io::Result<()> {
        self.shut_down_on_signal();
        self.run_tls(config).await
    }

    /// Starts a graceful shutdown on the first SIGINT or SIGTERM; the
    /// watching task ends with the server.
    fn shut_down_on_signal(&self) {
        let handle = self.app.handle();
        tokio::spawn(async move {
            tokio::select! {
                () = crate::shutdown_signal() => {
                    tracing::info!("signal received: shutting down");
                    handle.shutdown();
                }
                () = handle.stopped() => {}
            }
        });
    }

    /// Serves `wss://` (TLS) until [`Handle::shutdown`], then shuts down
    /// gracefully. A client that does not finish its TLS handshake within the
    /// request-head timeout is dropped.
    #[cfg(feature = "tls")]
    pub async fn run_tls(self, config: crate::TlsConfig) -> std::io::Result<()> {
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        accept_loop(self.listener, &self.app, |tcp, remote, app| {
            let accept = acceptor.accept(tcp);
            async move {
                let timeout = app.settings().head_timeout;
                match tokio::time::timeout(timeout, accept).await {
                    Ok(Ok(tls)) => http1::serve_connection(Stream::tls(tls), remote, app).await,
                    Ok(Err(error)) => {
                        tracing::debug!(%remote, %error, "TLS handshake failed");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "TLS handshake timed out");
                        None
                    }
                }
            }
        })
        .await;
        Ok(())
    }

    /// Serves until [`Handle::shutdown`], then shuts down gracefully. No
    /// signal handling: use this when the program decides itself when to
    /// stop (tests, or a binary that handles signals its own way).
    pub async fn run(self) -> std::io::Result<()> {
        accept_loop(self.listener, &self.app, |tcp, remote, app| {
            http1::serve_connection(Stream::tcp(tcp), remote, app)
        })
        .await;
        Ok(())
    }
}

/// Starts the application and waits (bounded) for its broker to be ready,
/// accepts until shutdown handing each connection to `serve`, waits for the
/// connections to finish (bounded by the shutdown timeout), and returns once
/// the application has stopped.
pub(crate) async fn accept_loop<S, Fut>(listener: TcpListener, app: &Runtime, serve: S)
where
    S: Fn(TcpStream, SocketAddr, Runtime) -> Fut,
    Fut: std::future::Future<Output = Option<BoxFuture<()>>> + Send + 'static,
{
    app.start();
    app.broker_ready().await;
    let settings = app.settings().clone();
    let limit = app.connection_limit().clone();
    let tasks = ConnectionTasks::default();
    let mut backoff = Duration::from_millis(5);
    // Made once: a wait made afresh in every turn would join and leave the
    // token's list of waiters (a lock each) for every connection accepted.
    let mut stopping = std::pin::pin!(app.shutdown_token().cancelled());
    loop {
        tokio::select! {
            biased;
            () = &mut stopping => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    backoff = Duration::from_millis(5);
                    let _ = tcp.set_nodelay(true);
                    match limit.clone().try_acquire_owned() {
                        Ok(permit) => {
                            // The HTTP phase is boxed so that its future is
                            // freed once a WebSocket takes over: the task
                            // itself then holds two pointers, not the
                            // largest future it ever ran.
                            let http = Box::pin(serve(tcp, remote, app.clone()));
                            tasks.spawn(app, async move {
                                if let Some(websocket) = http.await {
                                    websocket.await;
                                }
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            tracing::warn!(%remote, "connection limit reached: 503");
                            crate::telemetry::connection_refused("max_connections");
                            tasks.spawn(app, refuse_busy(tcp));
                        }
                    }
                }
                Err(error) if is_per_connection(&error) => {}
                Err(error) => {
                    // Out of file descriptors or memory: back off rather than
                    // spin, doubling up to a second.
                    tracing::warn!(%error, ?backoff, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(settings.shutdown_timeout, tasks.all_ended())
        .await
        .is_err()
    {
        let remaining = tasks.abort_all();
        tracing::warn!(
            remaining,
            "shutdown deadline passed: aborted the remaining connections"
        );
        tasks.all_ended().await;
    }
    app.stopped().await;
}

/// Errors that concern one incoming connection, not the listener.
fn is_per_connection(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    )
}

/// Answers 503 to a connection over the limit, without waiting on it long.
async fn refuse_busy(mut tcp: TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 19\r\nConnection: close\r\n\r\nService Unavailable";
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        tcp.write_all(BUSY).await?;
        tcp.shutdown().await
    })
    .await;
}
