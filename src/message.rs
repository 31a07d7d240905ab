//! The messages a handler receives and writes.
//!
//! [`Message`] is squall's own type so that the protocol crate underneath
//! (tungstenite) stays out of the public API: upgrading it is not a breaking
//! change for users. Every conversion to and from tungstenite's types moves the
//! shared buffer; nothing is copied.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

/// A text payload: bytes that are known to be valid UTF-8.
///
/// Cloning is cheap (a reference count), which is what lets one broadcast
/// message be shared by every receiver.
///
/// ```
/// let text = squall::Utf8Bytes::from("hello");
/// assert_eq!(&*text, "hello");
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Utf8Bytes(tungstenite::Utf8Bytes);

impl Utf8Bytes {
    /// A text payload from a `&'static str`, without copying it.
    pub const fn from_static(text: &'static str) -> Self {
        Self(tungstenite::Utf8Bytes::from_static(text))
    }

    /// The text as a string slice.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The underlying bytes (shared, not copied).
    pub fn into_bytes(self) -> Bytes {
        self.0.into()
    }

    pub(crate) fn into_inner(self) -> tungstenite::Utf8Bytes {
        self.0
    }
}

impl Deref for Utf8Bytes {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Utf8Bytes {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl From<String> for Utf8Bytes {
    fn from(text: String) -> Self {
        Self(text.into())
    }
}

impl From<&str> for Utf8Bytes {
    fn from(text: &str) -> Self {
        Self(text.into())
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = std::str::Utf8Error;
    fn try_from(bytes: Bytes) -> Result<Self, Self::Error> {
        tungstenite::Utf8Bytes::try_from(bytes).map(Self)
    }
}

impl From<tungstenite::Utf8Bytes> for Utf8Bytes {
    fn from(inner: tungstenite::Utf8Bytes) -> Self {
        Self(inner)
    }
}

/// A complete WebSocket data message, as handed to
/// [`WebSocketHandler::on_message`](crate::WebSocketHandler::on_message) and
/// written with [`WebSocket::write_message`](crate::WebSocket::write_message).
///
/// Fragmented messages arrive reassembled. Control frames (ping, pong, close)
/// are not messages: they reach the handler through `on_ping`, `on_pong` and
/// `on_close`.
///
/// Anything that converts into a message can be written: `&str` and `String`
/// become text, `Vec<u8>`, `&[u8]` and [`Bytes`] become binary, and a
/// [`serde_json::Value`] becomes JSON text (as Tornado turns a dict into JSON).
///
/// ```
/// use squall::Message;
///
/// assert_eq!(Message::from("hi").as_text(), Some("hi"));
/// assert!(Message::from(vec![1u8, 2, 3]).is_binary());
/// let json = Message::from(serde_json::json!({"a": 1}));
/// assert_eq!(json.as_text(), Some(r#"{"a":1}"#));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A text message (valid UTF-8, checked on receipt).
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Message {
    /// A text message.
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        Message::Text(text.into())
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Message::Binary(data.into())
    }

    /// Serialises `value` to JSON once and wraps it as a text message (a text
    /// frame, so browsers receive a string rather than a `Blob`).
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        let text = serde_json::to_string(value)?;
        Ok(Message::Text(text.into()))
    }

    /// The text, if this is a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(text) => Some(text.as_str()),
            Message::Binary(_) => None,
        }
    }

    /// The payload bytes, whatever the kind.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(data) => data,
        }
    }

    /// The payload as shared bytes, whatever the kind (no copy).
    pub fn into_data(self) -> Bytes {
        match self {
            Message::Text(text) => text.into_bytes(),
            Message::Binary(data) => data,
        }
    }

    /// Whether this is a text message.
    pub fn is_text(&self) -> bool {
        matches!(self, Message::Text(_))
    }

    /// Whether this is a binary message.
    pub fn is_binary(&self) -> bool {
        matches!(self, Message::Binary(_))
    }

    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parses a text or binary payload as JSON.
    pub fn parse_json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(self.as_bytes())
    }

    pub(crate) fn into_tungstenite(self) -> tungstenite::Message {
        match self {
            Message::Text(text) => tungstenite::Message::Text(text.into_inner()),
            Message::Binary(data) => tungstenite::Message::Binary(data),
        }
    }
}

impl From<Utf8Bytes> for Message {
    fn from(text: Utf8Bytes) -> Self {
        Message::Text(text)
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Message::Text(text.into())
    }
}

impl From<&String> for Message {
    fn from(text: &String) -> Self {
        Message::Text(text.as_str().into())
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Self {
        Message::Text(text.into())
    }
}

impl From<Bytes> for Message {
    fn from(data: Bytes) -> Self {
        Message::Binary(data)
    }
}

impl From<Vec<u8>> for Message {
    fn from(data: Vec<u8>) -> Self {
        Message::Binary(data.into())
    }
}

impl From<&[u8]> for Message {
    fn from(data: &[u8]) -> Self {
        Message::Binary(Bytes::copy_from_slice(data))
    }
}

impl From<serde_json::Value> for Message {
    fn from(value: serde_json::Value) -> Self {
        Message::Text(value.to_string().into())
    }
}

impl From<&serde_json::Value> for Message {
    fn from(value: &serde_json::Value) -> Self {
        Message::Text(value.to_string().into())
    }
}

/// Close codes squall sends or that users commonly send (RFC 6455 §7.4.1).
///
/// Codes are plain `u16`s in the API, as in Tornado; these constants name the
/// ones squall itself uses.
pub mod close_code {
    /// 1000: normal closure.
    pub const NORMAL: u16 = 1000;
    /// 1001: the server is going away (shutdown) or the peer stopped answering pings.
    pub const GOING_AWAY: u16 = 1001;
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// 1003: a message of a kind the endpoint does not accept.
    pub const UNSUPPORTED: u16 = 1003;
    /// 1007: a text message that is not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// 1008: a policy violation (also used for a full send queue, if so configured).
    pub const POLICY: u16 = 1008;
    /// 1009: a message larger than `websocket_max_message_size`.
    pub const TOO_BIG: u16 = 1009;
    /// 1011: the handler failed (panicked).
    pub const INTERNAL_ERROR: u16 = 1011;
    /// 1013: try again later (the default for a full send queue).
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// 1014: bad gateway, a gateway or proxy got an invalid response from
    /// upstream (registered with IANA after RFC 6455). A peer may send it:
    /// the handler sees 1014 as its close code and the peer gets 1000 back.
    pub const BAD_GATEWAY: u16 = 1014;
}
