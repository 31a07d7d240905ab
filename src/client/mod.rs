//! A WebSocket client: Tornado's `websocket_connect`, with the same
//! [`Message`] type and the same bounded send queue as the server side.
//!
//! tokio-tungstenite does the handshake, over squall's own TCP or TLS
//! stream behind a fence (`fence.rs`) that hands it the response head and
//! keeps the frames after it. From then on the server's engine parts read
//! and write: the frame reader (`engine/reader.rs`, which also inflates
//! compressed messages) under tungstenite's protocol state
//! (`engine/protocol.rs`), owned by one spawned task (`driver.rs`), as a
//! connection task does on the server. The
//! [`Client`] reads what that task delivers, and any number of
//! [`ClientSender`]s (from [`Client::sender`]) write through the send queue
//! from other tasks, so a client can send a long burst while it reads the
//! replies, without a lock between the two.

mod driver;
mod fence;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::Role;

use tokio::net::TcpStream;
use tokio_tungstenite::MaybeTlsStream;

use crate::deflate::inflate::InflateConfig;
use crate::deflate::write::Deflater;
use crate::deflate::{self, CompressionOptions};
use crate::engine::protocol::Protocol;
use crate::engine::reader::FrameReader;
use crate::error::WriteError;
use crate::message::Message;
use crate::send_queue::SendQueue;
use crate::sender::WebSocketSender;
use crate::settings::OverflowPolicy;
use driver::{Driver, Link};
use fence::HeadFence;

/// The most body bytes of a refused upgrade kept in
/// [`ClientError::Refused`].
pub const MAX_REFUSAL_BODY: usize = 64 * 1024;

/// The client's read buffer: held for the connection's life, grown for a
/// frame larger than it, and for a backlog (as a server connection's,
/// `engine/reader.rs`).
const READ_BUFFER_SIZE: usize = 8 * 1024;

/// Why a client could not connect, or could not go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL or a header is not valid.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The server answered the upgrade with this response instead of 101:
    /// its status, its headers (`WWW-Authenticate`, a redirect's `Location`…)
    /// and its body, as far as it arrived with the head, at most
    /// [`MAX_REFUSAL_BODY`] bytes.
    #[error("the server refused the upgrade with HTTP {}", .0.status())]
    Refused(Box<http::Response<Bytes>>),
    /// The connection failed or the server broke the protocol.
    #[error("WebSocket error: {0}")]
    Protocol(String),
    /// The connection is closed or closing: nothing more can be sent.
    #[error("the WebSocket is closed")]
    Closed,
    /// [`try_send`](ClientSender::try_send) found the send queue full (see
    /// [`ConnectOptions::max_queued_messages`]).
    #[error("the WebSocket send queue is full")]
    QueueFull,
}

impl ClientError {
    /// The HTTP status of a refused upgrade.
    pub fn status(&self) -> Option<http::StatusCode> {
        self.refusal().map(http::Response::status)
    }

    /// The whole response of a refused upgrade.
    ///
    /// ```no_run
    /// # async fn run() {
    /// match squall::connect("ws://127.0.0.1:8888/socket/").await {
    ///     Err(error) => {
    ///         if let Some(refusal) = error.refusal() {
    ///             let challenge = refusal.headers().get(squall::http::header::WWW_AUTHENTICATE);
    ///             tracing::warn!(status = %refusal.status(), ?challenge, "refused");
    ///         }
    ///     }
    ///     Ok(_client) => {}
    /// }
    /// # }
    /// ```
    pub fn refusal(&self) -> Option<&http::Response<Bytes>> {
        match self {
            ClientError::Refused(response) => Some(response),
            _ => None,
        }
    }

    /// Whether the connection was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, ClientError::Closed)
    }
}

impl From<tungstenite::Error> for ClientError {
    fn from(error: tungstenite::Error) -> Self {
        match error {
            tungstenite::Error::Http(response) => {
                ClientError::Refused(Box::new(refusal(*response)))
            }
            tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
                ClientError::Closed
            }
            tungstenite::Error::Url(error) => ClientError::InvalidRequest(error.to_string()),
            tungstenite::Error::HttpFormat(error) => ClientError::InvalidRequest(error.to_string()),
            other => ClientError::Protocol(other.to_string()),
        }
    }
}

impl From<WriteError> for ClientError {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::Closed => ClientError::Closed,
            WriteError::QueueFull => ClientError::QueueFull,
            other => ClientError::InvalidRequest(other.to_string()),
        }
    }
}

/// The refused response with its body: what tungstenite read past the head,
/// cut to `Content-Length` and to [`MAX_REFUSAL_BODY`].
fn refusal(response: http::Response<Option<Vec<u8>>>) -> http::Response<Bytes> {
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(usize::MAX);
    response.map(|body| {
        let mut body = body.unwrap_or_default();
        body.truncate(declared.min(MAX_REFUSAL_BODY));
        Bytes::from(body)
    })
}

/// Options for [`connect`]: extra headers, subprotocols, size limits, the
/// send queue.
///
/// ```no_run
/// # async fn run() -> Result<(), squall::ClientError> {
/// let client = squall::ConnectOptions::new()
///     .header("Cookie", "token=abc")
///     .subprotocol("chat.v1")
///     .connect("ws://127.0.0.1:8888/socket/")
///     .await?;
/// assert_eq!(client.selected_subprotocol(), Some("chat.v1"));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    headers: Vec<(String, String)>,
    subprotocols: Vec<String>,
    max_message_size: usize,
    connect_timeout: Duration,
    close_timeout: Duration,
    max_queued_messages: usize,
    max_queued_bytes: usize,
    overflow: OverflowPolicy,
    compression: Option<CompressionOptions>,
    #[cfg(feature = "tls")]
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ClientConfig>>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnectOptions {
    /// Defaults: no extra headers or subprotocols, 10 MiB messages (as the
    /// server), a 30 s connect timeout, a 5 s close timeout, and the server's
    /// send queue bounds (1024 messages, 1 MiB) with
    /// [`OverflowPolicy::Reject`].
    pub fn new() -> Self {
        ConnectOptions {
            headers: Vec::new(),
            subprotocols: Vec::new(),
            max_message_size: 10 * 1024 * 1024,
            connect_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(5),
            max_queued_messages: 1024,
            max_queued_bytes: 1024 * 1024,
            overflow: OverflowPolicy::Reject,
            compression: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Offers permessage-deflate (RFC 7692) with these settings. If the
    /// server accepts, messages are compressed both ways
    /// ([`Client::compression_agreed`] tells). Default: not offered.
    pub fn compression(mut self, options: CompressionOptions) -> Self {
        self.compression = Some(options);
        self
    }

    /// Adds a header to the upgrade request (`Origin`, `Cookie`,
    /// `Authorization`…).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Offers a subprotocol (in order of preference).
    pub fn subprotocol(mut self, protocol: impl Into<String>) -> Self {
        self.subprotocols.push(protocol.into());
        self
    }

    /// The largest message accepted from the server; a larger one closes the
    /// connection with 1009. Default: 10 MiB. It also bounds the bytes of
    /// received messages held for a [`Client`] that is not reading (with at
    /// most 32 messages): past it, the client stops reading the socket.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// How long connecting and the handshake may take. Default: 30 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a close waits for the queue to drain, and then for the
    /// server's close frame, before the connection is dropped. Default: 5 s.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// The most messages the send queue holds. Default: 1024, as the server.
    pub fn max_queued_messages(mut self, messages: usize) -> Self {
        self.max_queued_messages = messages.max(1);
        self
    }

    /// The most payload bytes the send queue holds (one larger message is
    /// still accepted into an empty queue). Default: 1 MiB, as the server.
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued_bytes = bytes.max(1);
        self
    }

    /// What [`try_send`](ClientSender::try_send) does when the queue is full,
    /// besides returning [`ClientError::QueueFull`]. Default:
    /// [`OverflowPolicy::Reject`] (unlike the server, whose default closes
    /// the slow connection: here the one writer that overflowed is the one
    /// that decides).
    pub fn overflow(mut self, policy: OverflowPolicy) -> Self {
        self.overflow = policy;
        self
    }

    /// The rustls configuration for `wss://` (feature `tls`); the default
    /// trusts the web PKI roots.
    #[cfg(feature = "tls")]
    pub fn tls_config(
        mut self,
        config: std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
    ) -> Self {
        self.tls = Some(config);
        self
    }

    /// Connects to `url` (`ws://`, or `wss://` with the `tls` feature) and
    /// spawns the task that owns the connection (so this must run inside a
    /// tokio runtime).
    pub async fn connect(self, url: &str) -> Result<Client, ClientError> {
        let mut request = url.into_client_request()?;
        for (name, value) in &self.headers {
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
            let value = http::HeaderValue::from_str(value)
                .map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
            request.headers_mut().append(name, value);
        }
        if !self.subprotocols.is_empty() {
            let offered = http::HeaderValue::from_str(&self.subprotocols.join(", "))
                .map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
            request
                .headers_mut()
                .insert(http::header::SEC_WEBSOCKET_PROTOCOL, offered);
        }
        if let Some(options) = &self.compression {
            let offer = http::HeaderValue::from_str(&options.offer())
                .map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
            request
                .headers_mut()
                .insert(http::header::SEC_WEBSOCKET_EXTENSIONS, offer);
        }
        let config = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size));
        let connecting = async {
            let stream = self.open_stream(&request).await?;
            tokio_tungstenite::client_async_with_config(
                request,
                HeadFence::new(stream),
                Some(config),
            )
            .await
            .map_err(ClientError::from)
        };
        let (ws, response) = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| ClientError::Protocol("connect timed out".into()))??;
        let subprotocol = response
            .headers()
            .get(http::header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let extensions = response
            .headers()
            .get_all(http::header::SEC_WEBSOCKET_EXTENSIONS);
        let agreed = match &self.compression {
            Some(options) => {
                deflate::read_answer(extensions.iter(), options).map_err(ClientError::Protocol)?
            }
            None if extensions.iter().next().is_some() => {
                return Err(ClientError::Protocol(
                    "the server chose an extension that was not offered".into(),
                ))
            }
            None => None,
        };
        // The fence let tungstenite's handshake read the response head and
        // nothing after it: the frames that follow are read by squall's
        // frame reader, which inflates compressed messages when that was
        // agreed, with a fresh protocol state in place of the handshake's.
        let (stream, read_ahead) = ws.into_inner().into_parts();
        let compression = agreed.is_some();
        let deflate = agreed.map(|agreed| {
            let config = InflateConfig {
                peer: agreed.theirs,
                max_message_size: self.max_message_size,
            };
            (
                config,
                Deflater::new(agreed.ours, agreed.level, agreed.mem_level),
            )
        });
        let reader = FrameReader::new(
            stream,
            Role::Client,
            read_ahead,
            READ_BUFFER_SIZE,
            self.max_message_size,
            deflate,
        );

        let queue = Arc::new(SendQueue::new(
            self.max_queued_messages,
            self.max_queued_bytes,
            self.overflow,
        ));
        let link = Link::new(self.max_message_size);
        let ws = Protocol::new(reader, Role::Client, config.read_buffer_size(0));
        tokio::spawn(Driver::new(ws, queue.clone(), link.clone(), self.close_timeout).run());
        let sender = ClientSender {
            queue: WebSocketSender::new(queue.clone()),
            _owner: Arc::new(Owner(WebSocketSender::new(queue))),
        };
        Ok(Client {
            link,
            sender,
            subprotocol,
            compression,
        })
    }

    /// The TCP (or TLS) connection to the request's host.
    async fn open_stream(
        &self,
        request: &http::Request<()>,
    ) -> Result<MaybeTlsStream<TcpStream>, ClientError> {
        let uri = request.uri();
        let host = uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .ok_or_else(|| ClientError::InvalidRequest("no host in the URL".into()))?;
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => {
                return Err(ClientError::InvalidRequest(
                    "the URL must be ws:// or wss://".into(),
                ))
            }
        };
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        if !secure {
            return Ok(MaybeTlsStream::Plain(tcp));
        }
        #[cfg(feature = "tls")]
        {
            use tokio_rustls::rustls;
            let config = self.tls.clone().unwrap_or_else(|| {
                let mut roots = rustls::RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                std::sync::Arc::new(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(roots)
                        .with_no_client_auth(),
                )
            });
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            Ok(MaybeTlsStream::Rustls(tls))
        }
        #[cfg(not(feature = "tls"))]
        {
            drop(tcp);
            Err(ClientError::InvalidRequest(
                "wss:// needs squall's `tls` feature".into(),
            ))
        }
    }
}

/// Connects to `url` with default options: Tornado's `websocket_connect`.
///
/// ```no_run
/// # async fn run() -> Result<(), squall::ClientError> {
/// let mut client = squall::connect("ws://127.0.0.1:8888/socket/").await?;
/// client.send("hello world").await?;
/// if let Some(reply) = client.recv().await {
///     tracing::info!("{}", reply.as_text().unwrap_or_default());
/// }
/// client.close(1000, "done").await;
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<Client, ClientError> {
    ConnectOptions::new().connect(url).await
}

/// Closes the connection (1000, after what is queued) once the [`Client`]
/// and every [`ClientSender`] are gone.
struct Owner(WebSocketSender);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.close(crate::close_code::NORMAL, "");
    }
}

/// A connected WebSocket client: the reading end, which can also write.
///
/// A task of its own owns the socket: it answers the server's pings, drains
/// the send queue into the socket and reads messages ahead for
/// [`recv`](Self::recv) (a few, bounded: a client that does not read stops
/// the socket being read, and TCP pushes back). To write from other tasks
/// while this one reads, take a [`sender`](Self::sender).
///
/// The connection lives while the `Client` or any of its senders does;
/// when all are dropped it closes with 1000 after the queued messages.
///
/// ```no_run
/// # async fn run() -> Result<(), squall::ClientError> {
/// let mut client = squall::connect("ws://127.0.0.1:8888/socket/").await?;
/// let sender = client.sender();
/// let writer = tokio::spawn(async move {
///     for n in 0..10_000 {
///         sender.send(format!("message {n}")).await?;
///     }
///     Ok::<_, squall::ClientError>(())
/// });
/// for _ in 0..10_000 {
///     let reply = client.recv().await.expect("a reply");
///     # let _ = reply;
/// }
/// writer.await.expect("writer task")?;
/// client.close(1000, "done").await;
/// # Ok(()) }
/// ```
pub struct Client {
    link: Arc<Link>,
    sender: ClientSender,
    subprotocol: Option<String>,
    /// Whether permessage-deflate was agreed.
    compression: bool,
}

impl Client {
    /// Queues a message, waiting while the send queue is full. Returns once
    /// it is queued (the connection's task writes it);
    /// [`ClientError::Closed`] once the connection is closing.
    pub async fn send(&self, message: impl Into<Message>) -> Result<(), ClientError> {
        self.sender.send(message).await
    }

    /// Queues a message without waiting; see [`ClientSender::try_send`].
    pub fn try_send(&self, message: impl Into<Message>) -> Result<(), ClientError> {
        self.sender.try_send(message)
    }

    /// Sends a ping (at most 125 bytes).
    pub async fn ping(&self, data: impl Into<Bytes>) -> Result<(), ClientError> {
        self.sender.ping(data).await
    }

    /// A cloneable handle that writes to this connection from any task.
    pub fn sender(&self) -> ClientSender {
        self.sender.clone()
    }

    /// The next message from the server, or `None` once the connection is
    /// closed (then [`close_code`](Self::close_code) tells how). Pings and
    /// pongs are handled underneath.
    pub async fn recv(&mut self) -> Option<Message> {
        self.link.recv().await
    }

    /// Closes with `code` and `reason` after the messages already queued,
    /// and waits until the connection has ended (bounded by the
    /// [close timeout](ConnectOptions::close_timeout), once to drain the
    /// queue and once for the server's close frame). Messages that arrive
    /// meanwhile are dropped.
    pub async fn close(&mut self, code: u16, reason: &str) {
        self.sender.close(code, reason);
        while self.recv().await.is_some() {}
    }

    /// The close code the server sent, once closed; `None` if it sent none
    /// or the connection dropped.
    pub fn close_code(&self) -> Option<u16> {
        self.link.ended().and_then(|ended| ended.code)
    }

    /// The close reason the server sent, once closed.
    pub fn close_reason(&self) -> Option<&str> {
        self.link
            .ended()
            .map(|ended| ended.reason.as_str())
            .filter(|r| !r.is_empty())
    }

    /// Whether the connection is closing or closed (nothing more can be
    /// sent).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed() || self.link.ended().is_some()
    }

    /// The subprotocol the server selected.
    pub fn selected_subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// Whether the server accepted permessage-deflate
    /// ([`ConnectOptions::compression`]).
    pub fn compression_agreed(&self) -> bool {
        self.compression
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.link.reader_dropped();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("subprotocol", &self.subprotocol)
            .field("compression", &self.compression)
            .field("closed", &self.is_closed())
            .field("close_code", &self.close_code())
            .finish()
    }
}

/// A cloneable handle that writes to a [`Client`]'s connection from any
/// task, with the server's queue semantics: the queue is bounded in messages
/// and bytes ([`ConnectOptions::max_queued_messages`],
/// [`ConnectOptions::max_queued_bytes`]), [`send`](Self::send) waits for
/// room while [`try_send`](Self::try_send) never waits, and both fail with
/// [`ClientError::Closed`] once the connection is closing.
#[derive(Clone)]
pub struct ClientSender {
    queue: WebSocketSender,
    _owner: Arc<Owner>,
}

impl ClientSender {
    /// Queues a message, waiting while the send queue is full.
    pub async fn send(&self, message: impl Into<Message>) -> Result<(), ClientError> {
        Ok(self.queue.write_message(message).await?)
    }

    /// Queues a message without waiting: [`ClientError::QueueFull`] when the
    /// queue is full (and the [overflow policy](ConnectOptions::overflow)
    /// applies).
    pub fn try_send(&self, message: impl Into<Message>) -> Result<(), ClientError> {
        Ok(self.queue.send(message)?)
    }

    /// Sends a ping (at most 125 bytes), waiting while the queue is full.
    pub async fn ping(&self, data: impl Into<Bytes>) -> Result<(), ClientError> {
        let data = data.into();
        if data.len() > 125 {
            return Err(WriteError::PingTooLong.into());
        }
        Ok(self
            .queue
            .queue()
            .enqueue(tungstenite::Message::Ping(data))
            .await?)
    }

    /// Asks the connection to close with `code` and `reason` after the
    /// messages already queued; never waits (the [`Client`] sees the end as
    /// `recv` returning `None`).
    pub fn close(&self, code: u16, reason: &str) {
        self.queue.close(code, reason);
    }

    /// Whether the connection is closing or closed.
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }
}

impl std::fmt::Debug for ClientSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSender")
            .field("closed", &self.is_closed())
            .finish()
    }
}
