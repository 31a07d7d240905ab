//! The [`Application`]: routes, settings, and starting the server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, ToSocketAddrs};

use crate::broker::Broker;
use crate::engine::{Env, ShutdownSignal};
use crate::front::listener;
use crate::front::server::Server;
use crate::handler::WebSocketHandler;
use crate::history::History;
use crate::hub::Hub;
use crate::router::{Route, Router};
use crate::runtime::{Handle, Runtime};
use crate::settings::{OverflowPolicy, Rate, RateLimitPolicy, Settings};

/// A squall web application: Tornado's `tornado.web.Application`.
///
/// Register WebSocket endpoints and plain pages by path, adjust settings
/// (each method states its default), then run it one of three ways:
///
/// | you want | call |
/// |---|---|
/// | a server binary on a known address | [`listen(addr)`](Self::listen): binds, logs the address, serves until Ctrl-C, SIGTERM or [`Handle::shutdown`] |
/// | the same, but the address first (port 0, or to report it) | [`bind(addr)`](Self::bind), [`Server::local_addr`], then [`Server::run_until_signal`] |
/// | to stop it yourself (tests, an embedding program with its own signal handling) | [`bind`](Self::bind) + [`Server::run`], or [`serve(listener)`](Self::serve); stop with [`Handle::shutdown`] |
///
/// ```no_run
/// use squall::{Application, Message, WebSocket, WebSocketHandler};
///
/// struct Echo;
///
/// impl WebSocketHandler for Echo {
///     async fn on_message(&mut self, ws: &WebSocket, msg: Message) {
///         ws.write_message(msg).await.ok();
///     }
/// }
///
/// # async fn run() -> std::io::Result<()> {
/// Application::new()
///     .websocket("/socket/", || Echo)
///     .page("/", "<h1>hello</h1>")
///     .listen("127.0.0.1:8888")
///     .await
/// # }
/// ```
pub struct Application {
    router: Router,
    settings: Settings,
    hub: Arc<Hub>,
    shutdown: ShutdownSignal,
    broker: Option<Arc<dyn Broker>>,
    history: Vec<(String, History)>,
}

impl Default for Application {
    fn default() -> Self {
        Self::new()
    }
}

impl Application {
    /// An application with no routes and default settings.
    pub fn new() -> Self {
        Application {
            router: Router::default(),
            settings: Settings::default(),
            hub: Arc::default(),
            shutdown: ShutdownSignal::default(),
            broker: None,
            history: Vec::new(),
        }
    }

    /// Routes `path` to a WebSocket handler. `factory` makes a fresh handler
    /// for every connection; capture shared state in it (the Rust form of
    /// Tornado's `initialize(**kwargs)`).
    ///
    /// Paths may capture parameters: `/chat/{room}`, read with
    /// [`WebSocket::path_param`](crate::WebSocket::path_param).
    ///
    /// # Panics
    ///
    /// If `path` is invalid or conflicts with a route already added.
    pub fn websocket<F, H>(mut self, path: &str, factory: F) -> Self
    where
        F: Fn() -> H + Send + Sync + 'static,
        H: WebSocketHandler,
    {
        self.router.insert(path, Route::websocket(path, factory));
        self
    }

    /// Serves a static HTML page at `path` (GET and HEAD, `text/html`).
    ///
    /// # Panics
    ///
    /// If `path` is invalid or conflicts with a route already added.
    pub fn page(self, path: &str, html: impl Into<Bytes>) -> Self {
        let html: Bytes = html.into();
        self.get(path, move |_request| {
            let html = html.clone();
            async move {
                let mut response = http::Response::new(html);
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/html; charset=utf-8"),
                );
                response
            }
        })
    }

    /// Routes GET and HEAD requests for `path` to `handler`, which returns
    /// the whole response. Other methods get 405. The request carries its
    /// path parameters and peer address: see [`RequestExt`](crate::RequestExt).
    ///
    /// ```
    /// use squall::prelude::*; // Application, http, and RequestExt for path_param
    ///
    /// let app = Application::new().get("/hello/{name}", |request: http::Request<()>| async move {
    ///     let name = request.path_param("name").unwrap_or("world").to_owned();
    ///     http::Response::new(format!("hello {name}"))
    /// });
    /// ```
    ///
    /// # Panics
    ///
    /// If `path` is invalid or conflicts with a route already added.
    pub fn get<F, Fut, B>(mut self, path: &str, handler: F) -> Self
    where
        F: Fn(http::Request<()>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = http::Response<B>> + Send + 'static,
        B: Into<Bytes>,
    {
        self.router.insert(path, Route::page(handler));
        self
    }

    /// Sends a ping every `interval` on every WebSocket (Tornado's
    /// `websocket_ping_interval`). Default: no keep-alive pings.
    pub fn websocket_ping_interval(mut self, interval: Duration) -> Self {
        self.settings.ping_interval = Some(interval);
        self
    }

    /// Closes a connection (code 1001, then `on_close`) that has not answered
    /// a keep-alive ping within `timeout`. Default: equal to the ping
    /// interval, and never longer than it.
    pub fn websocket_ping_timeout(mut self, timeout: Duration) -> Self {
        self.settings.ping_timeout = Some(timeout);
        self
    }

    /// The largest message (and frame) accepted, in bytes; a bigger one is
    /// refused at its frame header with close code 1009. Default: 10 MiB,
    /// as Tornado.
    pub fn websocket_max_message_size(mut self, bytes: usize) -> Self {
        self.settings.max_message_size = bytes;
        self
    }

    /// The size of each connection's own read buffer, which it holds for
    /// life. Default: 1 KiB (tungstenite's default, 128 KiB, would cost that
    /// much resident memory on every idle connection). Large messages do not
    /// suffer from a small buffer: a frame larger than it is read straight
    /// into room for all of it, and while the socket has a backlog the
    /// connection reads ahead in 64 KiB chunks into a buffer it frees after
    /// a second without input.
    pub fn websocket_read_buffer_size(mut self, bytes: usize) -> Self {
        self.settings.read_buffer_size = bytes.max(16);
        self
    }

    /// How many bytes of combined replies are collected before they are
    /// written without waiting for the input to run dry. Default: 64 KiB.
    pub fn websocket_write_buffer_size(mut self, bytes: usize) -> Self {
        self.settings.write_buffer_size = bytes;
        self
    }

    /// The most messages one connection's send queue holds. Default: 1024.
    ///
    /// Size it for the burst a connection must absorb while its client is
    /// not reading: messages per second sent to one connection × the longest
    /// stall to survive, in seconds (README, "Sizing the send queue"). Past
    /// it, a non-waiting send meets the [overflow policy](Self::websocket_overflow).
    ///
    /// ```
    /// // 2 000 updates/s of 1 KiB each, surviving a 1 s stall:
    /// let app = squall::Application::new()
    ///     .websocket_max_queued_messages(2_048)
    ///     .websocket_max_queued_bytes(2 * 1024 * 1024);
    /// # drop(app);
    /// ```
    ///
    /// Frames squall writes on its own (pongs, pings, close frames) count
    /// against this bound, and [`websocket_max_queued_bytes`](Self::websocket_max_queued_bytes),
    /// until they reach the socket; while the bound is reached the
    /// connection stops reading, so a peer that floods pings and reads
    /// nothing meets TCP backpressure.
    pub fn websocket_max_queued_messages(mut self, messages: usize) -> Self {
        self.settings.max_queued_messages = messages.max(1);
        self
    }

    /// The most payload bytes one connection's send queue holds (a single
    /// larger message is still accepted into an empty queue). Default: 1 MiB.
    ///
    /// Size it as the burst in messages × their usual size; it is also the
    /// most memory a stalled connection holds (a broadcast's payload is
    /// stored once, however many queues hold it).
    pub fn websocket_max_queued_bytes(mut self, bytes: usize) -> Self {
        self.settings.max_queued_bytes = bytes.max(1);
        self
    }

    /// What a non-waiting send does to a connection whose queue is full.
    /// Default: [`OverflowPolicy::Close`] with 1013.
    pub fn websocket_overflow(mut self, policy: OverflowPolicy) -> Self {
        self.settings.overflow = policy;
        self
    }

    /// Limits how many messages each connection may send a second: a token
    /// bucket refilled at `rate` a second holding at most `burst` (the
    /// messages that may arrive back to back after a quiet spell). Data
    /// messages count; control frames do not. What happens past the limit
    /// is [`websocket_rate_limit_policy`](Self::websocket_rate_limit_policy).
    /// Default: no limit.
    ///
    /// ```
    /// use squall::{Application, RateLimitPolicy};
    ///
    /// let app = Application::new()
    ///     .websocket_max_messages_per_second(50, 100)
    ///     .websocket_max_bytes_per_second(256 * 1024, 1024 * 1024)
    ///     .websocket_rate_limit_policy(RateLimitPolicy::Close);
    /// ```
    pub fn websocket_max_messages_per_second(mut self, rate: u32, burst: u32) -> Self {
        self.settings.input_limits.messages = Some(Rate {
            per_second: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
        });
        self
    }

    /// Limits how many payload bytes each connection may send a second: a
    /// token bucket refilled at `rate` bytes a second holding at most
    /// `burst`. A message larger than what is left still passes, and the
    /// next one waits until the debt is paid off, so over time the rate
    /// holds whatever the message sizes. Default: no limit.
    pub fn websocket_max_bytes_per_second(mut self, rate: u64, burst: u64) -> Self {
        self.settings.input_limits.bytes = Some(Rate {
            per_second: rate.max(1) as f64,
            burst: burst as f64,
        });
        self
    }

    /// What a connection over its input rate limit does:
    /// [`RateLimitPolicy::Pause`] (stop reading until the bucket refills:
    /// TCP backpressure on the peer) or [`RateLimitPolicy::Close`] (close
    /// with 1008 and a reason). Default: `Pause`.
    pub fn websocket_rate_limit_policy(mut self, policy: RateLimitPolicy) -> Self {
        self.settings.input_limits.policy = policy;
        self
    }

    /// How long a closing connection waits for the peer's close frame (and
    /// for its queue to drain) before dropping it. Default: 5 s.
    pub fn websocket_close_timeout(mut self, timeout: Duration) -> Self {
        self.settings.close_timeout = timeout;
        self
    }

    /// The origins the default
    /// [`check_origin`](crate::WebSocketHandler::check_origin) accepts for
    /// cross-origin requests, e.g. `"https://app.example.com"`. Default: none.
    pub fn trusted_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.settings.trusted_origins = origins.into_iter().map(Into::into).collect();
        self
    }

    /// The largest request head accepted; a larger one gets 431. Default:
    /// 16 KiB.
    pub fn max_request_head_size(mut self, bytes: usize) -> Self {
        self.settings.max_head_size = bytes.max(64);
        self
    }

    /// How long a client may take to send a request head (and how long an
    /// idle keep-alive connection is kept); slower ones are dropped.
    /// Default: 10 s.
    pub fn request_head_timeout(mut self, timeout: Duration) -> Self {
        self.settings.head_timeout = timeout;
        self
    }

    /// How long writing one HTTP response may take: a page, the `101` of an
    /// upgrade, or an error status. A client that stops reading is dropped
    /// once this passes, instead of holding its connection slot. Default:
    /// 10 s (as [`request_head_timeout`](Self::request_head_timeout)).
    pub fn response_write_timeout(mut self, timeout: Duration) -> Self {
        self.settings.write_timeout = timeout;
        self
    }

    /// The listen backlog of [`bind`](Self::bind) and [`listen`](Self::listen):
    /// how many connections the kernel completes and holds while the accept
    /// loop catches up. A burst of connects beyond it goes unanswered until
    /// the client retries its SYN (a second or more later). Clamped by the
    /// kernel's `net.core.somaxconn`; it has no effect on a listener passed to
    /// [`serve`](Self::serve). Default: 1024 (the tokio and std default is 128).
    pub fn listen_backlog(mut self, backlog: u32) -> Self {
        self.settings.listen_backlog = backlog.max(1);
        self
    }

    /// The most connections served at once; past it, new connections get 503.
    /// Default: 25 000.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.settings.max_connections = connections.max(1);
        self
    }

    /// The most WebSocket connections (open, or in their handshake) from one
    /// client IP address; past it, the upgrade request gets 429 Too Many
    /// Requests with `Retry-After: 5`. The address is the TCP peer's, or
    /// the forwarded one behind a [trusted proxy](Self::trusted_proxies).
    /// Plain page requests are not counted. Default: no cap per address
    /// (only [`max_connections`](Self::max_connections)).
    pub fn max_connections_per_ip(mut self, connections: usize) -> Self {
        self.settings.max_connections_per_ip = Some(connections.max(1));
        self
    }

    /// Reverse proxies whose `Forwarded` / `X-Forwarded-For` headers are
    /// believed: a request whose TCP peer is one of these addresses is
    /// taken to come from the client the headers name (the rightmost
    /// address that is not itself a trusted proxy). That address is what
    /// [`WebSocket::remote_addr`](crate::WebSocket::remote_addr), the
    /// access line and [`max_connections_per_ip`](Self::max_connections_per_ip)
    /// see; its port is 0 unless `Forwarded` gave one. Default: none, the
    /// headers are never read (any client could write them).
    ///
    /// ```
    /// use std::net::{IpAddr, Ipv4Addr};
    ///
    /// let app = squall::Application::new()
    ///     .trusted_proxies([IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    /// ```
    pub fn trusted_proxies(mut self, proxies: impl IntoIterator<Item = std::net::IpAddr>) -> Self {
        self.settings.trusted_proxies = proxies.into_iter().collect();
        self
    }

    /// Times `on_message` for the `squall_handler_seconds` histogram
    /// (feature `metrics`) on one message in every `n` of each connection:
    /// its first message, then message `n + 1`, `2n + 1`… Untimed messages
    /// cost no clock read and no histogram sample. The choice does not
    /// depend on how long a handler takes, so the histogram's quantiles and
    /// mean stay unbiased, but its `_count` is the number of messages timed;
    /// `squall_messages_received_total` counts every message. Default: 8;
    /// 1 times every message (0 is taken as 1). Without the feature it has
    /// no effect.
    ///
    /// ```
    /// // every message timed: exact counts, at about 50 ns a message more
    /// // with the Prometheus recorder
    /// let app = squall::Application::new().handler_time_sampling(1);
    /// # drop(app);
    /// ```
    pub fn handler_time_sampling(mut self, n: u32) -> Self {
        self.settings.handler_time_sampling = n.max(1);
        self
    }

    /// How long a graceful shutdown waits for connections to finish their
    /// close handshakes and `on_close`. Default: 10 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.settings.shutdown_timeout = timeout;
        self
    }

    /// How long [`prepare`](crate::WebSocketHandler::prepare) may take before
    /// the client gets 503. Default: 10 s.
    pub fn prepare_timeout(mut self, timeout: Duration) -> Self {
        self.settings.prepare_timeout = timeout;
        self
    }

    /// Carries broadcasts to and from other server processes through
    /// `broker`, e.g. `.broker(RedisBroker::new(url)?)` (feature `redis`).
    /// Local delivery is unchanged and never waits on the broker. Default:
    /// none, groups are in-process only. The broker starts when the server
    /// starts running, which then waits for it to be ready (see
    /// [`broker_ready_timeout`](Self::broker_ready_timeout)) before it
    /// accepts connections; a later call replaces an earlier one.
    pub fn broker(mut self, broker: impl Broker) -> Self {
        self.broker = Some(Arc::new(broker));
        self
    }

    /// How long a server, when it starts, waits for the
    /// [`broker`](Self::broker) to be ready (a `RedisBroker` subscribed)
    /// before it accepts connections; clients meanwhile wait in the listen
    /// backlog. Past it, the server serves anyway and logs a warning (local
    /// delivery does not need the broker). Default: 5 s; zero skips the
    /// wait. (A tower `Service` cannot hold requests back: with
    /// `into_service`, await `RedisBroker::ready` yourself before serving.)
    pub fn broker_ready_timeout(mut self, timeout: Duration) -> Self {
        self.settings.broker_ready_timeout = timeout;
        self
    }

    /// Keeps `history` for every group whose name starts with `prefix` (""
    /// for all groups; the longest matching prefix wins), so that clients
    /// can recover what they missed: see [`History`] and
    /// [`WebSocket::join_with_history`](crate::WebSocket::join_with_history).
    /// Messages to such groups reach their members in a JSON envelope with
    /// their offset. With a broker that keeps history (the Redis broker
    /// does), the history lives there and messages reach even local members
    /// through it. Default: no group keeps history.
    pub fn history(mut self, prefix: &str, history: History) -> Self {
        self.history.retain(|(p, _)| p != prefix);
        self.history.push((prefix.to_owned(), history));
        self
    }

    /// A handle to stop the application, or broadcast, from any task.
    pub fn handle(&self) -> Handle {
        Handle::new(self.hub.clone(), self.shutdown.clone())
    }

    /// Freezes the builder into the value its fronts share.
    pub(crate) fn into_runtime(self) -> Runtime {
        // The hub is fresh per application and this runs once (it consumes
        // the application), so nothing is set yet.
        self.hub.configure(self.history, self.broker);
        let env = Env {
            settings: Arc::new(self.settings),
            shutdown: self.shutdown,
            hub: self.hub,
        };
        Runtime::new(self.router, env)
    }

    /// Binds `addr` and returns the [`Server`], whose address can be read
    /// before it runs (bind port 0 to let the system choose). Then
    /// [`Server::run_until_signal`] serves as [`listen`](Self::listen) does,
    /// Ctrl-C and SIGTERM included; [`Server::run`] serves until
    /// [`Handle::shutdown`] only.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> std::io::Result<Server> {
        let listener = listener::bind(addr, self.settings.listen_backlog).await?;
        Ok(Server::new(listener, self.into_runtime()))
    }

    /// Serves connections from an already-bound listener until
    /// [`Handle::shutdown`] is called, then shuts down gracefully (no signal
    /// handling: for that, `Server::run_until_signal` after
    /// [`bind`](Self::bind)).
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        Server::new(listener, self.into_runtime()).run().await
    }

    /// Binds `addr` and serves until [`Handle::shutdown`], Ctrl-C (SIGINT) or
    /// SIGTERM, then shuts down gracefully: every socket gets close 1001 after
    /// its queued messages, every `on_close` runs, and this returns when all
    /// are done or [`shutdown_timeout`](Self::shutdown_timeout) has passed.
    pub async fn listen(self, addr: impl ToSocketAddrs) -> std::io::Result<()> {
        let server = self.bind(addr).await?;
        tracing::info!("listening on {}", server.local_addr()?);
        server.run_until_signal().await
    }
}

#[cfg(feature = "hyper")]
impl Application {
    /// This application as a tower `Service` (feature `hyper`), to mount in
    /// axum (`.route_service(..)`, `.nest_service(..)`) or serve with hyper,
    /// over HTTP/1.1 and HTTP/2. See [`AppService`](crate::AppService).
    pub fn into_service(self) -> crate::AppService {
        crate::AppService::new(self.into_runtime())
    }
}

#[cfg(feature = "tls")]
impl Application {
    /// Serves `wss://` on an already-bound listener until
    /// [`Handle::shutdown`] (feature `tls`).
    pub async fn serve_tls(
        self,
        listener: TcpListener,
        config: crate::TlsConfig,
    ) -> std::io::Result<()> {
        Server::new(listener, self.into_runtime())
            .run_tls(config)
            .await
    }

    /// Binds `addr` and serves `wss://` until [`Handle::shutdown`], Ctrl-C or
    /// SIGTERM, as [`listen`](Self::listen) does for plain `ws://`
    /// (feature `tls`). See [`tls_config_from_pem`](crate::tls_config_from_pem).
    pub async fn listen_tls(
        self,
        addr: impl ToSocketAddrs,
        config: crate::TlsConfig,
    ) -> std::io::Result<()> {
        let server = self.bind(addr).await?;
        tracing::info!("listening (TLS) on {}", server.local_addr()?);
        server.run_tls_until_signal(config).await
    }
}
