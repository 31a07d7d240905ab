//! A WebSocket client: Tornado's `websocket_connect`, with the same
//! [`Message`] type as the server side.
//!
//! It is a thin layer over tokio-tungstenite's client: squall adds its
//! message type, its size limits, header and subprotocol options, and close
//! codes you can read after the fact.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;

use crate::Message;

/// Why a client could not connect, or could not go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL or a header is not valid.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The server answered the upgrade with this HTTP status instead of 101.
    #[error("the server refused the upgrade with HTTP {0}")]
    Refused(http::StatusCode),
    /// The connection failed or the server broke the protocol.
    #[error("WebSocket error: {0}")]
    Protocol(String),
    /// The connection is closed.
    #[error("the WebSocket is closed")]
    Closed,
}

impl ClientError {
    /// The HTTP status of a refused upgrade.
    pub fn status(&self) -> Option<http::StatusCode> {
        match self {
            ClientError::Refused(status) => Some(*status),
            _ => None,
        }
    }
}

impl From<tungstenite::Error> for ClientError {
    fn from(error: tungstenite::Error) -> Self {
        match error {
            tungstenite::Error::Http(response) => ClientError::Refused(response.status()),
            tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
                ClientError::Closed
            }
            tungstenite::Error::Url(error) => ClientError::InvalidRequest(error.to_string()),
            tungstenite::Error::HttpFormat(error) => ClientError::InvalidRequest(error.to_string()),
            other => ClientError::Protocol(other.to_string()),
        }
    }
}

/// Options for [`connect`]: extra headers, subprotocols, size limits.
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
    /// server), a 30 s connect timeout.
    pub fn new() -> Self {
        ConnectOptions {
            headers: Vec::new(),
            subprotocols: Vec::new(),
            max_message_size: 10 * 1024 * 1024,
            connect_timeout: Duration::from_secs(30),
            #[cfg(feature = "tls")]
            tls: None,
        }
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

    /// The largest message accepted from the server. Default: 10 MiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// How long connecting and the handshake may take. Default: 30 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
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

    /// Connects to `url` (`ws://`, or `wss://` with the `tls` feature).
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
        let config = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size));
        #[cfg(feature = "tls")]
        let connecting = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(config),
            true,
            self.tls.clone().map(tokio_tungstenite::Connector::Rustls),
        );
        #[cfg(not(feature = "tls"))]
        let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
        let (ws, response) = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| ClientError::Protocol("connect timed out".into()))??;
        let subprotocol = response
            .headers()
            .get(http::header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Client {
            ws,
            subprotocol,
            close: None,
        })
    }
}

/// Connects to `url` with default options: Tornado's `websocket_connect`.
///
/// ```no_run
/// # async fn run() -> Result<(), squall::ClientError> {
/// let mut client = squall::connect("ws://127.0.0.1:8888/socket/").await?;
/// client.send("hello world").await?;
/// if let Some(reply) = client.recv().await {
///     println!("{}", reply.as_text().unwrap_or_default());
/// }
/// client.close(1000, "done").await;
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<Client, ClientError> {
    ConnectOptions::new().connect(url).await
}

/// A connected WebSocket client. Pings from the server are answered while
/// the client reads.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    subprotocol: Option<String>,
    close: Option<(Option<u16>, String)>,
}

impl Client {
    /// Sends a message.
    pub async fn send(&mut self, message: impl Into<Message>) -> Result<(), ClientError> {
        self.ws.send(message.into().into_tungstenite()).await?;
        Ok(())
    }

    /// Sends a ping.
    pub async fn ping(&mut self, data: impl Into<Bytes>) -> Result<(), ClientError> {
        self.ws
            .send(tungstenite::Message::Ping(data.into()))
            .await?;
        Ok(())
    }

    /// The next message from the server, or `None` once the connection is
    /// closed (then [`close_code`](Self::close_code) tells how). Pings and
    /// pongs are handled underneath.
    pub async fn recv(&mut self) -> Option<Message> {
        loop {
            match self.ws.next().await {
                Some(Ok(tungstenite::Message::Text(text))) => {
                    return Some(Message::Text(text.into()))
                }
                Some(Ok(tungstenite::Message::Binary(data))) => return Some(Message::Binary(data)),
                Some(Ok(tungstenite::Message::Close(frame))) => {
                    self.close = Some(match frame {
                        Some(frame) => (Some(u16::from(frame.code)), frame.reason.to_string()),
                        None => (None, String::new()),
                    });
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    if self.close.is_none() {
                        self.close = Some((None, String::new()));
                    }
                    return None;
                }
            }
        }
    }

    /// Closes with `code` and `reason` and waits (up to 5 s) for the
    /// server's close frame.
    pub async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        if self.ws.close(Some(frame)).await.is_ok() {
            let drain = async { while self.recv().await.is_some() {} };
            let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
        }
    }

    /// The close code the server sent, once closed; `None` if it sent none
    /// or the connection dropped.
    pub fn close_code(&self) -> Option<u16> {
        self.close.as_ref().and_then(|(code, _)| *code)
    }

    /// The close reason the server sent, once closed.
    pub fn close_reason(&self) -> Option<&str> {
        self.close
            .as_ref()
            .map(|(_, reason)| reason.as_str())
            .filter(|r| !r.is_empty())
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.close.is_some()
    }

    /// The subprotocol the server selected.
    pub fn selected_subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("subprotocol", &self.subprotocol)
            .field("close", &self.close)
            .finish()
    }
}
