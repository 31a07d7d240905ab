//! Raw-socket helpers shared by the integration tests, for the cases where
//! squall's own client would hide what is on the wire: exact HTTP requests
//! and responses ([`Upgrade`], [`request`], [`read_response`]) and
//! hand-made WebSocket frames ([`Frame`], [`read_frame`], [`read_close`]).
//!
//! Every wait is bounded by `squall::testing::within`.

#![allow(dead_code)]

use std::net::SocketAddr;

use squall::testing::within;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A raw connection. Reads are buffered so that the bytes after a response
/// head (a body, or the first WebSocket frames) are never lost; writes go
/// straight through.
pub type Raw = BufReader<TcpStream>;

/// The key of RFC 6455's example handshake.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// The `Sec-WebSocket-Accept` value derived from [`KEY`].
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Opcodes (RFC 6455 §5.2).
pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xa;

/// Opens a raw TCP connection.
pub async fn open(addr: SocketAddr) -> Raw {
    BufReader::new(
        within("TCP connect", TcpStream::connect(addr))
            .await
            .expect("connect"),
    )
}

/// The next event a handler reported on `events`.
pub async fn next_event<T>(events: &mut mpsc::UnboundedReceiver<T>) -> T {
    within("a handler event", events.recv())
        .await
        .expect("event channel open")
}

/// Keeps offering 64 KiB messages with non-waiting sends, yielding between
/// them, until the connection's send queue is full (`QueueFull`).
pub async fn send_until_full(sender: &squall::WebSocketSender) {
    let error = within("the queue to overflow", async {
        loop {
            match sender.send(vec![0u8; 64 * 1024]) {
                Ok(()) => tokio::task::yield_now().await,
                Err(error) => return error,
            }
        }
    })
    .await;
    assert!(error.is_queue_full(), "{error:?}");
}

/// An HTTP response as read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// The reason phrase of the status line.
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body, which must be UTF-8.
    pub fn body_text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }
}

/// Reads one response: the head, then `Content-Length` bytes of body (none
/// for a response to HEAD or a 101).
pub async fn read_response(raw: &mut Raw, to_head: bool) -> RawResponse {
    within("an HTTP response", async {
        let mut status_line = String::new();
        raw.read_line(&mut status_line).await.expect("status line");
        let status_line = status_line.trim_end_matches(['\r', '\n']);
        let rest = status_line
            .strip_prefix("HTTP/1.1 ")
            .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
        let (status, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            raw.read_line(&mut line).await.expect("header line");
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("header has a colon");
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        let mut response = RawResponse {
            status: status.parse().expect("status code"),
            reason: reason.to_owned(),
            headers,
            body: Vec::new(),
        };
        if !to_head && response.status != 101 {
            let len: usize = response
                .header("content-length")
                .expect("Content-Length")
                .parse()
                .expect("numeric Content-Length");
            response.body = vec![0; len];
            raw.read_exact(&mut response.body).await.expect("body");
        }
        response
    })
    .await
}

/// Sends `request` bytes on a fresh connection and reads the response.
pub async fn request(addr: SocketAddr, request: &[u8]) -> (RawResponse, Raw) {
    let mut raw = open(addr).await;
    raw.write_all(request).await.expect("write request");
    let response = read_response(&mut raw, request.starts_with(b"HEAD ")).await;
    (response, raw)
}

/// Sends `request` bytes on a fresh connection, reads the response, and
/// asserts that the server then closes the connection with nothing more.
pub async fn refusal(addr: SocketAddr, bytes: &[u8]) -> RawResponse {
    let (response, mut raw) = request(addr, bytes).await;
    let rest = read_to_eof(&mut raw).await;
    assert!(
        rest.is_empty(),
        "bytes after the response to {:?}: {:?}",
        String::from_utf8_lossy(bytes),
        String::from_utf8_lossy(&rest)
    );
    response
}

/// Reads until the peer closes the connection (a reset counts too); fails
/// the test if it does not within the bound. Returns what was read.
pub async fn read_to_eof(raw: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    within("the connection to close", async {
        let mut rest = Vec::new();
        let _ = raw.read_to_end(&mut rest).await;
        rest
    })
    .await
}

/// A WebSocket upgrade request, starting from a valid one.
pub struct Upgrade {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Upgrade {
    /// A valid upgrade request for `path` on the server at `addr`.
    pub fn new(addr: SocketAddr, path: &str) -> Self {
        Upgrade {
            method: "GET".into(),
            path: path.into(),
            headers: vec![
                ("Host".into(), addr.to_string()),
                ("Upgrade".into(), "websocket".into()),
                ("Connection".into(), "Upgrade".into()),
                ("Sec-WebSocket-Key".into(), KEY.into()),
                ("Sec-WebSocket-Version".into(), "13".into()),
            ],
        }
    }

    /// Replaces the method (`GET`).
    pub fn method(mut self, method: &str) -> Self {
        self.method = method.into();
        self
    }

    /// Sets header `name`, replacing any value it had.
    pub fn header(self, name: &str, value: &str) -> Self {
        let mut this = self.without(name);
        this.headers.push((name.into(), value.into()));
        this
    }

    /// Leaves header `name` out.
    pub fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    /// The request as sent.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        out.into_bytes()
    }

    /// Sends the request on `raw` and reads the response head (and body,
    /// unless it is a 101).
    pub async fn send_on(&self, raw: &mut Raw) -> RawResponse {
        raw.write_all(&self.to_bytes())
            .await
            .expect("write request");
        read_response(raw, false).await
    }

    /// Sends the request on a fresh connection and reads the response.
    pub async fn send(&self, addr: SocketAddr) -> (RawResponse, Raw) {
        let mut raw = open(addr).await;
        let response = self.send_on(&mut raw).await;
        (response, raw)
    }
}

/// Asserts that `response` accepts the upgrade of [`Upgrade::new`].
pub fn assert_accepted(response: &RawResponse) {
    assert_eq!(response.status, 101, "upgrade refused: {response:?}");
    assert_eq!(response.header("sec-websocket-accept"), Some(ACCEPT));
}

/// Completes a valid upgrade to `path` over a raw socket.
pub async fn raw_websocket(addr: SocketAddr, path: &str) -> Raw {
    let (response, raw) = Upgrade::new(addr, path).send(addr).await;
    assert_accepted(&response);
    raw
}

/// A client frame to build: final, no RSV bits and masked unless changed.
#[derive(Clone, Copy, Debug)]
pub struct Frame {
    fin: bool,
    rsv: u8,
    opcode: u8,
    masked: bool,
}

impl Frame {
    /// The mask key of every masked frame.
    pub const MASK_KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A final, masked frame with `opcode`.
    pub fn new(opcode: u8) -> Self {
        Frame {
            fin: true,
            rsv: 0,
            opcode,
            masked: true,
        }
    }

    /// Clears FIN: a fragment with more to follow.
    pub fn not_final(mut self) -> Self {
        self.fin = false;
        self
    }

    /// Sets the RSV bits (`bits` is RSV1..RSV3 as 0b100..0b001).
    pub fn rsv(mut self, bits: u8) -> Self {
        self.rsv = bits & 0x7;
        self
    }

    /// Sends it unmasked, which a client must not do.
    pub fn unmasked(mut self) -> Self {
        self.masked = false;
        self
    }

    /// The frame head announcing `len` payload bytes (and the mask key).
    pub fn head(self, len: u64) -> Vec<u8> {
        let mut out = vec![(u8::from(self.fin) << 7) | (self.rsv << 4) | (self.opcode & 0xf)];
        let mask_bit = if self.masked { 0x80 } else { 0 };
        match len {
            0..=125 => out.push(mask_bit | len as u8),
            126..=0xffff => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        if self.masked {
            out.extend_from_slice(&Self::MASK_KEY);
        }
        out
    }

    /// The whole frame carrying `payload`.
    pub fn with(self, payload: &[u8]) -> Vec<u8> {
        let mut out = self.head(payload.len() as u64);
        if self.masked {
            let key = Self::MASK_KEY;
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            out.extend_from_slice(payload);
        }
        out
    }
}

/// A frame the server sent.
#[derive(Debug)]
pub struct ServerFrame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// Reads one server frame, failing the test if the connection ends first.
/// Server frames are never masked.
pub async fn read_frame(raw: &mut (impl AsyncRead + Unpin)) -> ServerFrame {
    within("a frame from the server", async {
        let mut head = [0u8; 2];
        raw.read_exact(&mut head).await.expect("frame head");
        assert_eq!(head[1] & 0x80, 0, "server frames must not be masked");
        let len = match head[1] & 0x7f {
            126 => raw.read_u16().await.expect("length") as usize,
            127 => raw.read_u64().await.expect("length") as usize,
            len => len as usize,
        };
        let mut payload = vec![0; len];
        raw.read_exact(&mut payload).await.expect("frame payload");
        ServerFrame {
            fin: head[0] & 0x80 != 0,
            rsv: (head[0] >> 4) & 0x7,
            opcode: head[0] & 0xf,
            payload,
        }
    })
    .await
}

/// Reads frames until a close frame and returns its code and reason; the
/// close frame must carry a code.
pub async fn read_close(raw: &mut (impl AsyncRead + Unpin)) -> (u16, String) {
    loop {
        let frame = read_frame(raw).await;
        if frame.opcode == CLOSE {
            let payload = frame.payload;
            assert!(payload.len() >= 2, "close frame without a code");
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let reason = String::from_utf8(payload[2..].to_vec()).expect("UTF-8 reason");
            return (code, reason);
        }
    }
}

/// The path of example `name`'s binary, which `cargo test` builds next to
/// the test binaries.
pub fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join(name))
        .unwrap();
    assert!(path.exists(), "{} not built", path.display());
    path
}

/// What the `tracing` subscriber of this test binary wrote.
#[derive(Clone, Default)]
pub struct Log(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The log of this test binary, captured by the process's global
/// subscriber, installed on the first call. A thread-local one
/// (`set_default`) races the other tests' threads over each callsite's
/// cached interest, and then misses events; so every test that reads the
/// log calls this before its server starts, and finds its own lines by
/// content.
pub fn log() -> &'static Log {
    static LOG: std::sync::OnceLock<Log> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log = Log::default();
        let writer = log.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        log
    })
}
