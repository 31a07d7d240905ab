//! The write path: data frames are written from the buffers they were
//! queued in, beside tungstenite's own frames (pongs, pings, the close). A
//! peer reading slowly sees every frame whole and in order, whatever mix of
//! large messages and control frames the server had to interleave. With
//! permessage-deflate the compressed payloads take the same path (RSV1 set
//! in the header squall builds), and a broadcast compressed once for
//! receivers that share their settings is framed once.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use squall::testing::{next_message, next_text, within, TestServer};
use squall::{
    Application, CompressionOptions, ConnectOptions, Message, WebSocket, WebSocketHandler,
};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const BIG: usize = 300 * 1024;
const ROUNDS: usize = 24;

struct Echo;

impl WebSocketHandler for Echo {
    async fn on_message(&mut self, ws: &WebSocket, msg: Message) {
        ws.write_message(msg).await.ok();
    }
}

fn payload(round: usize) -> Vec<u8> {
    (0..BIG).map(|i| (i + round) as u8).collect()
}

/// Bytes deflate cannot shrink (xorshift), so that the compressed payload
/// stays above the size written from its own buffer.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

struct CompressingEcho(CompressionOptions);

impl WebSocketHandler for CompressingEcho {
    fn compression_options(&self) -> Option<CompressionOptions> {
        Some(self.0.clone())
    }

    async fn on_message(&mut self, ws: &WebSocket, msg: Message) {
        ws.write_message(msg).await.ok();
    }
}

#[tokio::test]
async fn large_compressed_echoes_and_pings_interleaved_arrive_whole_and_in_order() {
    let lean = CompressionOptions::new()
        .server_no_context_takeover(true)
        .client_no_context_takeover(true);
    let app = Application::new()
        .websocket_max_message_size(1 << 20)
        .websocket("/deflate", || CompressingEcho(CompressionOptions::new()))
        .websocket("/lean", move || CompressingEcho(lean.clone()));
    let server = TestServer::start(app).await;
    for path in ["/deflate", "/lean"] {
        let options = ConnectOptions::new()
            .max_message_size(1 << 20)
            .compression(CompressionOptions::new());
        let mut client = server.try_connect(path, options).await.unwrap();
        assert!(client.compression_agreed());
        let sender = client.sender();
        // Everything is sent before anything is read: the server's replies
        // outrun this reader, so its large frames go out in pieces while
        // pongs wait in tungstenite's buffer.
        let writer = tokio::spawn(async move {
            for round in 0..8u64 {
                sender.send(noise(BIG, round)).await.unwrap();
                sender.ping(vec![round as u8]).await.unwrap();
                sender.send(format!("small {round}")).await.unwrap();
            }
        });
        for round in 0..8u64 {
            let echo = next_message(&mut client).await;
            assert!(
                echo.as_bytes() == &noise(BIG, round)[..],
                "{path}: echo {round} intact"
            );
            assert_eq!(next_text(&mut client).await, format!("small {round}"));
        }
        writer.await.unwrap();
        client.close(1000, "done").await;
    }
}

#[tokio::test]
async fn a_large_broadcast_reaches_plain_shared_and_own_compression_receivers_whole() {
    struct Member(Option<CompressionOptions>);
    impl WebSocketHandler for Member {
        fn compression_options(&self) -> Option<CompressionOptions> {
            self.0.clone()
        }
        async fn open(&mut self, ws: &WebSocket) {
            ws.join("room");
            ws.write_message("joined").await.ok();
        }
        async fn on_message(&mut self, _ws: &WebSocket, _msg: Message) {}
    }
    let app = Application::new()
        .websocket_max_message_size(1 << 20)
        .websocket("/plain", || Member(None))
        .websocket("/shared", || {
            Member(Some(
                CompressionOptions::new().server_no_context_takeover(true),
            ))
        })
        .websocket("/own", || Member(Some(CompressionOptions::new())));
    let server = TestServer::start(app).await;
    let mut clients = Vec::new();
    for path in ["/plain", "/shared", "/shared", "/own", "/plain"] {
        let options = ConnectOptions::new()
            .max_message_size(1 << 20)
            .compression(CompressionOptions::new());
        let mut client = server.try_connect(path, options).await.unwrap();
        assert_eq!(next_text(&mut client).await, "joined");
        clients.push(client);
    }
    // Large and incompressible (written from the frame built once), then
    // small and compressible (through tungstenite), in turn.
    for round in 0..4u64 {
        let big = Bytes::from(noise(100 * 1024, round));
        assert_eq!(server.handle().broadcast("room", big), 5);
        assert_eq!(server.handle().broadcast("room", "news ".repeat(40)), 5);
    }
    for client in &mut clients {
        for round in 0..4u64 {
            let big = next_message(client).await;
            assert!(
                big.as_bytes() == &noise(100 * 1024, round)[..],
                "round {round}"
            );
            assert_eq!(next_text(client).await, "news ".repeat(40));
        }
    }
}

#[tokio::test]
async fn large_echoes_and_pongs_interleaved_arrive_whole_and_in_order() {
    let app = Application::new()
        .websocket_max_message_size(1 << 20)
        .websocket("/ws", || Echo);
    let server = TestServer::start(app).await;
    let url = format!("ws://{}/ws", server.addr());
    let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let (mut sink, mut stream) = socket.split();

    // Writes run beside the reads: the server's writes outrun this reader,
    // so its frames go out in pieces while pings keep arriving.
    let writer = tokio::spawn(async move {
        for round in 0..ROUNDS {
            sink.send(WsMessage::binary(payload(round))).await.unwrap();
            sink.send(WsMessage::Ping(vec![round as u8].into()))
                .await
                .unwrap();
            sink.send(WsMessage::text(format!("small {round}")))
                .await
                .unwrap();
        }
        sink
    });

    let (mut binaries, mut texts, mut pongs) = (0, 0, 0);
    within("every echo and pong", async {
        while binaries < ROUNDS || texts < ROUNDS || pongs < ROUNDS {
            match stream.next().await.expect("open").expect("a valid frame") {
                WsMessage::Binary(data) => {
                    assert!(data[..] == payload(binaries)[..], "echo {binaries} intact");
                    binaries += 1;
                }
                WsMessage::Text(text) => {
                    assert_eq!(text.as_str(), format!("small {texts}"));
                    texts += 1;
                }
                WsMessage::Pong(data) => {
                    assert_eq!(data[..], [pongs as u8]);
                    pongs += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    let mut sink = writer.await.unwrap();
    sink.close().await.unwrap();
}
