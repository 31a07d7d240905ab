//! Raw-socket helpers for the hardening tests: a hand-made upgrade request,
//! frame encoding with full control over every bit, and a tiny frame reader
//! for what the server sends back. Every wait is bounded.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound on any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

pub async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

pub fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Reads an HTTP response head (up to the blank line); returns it and any
/// bytes read past it.
pub async fn read_response_head(tcp: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    within("a response head", async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let rest = buf.split_off(end + 4);
                return (String::from_utf8_lossy(&buf).into_owned(), rest);
            }
            let mut chunk = [0u8; 4096];
            let n = tcp.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return (String::from_utf8_lossy(&buf).into_owned(), Vec::new());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
}

/// Reads everything until the server closes (bounded), as a string.
pub async fn read_to_close(tcp: &mut TcpStream) -> String {
    let mut out = Vec::new();
    within("the server to close", async {
        let mut chunk = [0u8; 4096];
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Connects and completes the upgrade on a raw TCP stream.
pub async fn raw_upgrade(addr: SocketAddr, path: &str) -> (TcpStream, Vec<u8>) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(upgrade_request(path).as_bytes())
        .await
        .unwrap();
    let (head, rest) = read_response_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
    (tcp, rest)
}

/// Encodes one frame. `mask: None` sends it unmasked (illegal from a client).
pub fn frame(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push((u8::from(fin) << 7) | ((rsv & 0x7) << 4) | (opcode & 0xf));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A masked client frame (the legal kind).
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(fin, 0, opcode, Some([0x12, 0x34, 0x56, 0x78]), payload)
}

/// A frame the server sent.
#[derive(Debug)]
pub struct ServerFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl ServerFrame {
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// Reads server frames from a raw stream (with `pending` bytes read before).
pub struct FrameReader {
    pub tcp: TcpStream,
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn new(tcp: TcpStream, pending: Vec<u8>) -> Self {
        FrameReader { tcp, buf: pending }
    }

    fn parse(&mut self) -> Option<ServerFrame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let fin = b[0] & 0x80 != 0;
        let opcode = b[0] & 0xf;
        let (len, mut at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        assert_eq!(b[1] & 0x80, 0, "server frames must not be masked");
        if b.len() < at + len {
            return None;
        }
        let payload = b[at..at + len].to_vec();
        at += len;
        self.buf.drain(..at);
        Some(ServerFrame {
            fin,
            opcode,
            payload,
        })
    }

    /// The next frame, or `None` on EOF/reset.
    pub async fn next(&mut self) -> Option<ServerFrame> {
        within("a frame", async {
            loop {
                if let Some(frame) = self.parse() {
                    return Some(frame);
                }
                let mut chunk = vec![0u8; 64 * 1024];
                match self.tcp.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
    }

    /// Reads frames until a close frame; returns its code (and asserts the
    /// connection then ends).
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match self.next().await {
                Some(frame) if frame.opcode == 8 => return frame.close_code(),
                Some(_) => continue,
                None => panic!("connection ended without a close frame"),
            }
        }
    }

    /// Waits for EOF (or reset), bounded.
    pub async fn expect_eof(&mut self) {
        while let Some(frame) = self.next().await {
            assert!(
                frame.opcode == 8 || frame.opcode == 9 || frame.opcode == 10,
                "unexpected frame before EOF: {frame:?}"
            );
        }
    }
}

/// This process's resident set size in bytes, from /proc/self/status.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
