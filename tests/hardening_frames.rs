//! Hostile frames: every protocol violation of SPEC §3 closes with its code
//! and ends the connection (with `on_close`), and a peer that never answers
//! our close frame is dropped after the close timeout.

mod hardening_common;

use std::time::{Duration, Instant};

use hardening_common::*;
use squall::testing::TestServer;
use squall::{Application, Message, WebSocket, WebSocketHandler};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

const MAX: usize = 1024;

struct Echo {
    closed: mpsc::UnboundedSender<()>,
}

impl WebSocketHandler for Echo {
    async fn on_message(&mut self, ws: &WebSocket, msg: Message) {
        if msg.as_text() == Some("close-me") {
            ws.close(1000, "bye");
            return;
        }
        ws.write_message(msg).await.ok();
    }
    async fn on_close(&mut self, _ws: &WebSocket) {
        let _ = self.closed.send(());
    }
}

async fn start(close_timeout: Duration) -> (TestServer, mpsc::UnboundedReceiver<()>) {
    let (closed, closed_rx) = mpsc::unbounded_channel();
    let app = Application::new()
        .websocket_max_message_size(MAX)
        .websocket_close_timeout(close_timeout)
        .websocket("/ws", move || Echo {
            closed: closed.clone(),
        });
    (TestServer::start(app).await, closed_rx)
}

/// Sends `bytes` after the upgrade and expects a close frame with `code`,
/// then the end of the connection and one `on_close`.
async fn expect_close_for(name: &str, bytes: Vec<u8>, code: u16) {
    let (server, mut closed) = start(Duration::from_secs(5)).await;
    let (mut tcp, rest) = raw_upgrade(server.addr(), "/ws").await;
    // A well-formed message first: the connection works before the violation.
    tcp.write_all(&client_frame(true, 1, b"fine"))
        .await
        .unwrap();
    let mut reader = FrameReader::new(tcp, rest);
    let echo = reader.next().await.expect("echo");
    assert_eq!((echo.opcode, echo.payload.as_slice()), (1, &b"fine"[..]));

    // Ignore write errors: the server may already be gone.
    let _ = reader.tcp.write_all(&bytes).await;
    let got = reader.expect_close().await;
    assert_eq!(got, Some(code), "{name}");
    reader.expect_eof().await;
    within("on_close", closed.recv()).await.unwrap();
    assert!(closed.try_recv().is_err(), "{name}: on_close ran twice");
    server.shutdown().await;
}

#[tokio::test]
async fn unmasked_client_frame_is_1002() {
    expect_close_for("unmasked", frame(true, 0, 1, None, b"hi"), 1002).await;
}

#[tokio::test]
async fn unknown_data_opcode_is_1002() {
    expect_close_for("opcode 3", client_frame(true, 3, b"hi"), 1002).await;
}

#[tokio::test]
async fn unknown_control_opcode_is_1002() {
    expect_close_for("opcode 11", client_frame(true, 11, b""), 1002).await;
}

#[tokio::test]
async fn reserved_bits_are_1002() {
    for rsv in [1, 2, 4] {
        expect_close_for("rsv", frame(true, rsv, 1, Some([1, 2, 3, 4]), b"hi"), 1002).await;
    }
}

#[tokio::test]
async fn fragmented_control_frame_is_1002() {
    expect_close_for("fragmented ping", client_frame(false, 9, b"x"), 1002).await;
}

#[tokio::test]
async fn long_control_frame_is_1002() {
    expect_close_for("126-byte ping", client_frame(true, 9, &[0u8; 126]), 1002).await;
}

#[tokio::test]
async fn continuation_without_start_is_1002() {
    expect_close_for("stray continuation", client_frame(true, 0, b"x"), 1002).await;
}

#[tokio::test]
async fn new_message_inside_fragmented_one_is_1002() {
    let mut bytes = client_frame(false, 1, b"a");
    bytes.extend(client_frame(true, 1, b"b"));
    expect_close_for("interleaved data", bytes, 1002).await;
}

#[tokio::test]
async fn one_byte_close_payload_is_1002() {
    expect_close_for("close with 1 byte", client_frame(true, 8, &[3]), 1002).await;
}

#[tokio::test]
async fn invalid_utf8_text_is_1007() {
    expect_close_for(
        "bad utf-8",
        client_frame(true, 1, &[0x68, 0xff, 0xfe]),
        1007,
    )
    .await;
}

#[tokio::test]
async fn invalid_utf8_across_fragments_is_1007() {
    let mut bytes = client_frame(false, 1, &[0xe2, 0x82]);
    bytes.extend(client_frame(true, 0, &[0x41]));
    expect_close_for("bad utf-8 fragments", bytes, 1007).await;
}

#[tokio::test]
async fn oversize_message_is_1009() {
    expect_close_for("oversize", client_frame(true, 2, &vec![7u8; MAX + 1]), 1009).await;
}

#[tokio::test]
async fn oversize_fragmented_message_is_1009() {
    // Each fragment is under the limit; together they pass it.
    let mut bytes = client_frame(false, 2, &vec![7u8; MAX / 2]);
    bytes.extend(client_frame(false, 0, &vec![7u8; MAX / 2]));
    bytes.extend(client_frame(true, 0, &vec![7u8; MAX / 2]));
    expect_close_for("oversize fragments", bytes, 1009).await;
}

/// A frame header announcing a huge payload is refused at the header, without
/// waiting for (or buffering) the payload.
#[tokio::test]
async fn huge_length_header_is_refused_at_once() {
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    expect_close_for("2^40-byte frame header", header, 1009).await;
}

/// The server closes (the handler calls `ws.close`), the client never sends
/// its close frame: the TCP connection is dropped after the close timeout and
/// `on_close` runs.
#[tokio::test]
async fn peer_silent_in_close_handshake_is_dropped_after_timeout() {
    let close_timeout = Duration::from_millis(300);
    let (server, mut closed) = start(close_timeout).await;
    let (mut tcp, rest) = raw_upgrade(server.addr(), "/ws").await;
    tcp.write_all(&client_frame(true, 1, b"close-me"))
        .await
        .unwrap();
    let mut reader = FrameReader::new(tcp, rest);
    let frame = reader.next().await.expect("the server's close frame");
    assert_eq!(frame.close_code(), Some(1000));
    let started = Instant::now();
    // Never reply; the server must hang up by itself.
    reader.expect_eof().await;
    let waited = started.elapsed();
    assert!(
        waited >= close_timeout / 2,
        "dropped before the timeout: {waited:?}"
    );
    assert!(waited < close_timeout * 10, "dropped too late: {waited:?}");
    within("on_close", closed.recv()).await.unwrap();
    server.shutdown().await;
}

/// A peer that vanishes in the middle of a frame: `on_close` runs once.
#[tokio::test]
async fn peer_vanishing_mid_message_runs_on_close_once() {
    let (server, mut closed) = start(Duration::from_secs(5)).await;
    let (mut tcp, _rest) = raw_upgrade(server.addr(), "/ws").await;
    // Half a frame, then EOF.
    let half = client_frame(true, 1, b"hello world");
    tcp.write_all(&half[..5]).await.unwrap();
    drop(tcp);
    within("on_close", closed.recv()).await.unwrap();
    assert!(closed.try_recv().is_err());
    server.shutdown().await;
}
