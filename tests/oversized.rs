//! A peer still writing an oversized message when squall closes with 1009
//! must be able to finish and read that close frame: after a protocol error
//! squall keeps reading (and discarding) until the peer closes, instead of
//! resetting the connection.

use squall::testing::{within, TestServer};
use squall::{Application, Message, WebSocket, WebSocketHandler};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Echo;

impl WebSocketHandler for Echo {
    async fn on_message(&mut self, ws: &WebSocket, message: Message) {
        ws.write_message(message).await.ok();
    }
}

/// Reads server frames after the 101 head until a close frame; its code.
async fn read_close_code(reader: &mut (impl AsyncReadExt + Unpin)) -> Option<u16> {
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut head_done = false;
    loop {
        let n = reader.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&chunk[..n]);
        if !head_done {
            let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            assert!(data.starts_with(b"HTTP/1.1 101"));
            data.drain(..end + 4);
            head_done = true;
        }
        // The server's frames are small and unmasked: 2-byte headers.
        while data.len() >= 2 && data.len() >= 2 + usize::from(data[1] & 0x7f) {
            let len = usize::from(data[1] & 0x7f);
            if data[0] & 0x0f == 0x8 {
                return Some(u16::from_be_bytes([data[2], data[3]]));
            }
            data.drain(..2 + len);
        }
    }
}

#[tokio::test]
async fn close_1009_reaches_a_peer_still_writing() {
    let app = Application::new()
        .websocket("/ws", || Echo)
        .websocket_max_message_size(64 * 1024);
    let server = TestServer::start(app).await;

    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    let (mut reader, mut writer) = tcp.into_split();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr()
    );
    writer.write_all(request.as_bytes()).await.unwrap();

    // A masked binary frame announcing 8 MiB, then its payload, written on
    // while the server refuses it.
    let size: u64 = 8 * 1024 * 1024;
    let writing = tokio::spawn(async move {
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&size.to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        writer.write_all(&header).await?;
        let chunk = vec![0x5a; 64 * 1024];
        for _ in 0..size / chunk.len() as u64 {
            writer.write_all(&chunk).await?;
        }
        writer.shutdown().await
    });

    let code = within("the close frame", read_close_code(&mut reader)).await;
    assert_eq!(code, Some(1009));
    // The server read and discarded the rest instead of resetting the
    // connection: the whole write went through (a client whose write fails
    // may never read the close frame: Python's websockets then reports 1006).
    within("the writer", writing)
        .await
        .unwrap()
        .expect("the peer's write was not reset");
    server.shutdown().await;
}
