//! The running form of an [`Application`](crate::Application): what its
//! fronts share once the builder is done (routes, the engine's environment,
//! the connections in flight), and the [`Handle`] users keep to stop it or
//! broadcast.
//!
//! The builder only produces this value; the fronts (`front/`) and, through
//! [`Env`], the engine use it, so nothing below the builder depends on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client_limits::ClientLimits;
use crate::engine::{Env, ShutdownSignal};
use crate::hub::Hub;
use crate::interest::InterestGuard;
use crate::message::Message;
use crate::presence::{Member, PresenceError, PresenceWatch};
use crate::router::Router;
use crate::settings::Settings;

/// A cheap, shared reference to a running application.
#[derive(Clone)]
pub(crate) struct Runtime(Arc<Inner>);

struct Inner {
    router: Router,
    env: Env,
    /// Every connection task of every front, so that a graceful shutdown
    /// can wait for them all.
    connections: TaskTracker,
    /// `max_connections`, shared by the fronts: the standalone server holds
    /// a permit per TCP connection, the `Service` one per WebSocket.
    limit: Arc<Semaphore>,
    started: AtomicBool,
    /// The per-address connection counts, when a cap is set.
    client_limits: Option<Arc<ClientLimits>>,
}

impl Runtime {
    pub fn new(router: Router, env: Env) -> Self {
        let limit = Arc::new(Semaphore::new(env.settings.max_connections));
        let client_limits = env.settings.max_connections_per_ip.map(ClientLimits::new);
        Runtime(Arc::new(Inner {
            router,
            client_limits,
            env,
            connections: TaskTracker::new(),
            limit,
            started: AtomicBool::new(false),
        }))
    }

    pub fn router(&self) -> &Router {
        &self.0.router
    }

    pub fn env(&self) -> &Env {
        &self.0.env
    }

    /// The per-address connection cap, if one is set: every front takes a
    /// slot before a WebSocket handshake and keeps it for the connection.
    pub fn client_limits(&self) -> Option<&Arc<ClientLimits>> {
        self.0.client_limits.as_ref()
    }

    pub fn settings(&self) -> &Arc<Settings> {
        &self.0.env.settings
    }

    pub fn shutdown_token(&self) -> &CancellationToken {
        self.0.env.shutdown.token()
    }

    pub fn handle(&self) -> Handle {
        Handle {
            hub: self.0.env.hub.clone(),
            shutdown: self.0.env.shutdown.clone(),
        }
    }

    /// The connection limit's semaphore.
    pub fn connection_limit(&self) -> &Arc<Semaphore> {
        &self.0.limit
    }

    /// Wraps a connection's future so that shutdown waits for it.
    pub fn track<F: std::future::Future>(
        &self,
        connection: F,
    ) -> tokio_util::task::task_tracker::TrackedFuture<F> {
        self.0.connections.track_future(connection)
    }

    /// Starts what lives as long as the application, once, from inside the
    /// tokio runtime (the first front to run calls it): the broker, and the
    /// task that marks the application stopped once a shutdown has been
    /// asked for and every connection has finished (or the shutdown timeout
    /// has passed).
    pub fn start(&self) {
        if self.0.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let env = &self.0.env;
        env.hub.mark_started();
        env.hub.start_broker();
        let inner = self.0.clone();
        tokio::spawn(async move {
            let env = &inner.env;
            env.shutdown.token().cancelled().await;
            inner.connections.close();
            let all_done = inner.connections.wait();
            if tokio::time::timeout(env.settings.shutdown_timeout, all_done)
                .await
                .is_err()
            {
                tracing::warn!(
                    remaining = inner.connections.len(),
                    "shutdown deadline passed with connections still open"
                );
            }
            env.hub.mark_stopped();
        });
    }

    /// Waits until the broker, if any, receives what other processes
    /// publish, bounded by `broker_ready_timeout` and by shutdown; past the
    /// bound, warns and goes on: local delivery does not need the broker.
    pub async fn broker_ready(&self) {
        let env = &self.0.env;
        let timeout = env.settings.broker_ready_timeout;
        let Some(ready) = env.hub.broker_ready() else {
            return;
        };
        if timeout.is_zero() {
            return;
        }
        tokio::select! {
            biased;
            () = env.shutdown.token().cancelled() => {}
            ready = tokio::time::timeout(timeout, ready) => {
                if ready.is_err() {
                    tracing::warn!(
                        ?timeout,
                        "broker not ready in time: serving; broadcasts from other processes may be missed until it is"
                    );
                }
            }
        }
    }

    /// Resolves once the application has stopped.
    pub async fn stopped(&self) {
        self.0.env.hub.stopped().await;
    }
}

/// Stops an application from any task, and broadcasts to its groups.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// let app = squall::Application::new();
/// let handle = app.handle();
/// let server = app.bind("127.0.0.1:0").await?;
/// let running = tokio::spawn(server.run());
/// handle.shutdown();
/// handle.stopped().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Handle {
    hub: Arc<Hub>,
    shutdown: ShutdownSignal,
}

impl Handle {
    pub(crate) fn new(hub: Arc<Hub>, shutdown: ShutdownSignal) -> Self {
        Handle { hub, shutdown }
    }

    /// Starts a graceful shutdown: stop accepting, close every socket with
    /// 1001 after its queued messages, run every `on_close`. Returns at once;
    /// await [`stopped`](Self::stopped) to know when it is over. Sockets
    /// opened through the tower `Service` are closed too.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Sends `message` to every member of `group` from any task. The message
    /// is serialised once and shared by every receiver; each receiver gets a
    /// non-waiting send, so a slow one meets the overflow policy
    /// ([`Application::websocket_overflow`](crate::Application::websocket_overflow))
    /// and never holds up the others. With a
    /// [`broker`](crate::Application::broker), the message is also published
    /// to the other processes (without waiting). Returns how many local
    /// members accepted it.
    pub fn broadcast(&self, group: &str, message: impl Into<Message>) -> usize {
        self.hub.broadcast(group, message.into(), None)
    }

    /// How many local connections are in `group`.
    pub fn group_size(&self, group: &str) -> usize {
        self.hub.groups().len(group)
    }

    /// The members of `group`, each user once with their connection count,
    /// sorted by user id: over every process with a broker that keeps
    /// presence (the Redis broker does), this process's otherwise. See
    /// [`Presence`](crate::Presence).
    pub async fn members(&self, group: &str) -> Result<Vec<Member>, PresenceError> {
        self.hub.members(group).await
    }

    /// Follows the presence changes of `group` (see
    /// [`PresenceWatch`](crate::PresenceWatch)). While it lives, this process
    /// wants the group's messages (a broker that subscribes per group stays
    /// subscribed).
    pub fn watch_presence(&self, group: &str) -> PresenceWatch {
        let guard = InterestGuard::new(self.hub.interest(), group);
        self.hub.presence().watch(group).wanting(guard)
    }

    /// Whether a shutdown has been asked for.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Waits until the application has stopped: a shutdown was asked for and
    /// every connection, from every front, has finished (or the shutdown
    /// deadline passed). An application that never served returns as soon
    /// as the shutdown is asked for.
    pub async fn stopped(&self) {
        tokio::select! {
            () = self.hub.stopped() => {}
            () = async {
                self.shutdown.token().cancelled().await;
                if self.hub.is_started() {
                    std::future::pending::<()>().await;
                }
            } => {}
        }
    }
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
