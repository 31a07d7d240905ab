//! Raw-socket helpers shared by the integration tests: exact HTTP requests and
//! responses, and hand-made WebSocket frames, for the cases where squall's own
//! client would hide what is on the wire.
//!
//! Every read is bounded by `squall::testing::within`.

#![allow(dead_code)]

use std::net::SocketAddr;

use squall::testing::within;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A raw connection. Reads are buffered so that the bytes after a response
/// head (a body, or the first WebSocket frames) are never lost; writes go
/// straight through.
pub type Raw = BufReader<TcpStream>;

/// The key of RFC 6455's example handshake and the accept value it derives.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Opens a raw TCP connection.
pub async fn open(addr: SocketAddr) -> Raw {
    BufReader::new(
        within("TCP connect", TcpStream::connect(addr))
            .await
            .expect("connect"),
    )
}

/// An HTTP response as read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
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
        assert!(
            status_line.starts_with("HTTP/1.1 "),
            "not a status line: {status_line:?}"
        );
        let status = status_line[9..12].parse().expect("status code");
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
            status,
            headers,
            body: Vec::new(),
        };
        if !to_head && status != 101 {
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

/// Reads until the peer closes the connection; fails the test if it does
/// not within the bound. Returns what was read.
pub async fn read_to_eof(raw: &mut Raw) -> Vec<u8> {
    within("the connection to close", async {
        let mut rest = Vec::new();
        // A reset counts as closed too.
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

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        out.into_bytes()
    }

    /// Sends the request on a fresh connection and reads the response head
    /// (and body, unless it is a 101).
    pub async fn send(&self, addr: SocketAddr) -> (RawResponse, Raw) {
        request(addr, &self.to_bytes()).await
    }
}

/// Completes a valid upgrade to `path` over a raw socket.
pub async fn raw_websocket(addr: SocketAddr, path: &str) -> Raw {
    let (response, raw) = Upgrade::new(addr, path).send(addr).await;
    assert_eq!(response.status, 101, "upgrade refused: {response:?}");
    assert_eq!(response.header("sec-websocket-accept"), Some(ACCEPT));
    raw
}

/// A single client frame: `first` is the FIN/RSV/opcode byte. Masked unless
/// `masked` is false (which a server must refuse).
pub fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![first];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        len @ 0..=125 => out.push(mask_bit | len as u8),
        len @ 126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A masked, final frame with `opcode`.
pub fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(0x80 | opcode, payload, true)
}

/// Reads one server frame: (first byte, payload). Server frames are never
/// masked.
pub async fn read_frame(raw: &mut Raw) -> (u8, Vec<u8>) {
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
        (head[0], payload)
    })
    .await
}

/// Reads frames until a close frame and returns its code and reason.
pub async fn read_close(raw: &mut Raw) -> (u16, String) {
    loop {
        let (first, payload) = read_frame(raw).await;
        if first & 0x0f == 0x8 {
            assert!(payload.len() >= 2, "close frame without a code");
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let reason = String::from_utf8(payload[2..].to_vec()).expect("UTF-8 reason");
            return (code, reason);
        }
    }
}
