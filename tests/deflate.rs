//! permessage-deflate (RFC 7692): negotiation on the wire (the exact
//! response header, offers declined), both directions between squall's
//! client and server, hand-made compressed frames (fragmented, with a ping
//! between the fragments), the reserved-bit rules, and corrupt data.
//! The zip bomb has its own file (`deflate_bomb.rs`) so that it can measure
//! the process's memory alone.

mod common;

use bytes::Bytes;
use common::*;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use squall::testing::{next_message, next_text, TestServer};
use squall::{
    Application, CompressionOptions, ConnectOptions, Message, WebSocket, WebSocketHandler,
};
use tokio::io::AsyncWriteExt;

struct Echo {
    compression: Option<CompressionOptions>,
}

impl WebSocketHandler for Echo {
    fn compression_options(&self) -> Option<CompressionOptions> {
        self.compression.clone()
    }

    async fn on_message(&mut self, ws: &WebSocket, msg: Message) {
        ws.write_message(msg).await.ok();
    }
}

async fn start() -> TestServer {
    let app = Application::new()
        .websocket_max_message_size(1024 * 1024)
        .websocket("/plain", || Echo { compression: None })
        .websocket("/deflate", || Echo {
            compression: Some(CompressionOptions::new()),
        })
        .websocket("/lean", || Echo {
            compression: Some(
                CompressionOptions::new()
                    .server_no_context_takeover(true)
                    .client_no_context_takeover(true)
                    .server_max_window_bits(9)
                    .client_max_window_bits(9),
            ),
        })
        .websocket("/small", || Echo {
            compression: Some(CompressionOptions::new().mem_level(1)),
        });
    TestServer::start(app).await
}

/// Raw deflate with a sync flush, trailer dropped: one message's payload.
fn compress(compressor: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    compressor
        .compress_vec(data, &mut out, FlushCompress::Sync)
        .unwrap();
    assert!(out.len() < out.capacity(), "flush complete");
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

fn inflate(decompressor: &mut Decompress, data: &[u8]) -> Vec<u8> {
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(4 * 1024 * 1024);
    decompressor
        .decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    out
}

async fn offer(server: &TestServer, path: &str, offer: &str) -> (RawResponse, Raw) {
    Upgrade::new(server.addr(), path)
        .header("Sec-WebSocket-Extensions", offer)
        .send(server.addr())
        .await
}

#[tokio::test]
async fn the_response_header_is_exact() {
    let server = start().await;
    let cases = [
        (
            "/deflate",
            "permessage-deflate; client_max_window_bits",
            Some("permessage-deflate"),
        ),
        (
            "/deflate",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10",
            Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=10"),
        ),
        (
            "/lean",
            "permessage-deflate; client_max_window_bits",
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 client_max_window_bits=9",
            ),
        ),
        // The memory level is the server's own business: not in the answer.
        (
            "/small",
            "permessage-deflate; client_max_window_bits",
            Some("permessage-deflate"),
        ),
        (
            "/small",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10",
            Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=10"),
        ),
        // An unknown parameter declines that offer; the next one is taken.
        (
            "/deflate",
            "permessage-deflate; foo=1, permessage-deflate; client_no_context_takeover",
            Some("permessage-deflate; client_no_context_takeover"),
        ),
        // Declined: the handler did not opt in, nothing acceptable, malformed.
        ("/plain", "permessage-deflate", None),
        (
            "/deflate",
            "permessage-deflate; server_max_window_bits=20",
            None,
        ),
        ("/deflate", "x-webkit-deflate-frame", None),
        ("/deflate", "permessage-deflate; ;;==", None),
        ("/deflate", "permessage-deflate; a=\"open", None),
    ];
    for (path, offered, expected) in cases {
        let (response, _raw) = offer(&server, path, offered).await;
        assert_accepted(&response);
        assert_eq!(
            response.header("sec-websocket-extensions"),
            expected,
            "{path} {offered}"
        );
    }
}

#[tokio::test]
async fn the_client_and_server_compress_both_ways() {
    let server = start().await;
    for (path, mem_level) in [("/deflate", 8), ("/lean", 8), ("/small", 1)] {
        let mut client = server
            .try_connect(
                path,
                ConnectOptions::new().compression(CompressionOptions::new().mem_level(mem_level)),
            )
            .await
            .unwrap();
        assert!(client.compression_agreed(), "{path}");
        let chat = r#"{"user":"ada","room":"general","text":"hello, hello, hello world"}"#;
        let big = chat.repeat(2000); // ~140 KiB: many inflate chunks
        for text in [chat, "", big.as_str(), chat, chat] {
            client.send(text).await.unwrap();
            assert_eq!(next_text(&mut client).await, text, "{path}");
        }
        let binary: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        client.send(binary.clone()).await.unwrap();
        assert_eq!(
            next_message(&mut client).await,
            Message::Binary(binary.into())
        );
        client.close(1000, "done").await;
    }

    // Offered but declined by the handler: plain messages both ways.
    let mut client = server
        .try_connect(
            "/plain",
            ConnectOptions::new().compression(CompressionOptions::new()),
        )
        .await
        .unwrap();
    assert!(!client.compression_agreed());
    client.send("plain").await.unwrap();
    assert_eq!(next_text(&mut client).await, "plain");
}

#[tokio::test]
async fn compressed_frames_are_inflated_and_replies_compressed() {
    let server = start().await;
    let (response, mut raw) = offer(&server, "/deflate", "permessage-deflate").await;
    assert_eq!(
        response.header("sec-websocket-extensions"),
        Some("permessage-deflate")
    );
    let mut compressor = Compress::new(Compression::default(), false);
    let mut decompressor = Decompress::new(false);

    // One frame.
    let payload = compress(&mut compressor, b"hello hello hello");
    raw.write_all(&Frame::new(TEXT).rsv(0b100).with(&payload))
        .await
        .unwrap();
    let echo = read_frame(&mut raw).await;
    assert_eq!((echo.fin, echo.rsv, echo.opcode), (true, 0b100, TEXT));
    assert_eq!(
        inflate(&mut decompressor, &echo.payload),
        b"hello hello hello"
    );

    // Three fragments, RSV1 on the first only, a ping between them (the
    // context carries over from the first message).
    let text = "fragmented and compressed ".repeat(50);
    let payload = compress(&mut compressor, text.as_bytes());
    let (a, rest) = payload.split_at(payload.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    let mut bytes = Frame::new(TEXT).rsv(0b100).not_final().with(a);
    bytes.extend(Frame::new(CONTINUATION).not_final().with(b));
    bytes.extend(Frame::new(PING).with(b"between"));
    bytes.extend(Frame::new(CONTINUATION).with(c));
    raw.write_all(&bytes).await.unwrap();
    let pong = read_frame(&mut raw).await;
    // Control frames are never compressed.
    assert_eq!(
        (pong.rsv, pong.opcode, &pong.payload[..]),
        (0, PONG, &b"between"[..])
    );
    let echo = read_frame(&mut raw).await;
    assert_eq!((echo.fin, echo.rsv, echo.opcode), (true, 0b100, TEXT));
    assert_eq!(inflate(&mut decompressor, &echo.payload), text.as_bytes());

    // An uncompressed message is still fine on a compressing connection.
    raw.write_all(&Frame::new(BINARY).with(b"raw"))
        .await
        .unwrap();
    let echo = read_frame(&mut raw).await;
    assert_eq!(echo.rsv, 0b100);
    assert_eq!(inflate(&mut decompressor, &echo.payload), b"raw");

    // The close frame is not compressed either.
    raw.write_all(&Frame::new(CLOSE).with(&1000u16.to_be_bytes()))
        .await
        .unwrap();
    let close = read_frame(&mut raw).await;
    assert_eq!((close.rsv, close.opcode), (0, CLOSE));
}

#[tokio::test]
async fn a_low_memory_level_sends_what_any_inflater_reads() {
    let server = start().await;
    let (response, mut raw) = offer(&server, "/small", "permessage-deflate").await;
    assert_eq!(
        response.header("sec-websocket-extensions"),
        Some("permessage-deflate")
    );
    let mut compressor = Compress::new(Compression::default(), false);
    // A plain zlib inflater, as tungstenite's or Python's would be.
    let mut decompressor = Decompress::new(false);
    // Far more symbols than memory level 1's 128-symbol buffer: the server
    // sends this message in many deflate blocks.
    let document: String = (0..4000u32)
        .map(|i| {
            format!(
                r#"{{"id":{i},"name":"user{}","score":{}}},"#,
                i % 97,
                i * 31 % 977
            )
        })
        .collect();
    for text in [document.as_str(), "short", document.as_str()] {
        let payload = compress(&mut compressor, text.as_bytes());
        raw.write_all(&Frame::new(TEXT).rsv(0b100).with(&payload))
            .await
            .unwrap();
        let echo = read_frame(&mut raw).await;
        assert_eq!((echo.fin, echo.rsv, echo.opcode), (true, 0b100, TEXT));
        assert!(echo.payload.len() < text.len().max(16), "compressed");
        assert_eq!(inflate(&mut decompressor, &echo.payload), text.as_bytes());
    }
}

async fn closes_with(server: &TestServer, path: &str, frames: &[Vec<u8>], code: u16) {
    let (response, mut raw) = offer(server, path, "permessage-deflate").await;
    assert_accepted(&response);
    for frame in frames {
        raw.write_all(frame).await.unwrap();
    }
    assert_eq!(read_close(&mut raw).await.0, code, "{path}");
}

#[tokio::test]
async fn reserved_bits_outside_the_extension_stay_1002() {
    let server = start().await;
    let mut compressor = Compress::new(Compression::default(), false);
    let hello = compress(&mut compressor, b"hello");
    // RSV1 without negotiation.
    closes_with(
        &server,
        "/plain",
        &[Frame::new(TEXT).rsv(0b100).with(&hello)],
        1002,
    )
    .await;
    // RSV2 and RSV3, with the extension.
    closes_with(
        &server,
        "/deflate",
        &[Frame::new(TEXT).rsv(0b010).with(b"x")],
        1002,
    )
    .await;
    closes_with(
        &server,
        "/deflate",
        &[Frame::new(TEXT).rsv(0b101).with(b"x")],
        1002,
    )
    .await;
    // RSV1 on a control frame, and on a continuation.
    closes_with(
        &server,
        "/deflate",
        &[Frame::new(PING).rsv(0b100).with(b"x")],
        1002,
    )
    .await;
    let fragments = [
        Frame::new(TEXT).rsv(0b100).not_final().with(&hello[..2]),
        Frame::new(CONTINUATION).rsv(0b100).with(&hello[2..]),
    ];
    closes_with(&server, "/deflate", &fragments, 1002).await;
    // A new message inside a compressed one.
    let fragments = [
        Frame::new(TEXT).rsv(0b100).not_final().with(&[]),
        Frame::new(TEXT).with(b"x"),
    ];
    closes_with(&server, "/deflate", &fragments, 1002).await;
}

#[tokio::test]
async fn bad_compressed_data_closes_1007() {
    let server = start().await;
    // 0xff starts a block of the reserved type 3.
    closes_with(
        &server,
        "/deflate",
        &[Frame::new(BINARY).rsv(0b100).with(&[0xff; 8])],
        1007,
    )
    .await;
    // Valid deflate, invalid UTF-8 inside: 1007 as uncompressed.
    let mut compressor = Compress::new(Compression::default(), false);
    let bad = compress(&mut compressor, &[0xc3, 0x28, 0x41]);
    closes_with(
        &server,
        "/deflate",
        &[Frame::new(TEXT).rsv(0b100).with(&bad)],
        1007,
    )
    .await;
}

#[tokio::test]
async fn an_oversized_inflated_message_closes_1009() {
    let server = start().await;
    let mut compressor = Compress::new(Compression::default(), false);
    let big = compress(&mut compressor, &vec![b'a'; 1024 * 1024 + 1]);
    assert!(big.len() < 4096);
    closes_with(
        &server,
        "/deflate",
        &[Frame::new(TEXT).rsv(0b100).with(&big)],
        1009,
    )
    .await;
    // Exactly at the limit is fine.
    let (_, mut raw) = offer(&server, "/lean", "permessage-deflate").await;
    let mut compressor = Compress::new(Compression::default(), false);
    let fits = compress(&mut compressor, &vec![b'a'; 1024 * 1024]);
    raw.write_all(&Frame::new(TEXT).rsv(0b100).with(&fits))
        .await
        .unwrap();
    let echo = read_frame(&mut raw).await;
    let mut decompressor = Decompress::new(false);
    assert_eq!(inflate(&mut decompressor, &echo.payload).len(), 1024 * 1024);
}

#[tokio::test]
async fn broadcast_reaches_compressing_and_plain_receivers() {
    struct Member {
        compression: Option<CompressionOptions>,
    }
    impl WebSocketHandler for Member {
        fn compression_options(&self) -> Option<CompressionOptions> {
            self.compression.clone()
        }
        async fn open(&mut self, ws: &WebSocket) {
            ws.join("room");
            ws.write_message("joined").await.ok();
        }
        async fn on_message(&mut self, _ws: &WebSocket, _msg: Message) {}
    }
    let app = Application::new()
        .websocket("/plain", || Member { compression: None })
        .websocket("/shared", || Member {
            compression: Some(CompressionOptions::new().server_no_context_takeover(true)),
        })
        .websocket("/own", || Member {
            compression: Some(CompressionOptions::new()),
        });
    let server = TestServer::start(app).await;
    let options = || ConnectOptions::new().compression(CompressionOptions::new());
    let mut clients = Vec::new();
    for path in ["/plain", "/shared", "/shared", "/own", "/own"] {
        let mut client = server.try_connect(path, options()).await.unwrap();
        assert_eq!(client.compression_agreed(), path != "/plain");
        assert_eq!(next_text(&mut client).await, "joined");
        clients.push(client);
    }
    let text = "news for everyone ".repeat(30);
    for _ in 0..3 {
        assert_eq!(
            server.handle().broadcast("room", Bytes::from(text.clone())),
            5
        );
        for client in &mut clients {
            assert_eq!(next_message(client).await.as_bytes(), text.as_bytes());
        }
    }
}

#[tokio::test]
async fn a_compressed_frame_sent_with_the_upgrade_request_is_inflated() {
    let server = start().await;
    let mut compressor = Compress::new(Compression::default(), false);
    let payload = compress(&mut compressor, b"right away");
    let mut bytes = Upgrade::new(server.addr(), "/deflate")
        .header("Sec-WebSocket-Extensions", "permessage-deflate")
        .to_bytes();
    bytes.extend(Frame::new(TEXT).rsv(0b100).with(&payload));
    let mut raw = open(server.addr()).await;
    raw.write_all(&bytes).await.unwrap();
    let response = read_response(&mut raw, true).await;
    assert_eq!(
        response.header("sec-websocket-extensions"),
        Some("permessage-deflate")
    );
    let echo = read_frame(&mut raw).await;
    assert_eq!((echo.rsv, echo.opcode), (0b100, TEXT));
    let mut decompressor = Decompress::new(false);
    assert_eq!(inflate(&mut decompressor, &echo.payload), b"right away");
}
