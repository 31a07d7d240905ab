//! History and recovery in one process: offsets, recovering missed messages
//! in order and exactly once before new ones, and the documented answer to
//! an offset older than the history.

use serde_json::Value;
use squall::testing::{next_text, TestServer};
use squall::{Application, Client, History, Message, WebSocket, WebSocketHandler};

/// Joins `room` with history since the `since` query argument; broadcasts
/// what it receives.
struct Recovering;

impl WebSocketHandler for Recovering {
    async fn open(&mut self, ws: &WebSocket) {
        let since = ws.query_argument("since").map(|s| s.into_owned());
        ws.join_with_history("room", since.as_deref()).await.ok();
    }

    async fn on_message(&mut self, ws: &WebSocket, message: Message) {
        ws.broadcast("room", message);
    }
}

fn app(history: History) -> Application {
    Application::new()
        .websocket("/", || Recovering)
        .history("room", history)
}

async fn next_json(client: &mut Client) -> Value {
    serde_json::from_str(&next_text(client).await).expect("JSON")
}

/// Connects with `since` and returns the client and its recovery status.
async fn join(server: &TestServer, since: Option<&str>) -> (Client, Value) {
    let path = match since {
        Some(since) => format!("/?since={since}"),
        None => "/".to_owned(),
    };
    let mut client = server.connect(&path).await;
    let status = next_json(&mut client).await;
    assert_eq!(status["type"], "squall.recovery");
    assert_eq!(status["group"], "room");
    (client, status)
}

/// The next history message: (offset, data).
async fn next_message(client: &mut Client) -> (String, String) {
    let envelope = next_json(client).await;
    assert_eq!(envelope["type"], "squall.message", "{envelope}");
    (
        envelope["offset"].as_str().expect("an offset").to_owned(),
        envelope["data"].as_str().expect("data").to_owned(),
    )
}

fn seq(offset: &str) -> u64 {
    offset
        .rsplit_once(':')
        .expect("epoch:seq")
        .1
        .parse()
        .expect("seq")
}

#[tokio::test]
async fn a_reconnecting_client_gets_what_it_missed_in_order_then_new_messages() {
    let server = TestServer::start(app(History::last(100))).await;
    let handle = server.handle().clone();
    let (mut client, status) = join(&server, None).await;
    assert_eq!(status["recovered"], true);
    assert_eq!(status["offset"], Value::Null, "no history yet");

    handle.broadcast("room", "m1");
    handle.broadcast("room", "m2");
    let (first, _) = next_message(&mut client).await;
    let (last_seen, data) = next_message(&mut client).await;
    assert_eq!(data, "m2");
    assert_eq!(seq(&last_seen), seq(&first) + 1, "offsets count up");
    drop(client);

    for i in 3..=5 {
        handle.broadcast("room", format!("m{i}"));
    }
    let (mut client, status) = join(&server, Some(&last_seen)).await;
    assert_eq!(status["recovered"], true);
    assert_eq!(status["missed"], 3);
    assert_eq!(seq(status["offset"].as_str().unwrap()), 5);
    for i in 3..=5 {
        let (offset, data) = next_message(&mut client).await;
        assert_eq!((seq(&offset), data), (i, format!("m{i}")));
    }
    client.send("m6").await.expect("send");
    let (offset, data) = next_message(&mut client).await;
    assert_eq!((seq(&offset), data.as_str()), (6, "m6"));
    drop(client);
    server.shutdown().await;
}

#[tokio::test]
async fn an_offset_older_than_the_history_is_told_so() {
    let server = TestServer::start(app(History::last(3))).await;
    let handle = server.handle().clone();
    let (mut client, _) = join(&server, None).await;
    handle.broadcast("room", "m1");
    let (first, _) = next_message(&mut client).await;
    drop(client);
    for i in 2..=10 {
        handle.broadcast("room", format!("m{i}"));
    }
    let (mut client, status) = join(&server, Some(&first)).await;
    assert_eq!(status["recovered"], false, "{status}");
    assert_eq!(status["missed"], 3);
    for i in 8..=10 {
        assert_eq!(next_message(&mut client).await.1, format!("m{i}"));
    }

    // Another epoch, or an offset that is not one: the same answer.
    for since in ["someone-else:2", "garbage"] {
        let (_client, status) = join(&server, Some(since)).await;
        assert_eq!(status["recovered"], false, "{since}: {status}");
    }
    drop(client);
    server.shutdown().await;
}

#[tokio::test]
async fn recovery_during_a_stream_of_broadcasts_sends_each_message_exactly_once() {
    // Room for the whole stream in the client's queue: this test is about
    // order, not about a slow client.
    let server =
        TestServer::start(app(History::last(10_000)).websocket_max_queued_messages(10_000)).await;
    let handle = server.handle().clone();
    let (mut client, _) = join(&server, None).await;
    handle.broadcast("room", "start");
    let (start, _) = next_message(&mut client).await;
    drop(client);

    // Broadcast without pause while the client reconnects and catches up.
    let sending = tokio::spawn({
        let handle = handle.clone();
        async move {
            for i in 0..3000 {
                handle.broadcast("room", format!("n{i}"));
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }
    });
    let (mut client, status) = join(&server, Some(&start)).await;
    assert_eq!(status["recovered"], true);
    let mut expected = seq(&start) + 1;
    while expected <= 3001 {
        let (offset, _) = next_message(&mut client).await;
        assert_eq!(seq(&offset), expected, "in order, none missed, none twice");
        expected += 1;
    }
    sending.await.expect("sender");
    drop(client);
    server.shutdown().await;
}

#[tokio::test]
async fn groups_without_history_are_unchanged() {
    let server = TestServer::start(
        Application::new()
            .websocket("/", || Recovering)
            .history("other-", History::last(10)),
    )
    .await;
    let mut client = server.connect("/").await;
    server.handle().broadcast("room", "plain");
    assert_eq!(next_text(&mut client).await, "plain");
    drop(client);
    server.shutdown().await;
}
