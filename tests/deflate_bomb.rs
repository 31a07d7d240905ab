//! A zip bomb: a compressed message of a couple of megabytes that would
//! inflate to gigabytes. squall inflates it no further than
//! `websocket_max_message_size` (default 10 MiB), closes with 1009, and the
//! process's memory stays bounded. Alone in its file so that the memory it
//! reads (`VmRSS` of this test process) is its own.

mod common;

use common::*;
use flate2::{Compress, Compression, FlushCompress};
use squall::testing::TestServer;
use squall::{Application, CompressionOptions, Message, WebSocket, WebSocketHandler};
use tokio::io::AsyncWriteExt;

struct Echo;

impl WebSocketHandler for Echo {
    fn compression_options(&self) -> Option<CompressionOptions> {
        Some(CompressionOptions::new())
    }

    async fn on_message(&mut self, ws: &WebSocket, msg: Message) {
        ws.write_message(msg).await.ok();
    }
}

const MIB: usize = 1024 * 1024;

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    let kib: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS value");
    kib * 1024
}

/// The deflate stream of `first` then `repeat` more MiB of zeros, as the
/// first MiB's bytes and the bytes of one more MiB: once the window is full
/// of zeros, every further MiB compresses to the same bytes.
fn bomb_parts() -> (Vec<u8>, Vec<u8>) {
    let zeros = vec![0u8; MIB];
    let mut compressor = Compress::new(Compression::best(), false);
    let mut part = |_: usize| {
        let mut out = Vec::with_capacity(64 * 1024);
        compressor
            .compress_vec(&zeros, &mut out, FlushCompress::Sync)
            .unwrap();
        out
    };
    let first = part(0);
    let more = part(1);
    assert_eq!(more, part(2), "every further MiB compresses alike");
    (first, more)
}

#[tokio::test]
async fn a_zip_bomb_closes_1009_without_inflating_the_rest() {
    let server = TestServer::start(Application::new().websocket("/", || Echo)).await;
    let (first, more) = bomb_parts();
    // 2 GiB of zeros in one frame of a couple of MiB.
    let copies = 2047;
    let mut payload = first.clone();
    for _ in 0..copies {
        payload.extend_from_slice(&more);
    }
    let inflated = (copies + 1) * MIB;
    assert!(payload.len() * 500 < inflated, "{} bytes", payload.len());

    let before = rss_bytes();
    let (response, mut raw) = Upgrade::new(server.addr(), "/")
        .header("Sec-WebSocket-Extensions", "permessage-deflate")
        .send(server.addr())
        .await;
    assert_eq!(
        response.header("sec-websocket-extensions"),
        Some("permessage-deflate")
    );
    raw.write_all(&Frame::new(BINARY).rsv(0b100).with(&payload))
        .await
        .unwrap();
    assert_eq!(read_close(&mut raw).await.0, 1009);
    let grown = rss_bytes().saturating_sub(before);
    eprintln!(
        "bomb: {} KiB frame, {} MiB if inflated; memory grew by {} KiB",
        payload.len() / 1024,
        inflated / MIB,
        grown / 1024
    );
    // The limit (10 MiB, held by tungstenite as the message grows), the
    // frame itself on both sides, and some slack: far from 2 GiB.
    assert!(grown < 64 * MIB, "memory grew by {} MiB", grown / MIB);

    // The same bomb in small fragments: each frame is a few hundred bytes.
    let (_, mut raw) = Upgrade::new(server.addr(), "/")
        .header("Sec-WebSocket-Extensions", "permessage-deflate")
        .send(server.addr())
        .await;
    let mut bytes = Frame::new(BINARY).rsv(0b100).not_final().with(&first);
    for _ in 0..64 {
        bytes.extend(Frame::new(CONTINUATION).not_final().with(&more));
    }
    assert!(more.len() < 4096, "a fragment of {} bytes", more.len());
    raw.write_all(&bytes).await.unwrap();
    assert_eq!(read_close(&mut raw).await.0, 1009);
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 64 * MIB, "memory grew by {} MiB", grown / MIB);
}
