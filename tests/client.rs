//! `squall::connect` against a server that is not squall (one written
//! directly on tokio-tungstenite in each test), and its send queue against a
//! squall echo server.

use std::future::Future;
use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use squall::testing::{assert_closed_with, next_message, next_text, within, TestServer};
use squall::{Application, ClientError, ConnectOptions, Message, WebSocket, WebSocketHandler};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as HsRequest, Response as HsResponse,
};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as TtMessage;
use tokio_tungstenite::WebSocketStream;

/// Serves one connection with `serve`, on a plain tokio-tungstenite server.
async fn foreign_server<F, Fut>(serve: F) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: FnOnce(WebSocketStream<TcpStream>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        serve(ws).await;
    });
    (addr, task)
}

/// Echoes data messages until the client closes.
async fn echo(mut ws: WebSocketStream<TcpStream>) {
    while let Some(Ok(message)) = ws.next().await {
        if message.is_text() || message.is_binary() {
            ws.send(message).await.unwrap();
        }
    }
}

#[tokio::test]
async fn echo_with_a_tokio_tungstenite_server() {
    let (addr, server) = foreign_server(echo).await;
    let mut client = squall::connect(&format!("ws://{addr}/")).await.unwrap();

    client.send("hello world").await.unwrap();
    assert_eq!(next_text(&mut client).await, "hello world");
    client.send(vec![0u8, 1, 2, 255]).await.unwrap();
    match next_message(&mut client).await {
        Message::Binary(data) => assert_eq!(&data[..], &[0, 1, 2, 255]),
        other => panic!("expected binary, got {other:?}"),
    }
    client
        .send(Message::json(&serde_json::json!({"n": 1})).unwrap())
        .await
        .unwrap();
    assert_eq!(next_text(&mut client).await, r#"{"n":1}"#);

    client.close(1000, "bye").await;
    assert!(client.is_closed());
    within("the server", server).await.unwrap();
}

#[tokio::test]
async fn server_ping_is_answered_while_the_client_reads() {
    let (addr, server) = foreign_server(|mut ws| async move {
        ws.send(TtMessage::Ping("are you there".into()))
            .await
            .unwrap();
        loop {
            match ws.next().await {
                Some(Ok(TtMessage::Pong(data))) => {
                    assert_eq!(&data[..], b"are you there");
                    break;
                }
                Some(Ok(_)) => {}
                other => panic!("no pong: {other:?}"),
            }
        }
        ws.send(TtMessage::text("got your pong")).await.unwrap();
        echo(ws).await;
    })
    .await;
    let mut client = squall::connect(&format!("ws://{addr}/")).await.unwrap();
    // The client only reads: the pong goes out underneath.
    assert_eq!(next_text(&mut client).await, "got your pong");
    client.close(1000, "").await;
    within("the server", server).await.unwrap();
}

#[tokio::test]
async fn server_close_code_and_reason_are_exposed() {
    let (addr, server) = foreign_server(|mut ws| async move {
        ws.send(TtMessage::text("before the close")).await.unwrap();
        ws.close(Some(CloseFrame {
            code: CloseCode::from(4001),
            reason: "reason".into(),
        }))
        .await
        .unwrap();
        // Wait for the client's answer to the close.
        while ws.next().await.is_some() {}
    })
    .await;
    let mut client = squall::connect(&format!("ws://{addr}/")).await.unwrap();
    assert!(!client.is_closed());
    assert_eq!(next_text(&mut client).await, "before the close");
    assert_closed_with(&mut client, 4001).await;
    assert_eq!(client.close_reason(), Some("reason"));
    assert!(client.is_closed());
    assert!(client.send("late").await.is_err());
    within("the server", server).await.unwrap();
}

#[tokio::test]
async fn client_max_message_size_refuses_a_larger_message() {
    let (addr, server) = foreign_server(|mut ws| async move {
        ws.send(TtMessage::binary(vec![7u8; 1024])).await.unwrap();
        ws.send(TtMessage::binary(vec![7u8; 1025])).await.unwrap();
        ws.send(TtMessage::text("never seen")).await.ok();
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    let mut client = ConnectOptions::new()
        .max_message_size(1024)
        .connect(&format!("ws://{addr}/"))
        .await
        .unwrap();
    match next_message(&mut client).await {
        Message::Binary(data) => assert_eq!(data.len(), 1024),
        other => panic!("expected binary, got {other:?}"),
    }
    // The message one byte over the limit ends the connection.
    assert!(within("the refusal", client.recv()).await.is_none());
    assert!(client.is_closed());
    drop(client);
    within("the server", server).await.unwrap();
}

// The handshake callback's error type is tungstenite's, not ours.
#[allow(clippy::result_large_err)]
#[tokio::test]
async fn headers_and_subprotocols_reach_the_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen_rx) = oneshot::channel();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let callback = |request: &HsRequest, mut response: HsResponse| {
            let header = |name: &str| {
                request
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let offered = header("sec-websocket-protocol");
            seen_tx
                .send((header("authorization"), header("cookie"), offered))
                .unwrap();
            response
                .headers_mut()
                .insert("sec-websocket-protocol", "chat.v2".parse().unwrap());
            Ok(response)
        };
        let ws = tokio_tungstenite::accept_hdr_async(tcp, callback)
            .await
            .unwrap();
        echo(ws).await;
    });

    let mut client = ConnectOptions::new()
        .header("Authorization", "Bearer s3cret")
        .header("Cookie", "token=s3cret")
        .subprotocol("chat.v1")
        .subprotocol("chat.v2")
        .connect(&format!("ws://{addr}/chat"))
        .await
        .unwrap();
    let (authorization, cookie, offered) = within("the server's view", seen_rx).await.unwrap();
    assert_eq!(authorization.as_deref(), Some("Bearer s3cret"));
    assert_eq!(cookie.as_deref(), Some("token=s3cret"));
    assert_eq!(offered.as_deref(), Some("chat.v1, chat.v2"));
    assert_eq!(client.selected_subprotocol(), Some("chat.v2"));

    client.send("over chat.v2").await.unwrap();
    assert_eq!(next_text(&mut client).await, "over chat.v2");
    client.close(1000, "").await;
    within("the server", server).await.unwrap();
}

#[tokio::test]
async fn refused_upgrade_carries_status_headers_and_body() {
    // A foreign HTTP server that answers every upgrade with 401.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.ends_with(b"\r\n\r\n") {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0);
            head.extend_from_slice(&buf[..n]);
        }
        tcp.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"chat\"\r\nContent-Length: 9\r\nConnection: close\r\n\r\nno token\nTRAILING GARBAGE",
        )
        .await
        .unwrap();
    });
    let error = squall::connect(&format!("ws://{addr}/"))
        .await
        .expect_err("refused");
    assert_eq!(error.status(), Some(squall::http::StatusCode::UNAUTHORIZED));
    let refusal = error.refusal().expect("the refused response");
    assert_eq!(
        refusal.headers()[squall::http::header::WWW_AUTHENTICATE],
        "Bearer realm=\"chat\""
    );
    // The body, cut to its Content-Length.
    assert_eq!(&refusal.body()[..], b"no token\n");
    assert!(matches!(error, ClientError::Refused(_)));
    within("the server", server).await.unwrap();
}

/// Echoes every message back, through a squall server.
struct Echo;

impl WebSocketHandler for Echo {
    async fn on_message(&mut self, ws: &WebSocket, message: Message) {
        ws.write_message(message).await.ok();
    }
}

#[tokio::test]
async fn one_task_sends_ten_thousand_while_another_reads_the_replies() {
    const COUNT: usize = 10_000;
    let (server, mut client) =
        TestServer::start_and_connect(Application::new().websocket("/echo", || Echo), "/echo")
            .await;
    let sender = client.sender();
    let writer = tokio::spawn(async move {
        for n in 0..COUNT {
            sender.send(format!("message {n}")).await?;
        }
        Ok::<_, ClientError>(())
    });
    let reader = tokio::spawn(async move {
        for n in 0..COUNT {
            assert_eq!(next_text(&mut client).await, format!("message {n}"));
        }
        client
    });
    within("the writer", writer).await.unwrap().unwrap();
    let mut client = within("the reader", reader).await.unwrap();
    // Every reply came back in order, and the connection is still open:
    // the server never had to close it for a full queue.
    assert!(!client.is_closed());
    client.close(1000, "done").await;
    assert_eq!(client.close_code(), Some(1000));
    assert!(client.send("late").await.unwrap_err().is_closed());
    server.shutdown().await;
}

#[tokio::test]
async fn try_send_reports_a_full_queue_and_send_waits_for_room() {
    let (server, client) =
        TestServer::start_and_connect(Application::new().websocket("/echo", || Echo), "/echo")
            .await;
    let client = {
        let mut client = client;
        // Warm up: the connection task has run at least once.
        client.send("warm").await.unwrap();
        assert_eq!(next_text(&mut client).await, "warm");
        client
    };
    // On this single-threaded runtime the connection task cannot run
    // between these calls, so nothing drains the queue meanwhile.
    let sender = client.sender();
    let mut accepted = 0;
    let full = loop {
        match sender.try_send("x") {
            Ok(()) => accepted += 1,
            Err(error) => break error,
        }
    };
    assert!(matches!(full, ClientError::QueueFull), "{full:?}");
    assert_eq!(accepted, 1024, "the default queue bound");
    // The default client policy only refuses: the connection stays open, and
    // a waiting send gets room as the queue drains.
    assert!(!client.is_closed());
    within("room in the queue", sender.send("after"))
        .await
        .unwrap();
    drop(sender);
    drop(client);
    server.shutdown().await;
}

#[tokio::test]
async fn dropping_the_client_and_its_senders_closes_with_1000() {
    let (seen_tx, seen_rx) = oneshot::channel();
    let (addr, server) = foreign_server(|mut ws| async move {
        let mut texts = Vec::new();
        let close = loop {
            match ws.next().await {
                Some(Ok(TtMessage::Text(text))) => texts.push(text.to_string()),
                Some(Ok(TtMessage::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                other => panic!("no close frame: {other:?}"),
            }
        };
        seen_tx.send((texts, close)).unwrap();
        while ws.next().await.is_some() {}
    })
    .await;
    let client = squall::connect(&format!("ws://{addr}/")).await.unwrap();
    let sender = client.sender();
    drop(client);
    // The sender still writes after the reader is gone.
    sender.send("from the sender").await.unwrap();
    drop(sender);
    let (texts, close) = within("the server's view", seen_rx).await.unwrap();
    assert_eq!(texts, ["from the sender"]);
    assert_eq!(close, Some(1000));
    within("the server", server).await.unwrap();
}

#[tokio::test]
async fn a_ping_from_another_task_reaches_the_server() {
    let (seen_tx, seen_rx) = oneshot::channel();
    let (addr, server) = foreign_server(|mut ws| async move {
        loop {
            match ws.next().await {
                Some(Ok(TtMessage::Ping(data))) => {
                    seen_tx.send(data.to_vec()).unwrap();
                    break;
                }
                Some(Ok(_)) => {}
                other => panic!("no ping: {other:?}"),
            }
        }
        echo(ws).await;
    })
    .await;
    let mut client = squall::connect(&format!("ws://{addr}/")).await.unwrap();
    let sender = client.sender();
    within(
        "the ping task",
        tokio::spawn(async move { sender.ping("are you there").await }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(within("the ping", seen_rx).await.unwrap(), b"are you there");
    assert!(client.ping(vec![0u8; 126]).await.is_err(), "over 125 bytes");
    client.close(1000, "").await;
    within("the server", server).await.unwrap();
}

/// A server written byte by byte: answers the upgrade with a 101 (plus
/// `extra_headers`) and `frames` in the same write, then returns the first
/// frame the client sent after its request (and drops the connection).
async fn raw_server(
    extra_headers: &'static str,
    frames: Vec<u8>,
) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            tcp.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let key = head
            .lines()
            .find_map(|line| {
                line.strip_prefix("Sec-WebSocket-Key: ")
                    .or_else(|| line.strip_prefix("sec-websocket-key: "))
            })
            .expect("a key");
        let accept =
            tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.trim().as_bytes());
        let mut response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{extra_headers}\r\n"
        )
        .into_bytes();
        response.extend_from_slice(&frames);
        tcp.write_all(&response).await.unwrap();
        // The client's first frame after the request: its close frame
        // (2 + 4 bytes of header and mask, and a code), or the end.
        let mut sent = Vec::new();
        let mut buf = [0u8; 64];
        while sent.len() < 8 {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => sent.extend_from_slice(&buf[..n]),
            }
        }
        sent
    });
    (addr, task)
}

/// The code of the first frame in `bytes`, a masked close frame.
fn masked_close_code(bytes: &[u8]) -> u16 {
    assert_eq!(bytes[0], 0x88, "a close frame");
    assert!(bytes[1] & 0x80 != 0, "masked");
    let mask = &bytes[2..6];
    u16::from_be_bytes([bytes[6] ^ mask[0], bytes[7] ^ mask[1]])
}

#[tokio::test]
async fn messages_sent_with_the_101_are_read_plain_and_compressed() {
    // "plain" as a text frame, then "Hello" compressed (RFC 7692 §7.2.3.1),
    // then a close, all in the write that carries the 101.
    let mut frames = vec![0x81, 0x05];
    frames.extend_from_slice(b"plain");
    frames.extend_from_slice(&[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    frames.extend_from_slice(&[0x88, 0x02, 0x03, 0xe8]);
    let (addr, server) =
        raw_server("Sec-WebSocket-Extensions: permessage-deflate\r\n", frames).await;
    let mut client = ConnectOptions::new()
        .compression(squall::CompressionOptions::new())
        .connect(&format!("ws://{addr}/"))
        .await
        .unwrap();
    assert!(client.compression_agreed());
    assert_eq!(next_text(&mut client).await, "plain");
    assert_eq!(next_text(&mut client).await, "Hello");
    assert_closed_with(&mut client, 1000).await;
    drop(client);
    let sent = within("the server", server).await.unwrap();
    assert_eq!(masked_close_code(&sent), 1000, "the close echoed");
}

#[tokio::test]
async fn a_server_close_with_1014_is_reported_as_1014() {
    let (addr, server) = raw_server("", vec![0x88, 0x02, 0x03, 0xf6]).await;
    let mut client = squall::connect(&format!("ws://{addr}/")).await.unwrap();
    assert_closed_with(&mut client, 1014).await;
    drop(client);
    within("the server", server).await.unwrap();
}

#[tokio::test]
async fn a_masked_frame_from_the_server_closes_with_1002() {
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 2, mask[0], mask[1], mask[2], mask[3]];
    frame.extend_from_slice(&[b'h' ^ mask[0], b'i' ^ mask[1]]);
    let (addr, server) = raw_server("", frame).await;
    let mut client = squall::connect(&format!("ws://{addr}/")).await.unwrap();
    assert!(within("the end", client.recv()).await.is_none());
    drop(client);
    let sent = within("the server", server).await.unwrap();
    assert_eq!(masked_close_code(&sent), 1002);
}
