//! SPEC §2 (the `WebSocket` context a handler gets): echo, JSON, request
//! data, the sender handle, handler ordering, writes after close, closing
//! from the handler, pings and pongs. The close codes for oversized, invalid
//! and protocol-breaking input are in `frames.rs`.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use squall::testing::{assert_closed_with, next_message, next_text, within, TestServer};
use squall::{
    Application, Bytes, ConnectOptions, Message, WebSocket, WebSocketHandler, WebSocketSender,
};
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[derive(serde::Serialize)]
struct Point {
    x: i32,
    y: i32,
}

/// What the tests see of the server side.
#[derive(Clone)]
struct Ctx {
    events: mpsc::UnboundedSender<String>,
    senders: mpsc::UnboundedSender<WebSocketSender>,
    gate: Arc<Notify>,
}

/// Echoes, except for a few command words that exercise one API each.
/// Reports every handler call on `events`.
struct Api(Ctx);

impl Api {
    fn event(&self, event: String) {
        self.0.events.send(event).ok();
    }
}

impl WebSocketHandler for Api {
    async fn open(&mut self, ws: &WebSocket) {
        self.0.senders.send(ws.sender()).ok();
        self.event(format!("open {}", ws.remote_addr()));
    }

    async fn on_message(&mut self, ws: &WebSocket, msg: Message) {
        let Some(text) = msg.as_text() else {
            ws.write_message(msg).await.unwrap();
            return;
        };
        self.event(format!("start {text}"));
        match text {
            "wait" => {
                self.0.gate.notified().await;
                ws.write_message(text).await.unwrap();
            }
            "json struct" => ws.write_json(&Point { x: 1, y: -2 }).await.unwrap(),
            "json value" => ws
                .write_message(serde_json::json!({"ok": true, "list": [1, 2, 3]}))
                .await
                .unwrap(),
            "request" => {
                let reply = format!(
                    "room={:?} name={:?} session={:?}",
                    ws.path_param("room"),
                    ws.query_argument("name").as_deref(),
                    ws.cookie("session"),
                );
                ws.write_message(reply).await.unwrap();
            }
            "spawn" => {
                let sender = ws.sender();
                tokio::spawn(async move {
                    sender.send("from a task").unwrap();
                    sender.write_message("and again").await.unwrap();
                });
            }
            "close" => {
                ws.write_message("one").await.unwrap();
                ws.write_message("two").await.unwrap();
                ws.close(4000, "bye");
            }
            "ping" => ws.ping("hello").await.unwrap(),
            _ => ws.write_message(text).await.unwrap(),
        }
        self.event(format!("end {text}"));
    }

    async fn on_ping(&mut self, _ws: &WebSocket, data: Bytes) {
        self.event(format!("ping {}", String::from_utf8_lossy(&data)));
    }

    async fn on_pong(&mut self, _ws: &WebSocket, data: Bytes) {
        self.event(format!("pong {}", String::from_utf8_lossy(&data)));
    }

    async fn on_close(&mut self, ws: &WebSocket) {
        let write = ws.write_message("too late").await;
        self.event(format!(
            "close {:?} write_closed={}",
            ws.close_code(),
            write.is_err_and(|e| e.is_closed())
        ));
    }
}

struct Harness {
    server: TestServer,
    events: mpsc::UnboundedReceiver<String>,
    senders: mpsc::UnboundedReceiver<WebSocketSender>,
    gate: Arc<Notify>,
}

impl Harness {
    async fn start() -> Harness {
        let (events_tx, events) = mpsc::unbounded_channel();
        let (senders_tx, senders) = mpsc::unbounded_channel();
        let gate = Arc::new(Notify::new());
        let ctx = Ctx {
            events: events_tx,
            senders: senders_tx,
            gate: gate.clone(),
        };
        let for_chat = ctx.clone();
        let app = Application::new()
            .websocket("/ws", move || Api(ctx.clone()))
            .websocket("/chat/{room}", move || Api(for_chat.clone()));
        Harness {
            server: TestServer::start(app).await,
            events,
            senders,
            gate,
        }
    }

    async fn event(&mut self) -> String {
        within("a handler event", self.events.recv())
            .await
            .expect("event channel open")
    }

    /// The next event, skipping `open`.
    async fn event_after_open(&mut self) -> String {
        let event = self.event().await;
        if event.starts_with("open ") {
            self.event().await
        } else {
            event
        }
    }
}

#[tokio::test]
async fn echo_of_text_and_binary() {
    let h = Harness::start().await;
    let mut client = h.server.connect("/ws").await;
    client.send("hello world").await.unwrap();
    assert_eq!(next_text(&mut client).await, "hello world");
    client.send(vec![0u8, 1, 2, 255]).await.unwrap();
    assert_eq!(
        next_message(&mut client).await,
        Message::Binary(Bytes::from_static(&[0, 1, 2, 255]))
    );
}

#[tokio::test]
async fn json_writes_arrive_as_text_frames() {
    let h = Harness::start().await;
    let mut client = h.server.connect("/ws").await;
    client.send("json struct").await.unwrap();
    assert_eq!(
        next_message(&mut client).await,
        Message::text(r#"{"x":1,"y":-2}"#)
    );
    client.send("json value").await.unwrap();
    let reply = next_message(&mut client).await;
    assert!(reply.is_text(), "JSON must be a text frame: {reply:?}");
    assert_eq!(
        reply.parse_json::<serde_json::Value>().unwrap(),
        serde_json::json!({"ok": true, "list": [1, 2, 3]})
    );
}

#[tokio::test]
async fn path_parameters_are_percent_decoded() {
    let h = Harness::start().await;
    let mut client = h.server.connect("/chat/caf%C3%A9%20corner").await;
    client.send("request").await.unwrap();
    assert_eq!(
        next_text(&mut client).await,
        r#"room=Some("café corner") name=None session=None"#
    );
}

#[tokio::test]
async fn query_arguments_and_cookies_of_the_upgrade_request() {
    let h = Harness::start().await;
    let mut client = h
        .server
        .try_connect(
            "/chat/lobby?name=ada%20l&x=1",
            ConnectOptions::new().header("Cookie", "theme=dark; session=s3cr3t"),
        )
        .await
        .unwrap();
    client.send("request").await.unwrap();
    assert_eq!(
        next_text(&mut client).await,
        r#"room=Some("lobby") name=Some("ada l") session=Some("s3cr3t")"#
    );
}

#[tokio::test]
async fn remote_address_is_the_clients() {
    let mut h = Harness::start().await;
    let tcp = tokio::net::TcpStream::connect(h.server.addr())
        .await
        .unwrap();
    let local = tcp.local_addr().unwrap();
    let (_ws, _) = within(
        "handshake",
        tokio_tungstenite::client_async(h.server.url("/ws"), tcp),
    )
    .await
    .unwrap();
    assert_eq!(h.event().await, format!("open {local}"));
}

#[tokio::test]
async fn sender_handle_delivers_from_another_task() {
    let h = Harness::start().await;
    let mut client = h.server.connect("/ws").await;
    client.send("spawn").await.unwrap();
    assert_eq!(next_text(&mut client).await, "from a task");
    assert_eq!(next_text(&mut client).await, "and again");
}

#[tokio::test]
async fn messages_are_handled_in_order_one_at_a_time_while_pings_are_answered() {
    let mut h = Harness::start().await;
    let (mut ws, _) = within(
        "connect",
        tokio_tungstenite::connect_async(h.server.url("/ws")),
    )
    .await
    .unwrap();
    ws.send(WsMessage::text("wait")).await.unwrap();
    ws.send(WsMessage::text("second")).await.unwrap();
    ws.send(WsMessage::Ping(Bytes::from_static(b"still there?")))
        .await
        .unwrap();

    assert!(h.event().await.starts_with("open "));
    assert_eq!(h.event().await, "start wait");
    // on_message("wait") is blocked, yet the ping sent after "second" is
    // answered: the server has read past "second" without handling it.
    match within("the pong", ws.next()).await {
        Some(Ok(WsMessage::Pong(data))) => assert_eq!(&data[..], b"still there?"),
        other => panic!("expected the pong, got {other:?}"),
    }
    assert!(
        h.events.try_recv().is_err(),
        "nothing else may run while on_message is blocked"
    );

    h.gate.notify_one();
    for expected in [
        "end wait",
        "start second",
        "end second",
        "ping still there?",
    ] {
        assert_eq!(h.event().await, expected);
    }
    for expected in ["wait", "second"] {
        match within("an echo", ws.next()).await {
            Some(Ok(WsMessage::Text(text))) => assert_eq!(text.as_str(), expected),
            other => panic!("expected {expected:?}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn write_after_close_returns_closed_from_on_close_and_from_a_sender() {
    let mut h = Harness::start().await;
    let mut client = h.server.connect("/ws").await;
    let sender = within("the sender", h.senders.recv()).await.unwrap();
    assert!(!sender.is_closed());

    client.close(1000, "done").await;
    assert_eq!(
        h.event_after_open().await,
        "close Some(1000) write_closed=true"
    );

    assert!(sender.is_closed());
    assert!(sender.send("late").unwrap_err().is_closed());
    assert!(sender.write_message("late").await.unwrap_err().is_closed());
}

#[tokio::test]
async fn close_from_handler_delivers_queued_messages_then_code_and_reason() {
    let h = Harness::start().await;
    let mut client = h.server.connect("/ws").await;
    client.send("close").await.unwrap();
    assert_eq!(next_text(&mut client).await, "one");
    assert_eq!(next_text(&mut client).await, "two");
    assert_closed_with(&mut client, 4000).await;
    assert_eq!(client.close_reason(), Some("bye"));
}

#[tokio::test]
async fn on_ping_gets_the_data_and_the_client_gets_the_pong() {
    let mut h = Harness::start().await;
    let (mut ws, _) = within(
        "connect",
        tokio_tungstenite::connect_async(h.server.url("/ws")),
    )
    .await
    .unwrap();
    ws.send(WsMessage::Ping(Bytes::from_static(b"abc")))
        .await
        .unwrap();
    match within("the pong", ws.next()).await {
        Some(Ok(WsMessage::Pong(data))) => assert_eq!(&data[..], b"abc"),
        other => panic!("expected the pong, got {other:?}"),
    }
    assert_eq!(h.event_after_open().await, "ping abc");
}

#[tokio::test]
async fn ws_ping_reaches_the_client_and_on_pong_gets_the_answer() {
    let mut h = Harness::start().await;
    let (mut ws, _) = within(
        "connect",
        tokio_tungstenite::connect_async(h.server.url("/ws")),
    )
    .await
    .unwrap();
    ws.send(WsMessage::text("ping")).await.unwrap();
    match within("the ping", ws.next()).await {
        Some(Ok(WsMessage::Ping(data))) => assert_eq!(&data[..], b"hello"),
        other => panic!("expected the ping, got {other:?}"),
    }
    // tungstenite queued the pong on reading the ping; flush sends it.
    ws.flush().await.unwrap();
    assert_eq!(h.event_after_open().await, "start ping");
    assert_eq!(h.event().await, "end ping");
    assert_eq!(h.event().await, "pong hello");
}
