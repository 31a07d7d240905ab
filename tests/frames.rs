//! SPEC §3, the frame rows: every protocol violation closes with its code
//! (1002, 1007, 1009), sends nothing after the close frame and ends the
//! connection, with exactly one `on_close`; a peer still writing an oversized
//! message gets to read the 1009; a peer that never answers our close frame is
//! dropped after the close timeout.

mod common;

use std::time::{Duration, Instant};

use common::*;
use squall::testing::{within, TestServer};
use squall::{Application, Message, WebSocket, WebSocketHandler};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

const MAX: usize = 1024;

type Closed = mpsc::UnboundedReceiver<()>;

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

async fn start(close_timeout: Duration) -> (TestServer, Closed) {
    let (closed, closed_rx) = mpsc::unbounded_channel();
    let app = Application::new()
        .websocket_max_message_size(MAX)
        .websocket_close_timeout(close_timeout)
        .websocket("/ws", move || Echo {
            closed: closed.clone(),
        });
    (TestServer::start(app).await, closed_rx)
}

/// Upgrades a raw connection and checks that a well-formed message is
/// echoed: the connection works before the violation.
async fn working_connection(server: &TestServer) -> Raw {
    let mut raw = raw_websocket(server.addr(), "/ws").await;
    raw.write_all(&Frame::new(TEXT).with(b"fine"))
        .await
        .unwrap();
    let echo = read_frame(&mut raw).await;
    assert_eq!(
        (echo.fin, echo.opcode, echo.payload.as_slice()),
        (true, TEXT, &b"fine"[..])
    );
    raw
}

/// Sends `bytes` and expects a close frame with `code`, then the end of the
/// connection with nothing more, and one `on_close`.
async fn assert_closes(name: &str, raw: &mut Raw, closed: &mut Closed, bytes: &[u8], code: u16) {
    // Ignore write errors: the server may already be gone.
    let _ = raw.write_all(bytes).await;
    let (got, _reason) = read_close(raw).await;
    assert_eq!(got, code, "{name}");
    assert_eq!(read_to_eof(raw).await, b"", "{name}: bytes after the close");
    // As a real client does once the server has closed: close our side too,
    // which ends the server's lingering read at once.
    let _ = raw.get_mut().shutdown().await;
    within("on_close", closed.recv()).await.unwrap();
    assert!(closed.try_recv().is_err(), "{name}: on_close ran twice");
}

/// [`assert_closes`] on a fresh working connection.
async fn expect_close_for(name: &str, bytes: Vec<u8>, code: u16) {
    let (server, mut closed) = start(Duration::from_secs(5)).await;
    let mut raw = working_connection(&server).await;
    assert_closes(name, &mut raw, &mut closed, &bytes, code).await;
    server.shutdown().await;
}

#[tokio::test]
async fn unmasked_client_frame_is_1002() {
    expect_close_for("unmasked", Frame::new(TEXT).unmasked().with(b"hi"), 1002).await;
}

#[tokio::test]
async fn unknown_data_opcode_is_1002() {
    expect_close_for("opcode 3", Frame::new(0x3).with(b"hi"), 1002).await;
}

#[tokio::test]
async fn unknown_control_opcode_is_1002() {
    expect_close_for("opcode 11", Frame::new(0xb).with(b""), 1002).await;
}

#[tokio::test]
async fn reserved_bits_are_1002() {
    // RSV1, RSV2, RSV3, none of them negotiated by an extension.
    for rsv in [0b100, 0b010, 0b001] {
        expect_close_for("rsv", Frame::new(TEXT).rsv(rsv).with(b"hi"), 1002).await;
    }
}

#[tokio::test]
async fn fragmented_control_frame_is_1002() {
    expect_close_for(
        "fragmented ping",
        Frame::new(PING).not_final().with(b"x"),
        1002,
    )
    .await;
}

#[tokio::test]
async fn long_control_frame_is_1002() {
    expect_close_for("126-byte ping", Frame::new(PING).with(&[0u8; 126]), 1002).await;
}

#[tokio::test]
async fn continuation_without_start_is_1002() {
    expect_close_for(
        "stray continuation",
        Frame::new(CONTINUATION).with(b"x"),
        1002,
    )
    .await;
}

#[tokio::test]
async fn new_message_inside_fragmented_one_is_1002() {
    let bytes = [
        Frame::new(TEXT).not_final().with(b"a"),
        Frame::new(TEXT).with(b"b"),
    ]
    .concat();
    expect_close_for("interleaved data", bytes, 1002).await;
}

#[tokio::test]
async fn one_byte_close_payload_is_1002() {
    expect_close_for("close with 1 byte", Frame::new(CLOSE).with(&[3]), 1002).await;
}

#[tokio::test]
async fn invalid_utf8_text_is_1007() {
    // Bytes that never occur in UTF-8; a lead byte without its continuation.
    for payload in [&[0x68, 0xff, 0xfe][..], &[0xc3, 0x28]] {
        expect_close_for("bad utf-8", Frame::new(TEXT).with(payload), 1007).await;
    }
}

#[tokio::test]
async fn invalid_utf8_across_fragments_is_1007() {
    let bytes = [
        Frame::new(TEXT).not_final().with(&[0xe2, 0x82]),
        Frame::new(CONTINUATION).with(&[0x41]),
    ]
    .concat();
    expect_close_for("bad utf-8 fragments", bytes, 1007).await;
}

/// A message of exactly the limit is delivered; one byte more is 1009.
#[tokio::test]
async fn message_over_max_message_size_is_1009() {
    for opcode in [TEXT, BINARY] {
        let (server, mut closed) = start(Duration::from_secs(5)).await;
        let mut raw = working_connection(&server).await;
        let at_limit = vec![b'a'; MAX];
        raw.write_all(&Frame::new(opcode).with(&at_limit))
            .await
            .unwrap();
        let echo = read_frame(&mut raw).await;
        assert_eq!((echo.opcode, echo.payload), (opcode, at_limit));
        let over = Frame::new(opcode).with(&[b'a'; MAX + 1]);
        assert_closes("oversize", &mut raw, &mut closed, &over, 1009).await;
        server.shutdown().await;
    }
}

#[tokio::test]
async fn oversize_fragmented_message_is_1009() {
    // Each fragment is under the limit; together they pass it.
    let bytes = [
        Frame::new(BINARY).not_final().with(&[7u8; MAX / 2]),
        Frame::new(CONTINUATION).not_final().with(&[7u8; MAX / 2]),
        Frame::new(CONTINUATION).with(&[7u8; MAX / 2]),
    ]
    .concat();
    expect_close_for("oversize fragments", bytes, 1009).await;
}

/// A frame header announcing a huge payload is refused at the header, without
/// waiting for (or buffering) the payload.
#[tokio::test]
async fn huge_length_header_is_refused_at_once() {
    let head = Frame::new(BINARY).head(1 << 40);
    expect_close_for("2^40-byte frame header", head, 1009).await;
}

/// A peer still writing an oversized message when the server closes with
/// 1009 can finish and read that close frame: after a protocol error the
/// server reads and discards until the peer closes, instead of resetting the
/// connection (a client whose write fails may never read the close frame:
/// Python's websockets then reports 1006).
#[tokio::test]
async fn close_1009_reaches_a_peer_still_writing() {
    let (server, mut closed) = start(Duration::from_secs(5)).await;
    let raw = raw_websocket(server.addr(), "/ws").await;
    let (mut reader, mut writer) = tokio::io::split(raw);
    let size: u64 = 8 * 1024 * 1024;
    let writing = tokio::spawn(async move {
        writer.write_all(&Frame::new(BINARY).head(size)).await?;
        let chunk = vec![0x5a; 64 * 1024];
        for _ in 0..size / chunk.len() as u64 {
            writer.write_all(&chunk).await?;
        }
        writer.shutdown().await
    });
    assert_eq!(read_close(&mut reader).await.0, 1009);
    within("the writer", writing)
        .await
        .unwrap()
        .expect("the peer's write was not reset");
    within("on_close", closed.recv()).await.unwrap();
    server.shutdown().await;
}

/// The server closes (the handler calls `ws.close`), the client never sends
/// its close frame: the TCP connection is dropped after the close timeout and
/// `on_close` runs.
#[tokio::test]
async fn peer_silent_in_close_handshake_is_dropped_after_timeout() {
    let close_timeout = Duration::from_millis(300);
    let (server, mut closed) = start(close_timeout).await;
    let mut raw = raw_websocket(server.addr(), "/ws").await;
    raw.write_all(&Frame::new(TEXT).with(b"close-me"))
        .await
        .unwrap();
    let frame = read_frame(&mut raw).await;
    assert_eq!(frame.opcode, CLOSE, "the server's close frame");
    assert_eq!(frame.payload, [&1000u16.to_be_bytes()[..], b"bye"].concat());
    let started = Instant::now();
    // Never reply; the server must hang up by itself, sending nothing more.
    assert_eq!(read_to_eof(&mut raw).await, b"");
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
    let mut raw = raw_websocket(server.addr(), "/ws").await;
    // Half a frame, then EOF.
    let half = Frame::new(TEXT).with(b"hello world");
    raw.write_all(&half[..5]).await.unwrap();
    drop(raw);
    within("on_close", closed.recv()).await.unwrap();
    assert!(closed.try_recv().is_err());
    server.shutdown().await;
}
