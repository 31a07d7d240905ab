//! In-process groups: join, leave, leave on close, excluding the sender,
//! per-sender ordering, broadcasts from other tasks. Real sockets on
//! 127.0.0.1, every wait bounded by a timeout.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use squall::{Application, Handle, Message, WebSocket, WebSocketHandler};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const WAIT: Duration = Duration::from_secs(10);

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Joins the room named in the path, says `joined`, then:
/// `others:X` → broadcast X to the others, `leave` → leave and say `left`,
/// `echo:X` → X back to this client only, anything else → broadcast it.
struct Room {
    events: mpsc::UnboundedSender<String>,
}

impl WebSocketHandler for Room {
    async fn open(&mut self, ws: &WebSocket) {
        let room = ws.path_param("room").unwrap_or_default().to_owned();
        assert!(ws.join(&room));
        assert!(!ws.join(&room), "joining twice is a no-op");
        ws.write_message("joined").await.ok();
    }

    async fn on_message(&mut self, ws: &WebSocket, message: Message) {
        let room = ws.path_param("room").unwrap_or_default().to_owned();
        match message.as_text() {
            Some(text) if text.starts_with("others:") => {
                ws.broadcast_others(&room, &text["others:".len()..]);
            }
            Some("leave") => {
                assert!(ws.leave(&room));
                assert!(!ws.leave(&room));
                ws.write_message("left").await.ok();
            }
            Some(text) if text.starts_with("echo:") => {
                ws.write_message(&text["echo:".len()..]).await.ok();
            }
            _ => {
                ws.broadcast(&room, message);
            }
        }
    }

    async fn on_close(&mut self, ws: &WebSocket) {
        let room = ws.path_param("room").unwrap_or_default().to_owned();
        self.events.send(format!("closed {room}")).ok();
    }
}

struct Server {
    url: String,
    handle: Handle,
    events: mpsc::UnboundedReceiver<String>,
}

async fn start() -> Server {
    let (tx, events) = mpsc::unbounded_channel();
    let app = Application::new().websocket("/room/{room}", move || Room { events: tx.clone() });
    let handle = app.handle();
    let server = app.bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/room/", server.local_addr().expect("addr"));
    tokio::spawn(server.run());
    Server {
        url,
        handle,
        events,
    }
}

impl Server {
    /// A client in `room`, once the server has put it there.
    async fn join(&self, room: &str) -> Client {
        let (mut client, _) = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::connect_async(format!("{}{room}", self.url)),
        )
        .await
        .expect("connect timed out")
        .expect("connect");
        assert_eq!(next_text(&mut client).await, "joined");
        client
    }

    async fn event(&mut self) -> String {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("no server event in time")
            .expect("events channel closed")
    }
}

async fn next(client: &mut Client) -> WsMessage {
    loop {
        let message = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("no message in time")
            .expect("connection ended")
            .expect("websocket error");
        if message.is_text() || message.is_binary() || message.is_close() {
            return message;
        }
    }
}

async fn next_text(client: &mut Client) -> String {
    match next(client).await {
        WsMessage::Text(text) => text.as_str().to_owned(),
        other => panic!("expected text, got {other:?}"),
    }
}

async fn send(client: &mut Client, text: &str) {
    client.send(WsMessage::text(text)).await.expect("send");
}

#[tokio::test]
async fn broadcast_reaches_every_member_of_the_group_only() {
    let server = start().await;
    let mut a1 = server.join("a").await;
    let mut a2 = server.join("a").await;
    let mut a3 = server.join("a").await;
    let mut b1 = server.join("b").await;
    assert_eq!(server.handle.group_size("a"), 3);
    assert_eq!(server.handle.group_size("b"), 1);
    assert_eq!(server.handle.group_size("nobody"), 0);

    send(&mut a1, "hello a").await;
    for client in [&mut a1, &mut a2, &mut a3] {
        assert_eq!(next_text(client).await, "hello a");
    }
    // b1 got nothing: the next thing it receives is this marker.
    assert_eq!(server.handle.broadcast("b", "marker"), 1);
    assert_eq!(next_text(&mut b1).await, "marker");
}

#[tokio::test]
async fn broadcast_others_excludes_the_sender() {
    let server = start().await;
    let mut a1 = server.join("a").await;
    let mut a2 = server.join("a").await;
    send(&mut a1, "others:not for me").await;
    assert_eq!(next_text(&mut a2).await, "not for me");
    // Had a1 received it, it would come before this.
    send(&mut a1, "echo:mine").await;
    assert_eq!(next_text(&mut a1).await, "mine");
}

#[tokio::test]
async fn leave_stops_delivery() {
    let server = start().await;
    let mut a1 = server.join("a").await;
    let mut a2 = server.join("a").await;
    send(&mut a1, "leave").await;
    assert_eq!(next_text(&mut a1).await, "left");
    assert_eq!(server.handle.group_size("a"), 1);
    assert_eq!(server.handle.broadcast("a", "after leave"), 1);
    assert_eq!(next_text(&mut a2).await, "after leave");
    send(&mut a1, "echo:direct").await;
    assert_eq!(next_text(&mut a1).await, "direct");
}

#[tokio::test]
async fn closing_leaves_every_group() {
    let mut server = start().await;
    let mut a1 = server.join("a").await;
    let _a2 = server.join("a").await;
    a1.close(None).await.expect("close");
    assert_eq!(server.event().await, "closed a");
    assert_eq!(server.handle.group_size("a"), 1);

    // A vanished peer (no close handshake) leaves too.
    let a3 = server.join("a").await;
    drop(a3);
    assert_eq!(server.event().await, "closed a");
    assert_eq!(server.handle.group_size("a"), 1);
}

#[tokio::test]
async fn each_senders_messages_arrive_in_order() {
    const N: usize = 300;
    let server = start().await;
    let mut s1 = server.join("a").await;
    let mut s2 = server.join("a").await;
    let mut receiver = server.join("a").await;
    let (r1, r2) = tokio::join!(
        async {
            for i in 0..N {
                send(&mut s1, &format!("s1 {i}")).await;
            }
        },
        async {
            for i in 0..N {
                send(&mut s2, &format!("s2 {i}")).await;
            }
        }
    );
    let ((), ()) = (r1, r2);
    let mut expected = [0usize; 2];
    for _ in 0..2 * N {
        let text = next_text(&mut receiver).await;
        let (who, i) = text.split_once(' ').expect("tagged message");
        let slot = usize::from(who == "s2");
        assert_eq!(
            i.parse::<usize>().expect("number"),
            expected[slot],
            "{text}"
        );
        expected[slot] += 1;
    }
    assert_eq!(expected, [N, N]);
}

#[tokio::test]
async fn handle_broadcasts_from_any_task_keeping_the_message_kind() {
    let server = start().await;
    let mut a1 = server.join("a").await;
    let handle = server.handle.clone();
    let sent = tokio::spawn(async move {
        let text = handle.broadcast("a", Message::json(&serde_json::json!({"n": 1})).unwrap());
        let binary = handle.broadcast("a", vec![0u8, 1, 2, 255]);
        (text, binary)
    })
    .await
    .expect("task");
    assert_eq!(sent, (1, 1));
    assert_eq!(next_text(&mut a1).await, r#"{"n":1}"#);
    match next(&mut a1).await {
        WsMessage::Binary(data) => assert_eq!(&data[..], &[0u8, 1, 2, 255]),
        other => panic!("expected binary, got {other:?}"),
    }
}
