//! Two applications sharing groups through a real `redis-server`, started
//! by the test on a free 127.0.0.1 port; one test kills and restarts it.
//! Needs `redis-server` on the PATH: `cargo test --features redis --test redis_broker`.

#![cfg(feature = "redis")]

mod redis_support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use squall::{Application, Handle, Message, RedisBroker, WebSocket, WebSocketHandler};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use redis_support::{Redis, WAIT};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Joins the room in the path, says `joined`, broadcasts what it receives.
struct Room;

impl WebSocketHandler for Room {
    async fn open(&mut self, ws: &WebSocket) {
        let room = ws.path_param("room").unwrap_or_default().to_owned();
        ws.join(&room);
        ws.write_message("joined").await.ok();
    }

    async fn on_message(&mut self, ws: &WebSocket, message: Message) {
        let room = ws.path_param("room").unwrap_or_default().to_owned();
        ws.broadcast(&room, message);
    }
}

/// An application with a Redis broker, running; its URL prefix and handle.
async fn start_app(redis_url: &str) -> (String, Handle) {
    // RUST_LOG=squall=info shows the outage and recovery lines.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let app = Application::new()
        .websocket("/room/{room}", || Room)
        .broker(RedisBroker::new(redis_url).expect("redis url"));
    let handle = app.handle();
    let server = app.bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/room/", server.local_addr().expect("addr"));
    tokio::spawn(server.run());
    (url, handle)
}

async fn join(url: &str, room: &str) -> Client {
    let (mut client, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("{url}{room}")),
    )
    .await
    .expect("connect timed out")
    .expect("connect");
    assert_eq!(next_text(&mut client).await, "joined");
    client
}

async fn next_within(client: &mut Client, wait: Duration) -> Option<WsMessage> {
    loop {
        let message = tokio::time::timeout(wait, client.next())
            .await
            .ok()?
            .expect("connection ended")
            .expect("websocket error");
        if message.is_text() || message.is_binary() {
            return Some(message);
        }
    }
}

/// The next message that is not a leftover probe.
async fn next_data(client: &mut Client) -> WsMessage {
    loop {
        match next_within(client, WAIT).await.expect("no message in time") {
            WsMessage::Text(text) if text.starts_with("probe ") => continue,
            other => return other,
        }
    }
}

async fn next_text(client: &mut Client) -> String {
    match next_data(client).await {
        WsMessage::Text(text) => text.as_str().to_owned(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Broadcasts probes tagged `tag` from `from` until `client` (on the other
/// application) receives one: both brokers are then connected and subscribed.
async fn until_remote_delivery(
    tag: &str,
    from: &Handle,
    room: &str,
    client: &mut Client,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    let mine = format!("probe {tag} ");
    let mut n = 0;
    while Instant::now() < deadline {
        n += 1;
        from.broadcast(room, format!("{mine}{n}"));
        let round = Instant::now() + Duration::from_millis(200);
        while let Some(message) =
            next_within(client, round.saturating_duration_since(Instant::now())).await
        {
            // Anything else may be a late arrival from an outage.
            if matches!(&message, WsMessage::Text(text) if text.starts_with(&mine)) {
                return;
            }
        }
    }
    panic!("no remote delivery within {within:?}");
}

#[tokio::test]
async fn a_broadcast_on_one_application_reaches_clients_of_the_other() {
    let redis = Redis::start().await;
    let (url_a, handle_a) = start_app(&redis.url()).await;
    let (url_b, handle_b) = start_app(&redis.url()).await;
    let mut on_a = join(&url_a, "lobby").await;
    let mut on_b = join(&url_b, "lobby").await;
    until_remote_delivery("b", &handle_b, "lobby", &mut on_a, WAIT).await;
    until_remote_delivery("a", &handle_a, "lobby", &mut on_b, WAIT).await;

    // A client of B speaks: its neighbour on A hears it, and it hears itself
    // once (B ignores its own message coming back from Redis).
    on_b.send(WsMessage::text("hello from b"))
        .await
        .expect("send");
    assert_eq!(next_text(&mut on_a).await, "hello from b");
    assert_eq!(next_text(&mut on_b).await, "hello from b");
    handle_a.broadcast("lobby", "marker");
    assert_eq!(next_text(&mut on_b).await, "marker");
    assert_eq!(next_text(&mut on_a).await, "marker");

    // Binary stays binary; other groups stay apart.
    let mut elsewhere = join(&url_a, "elsewhere").await;
    assert_eq!(handle_b.broadcast("lobby", vec![1u8, 2, 3]), 1);
    for client in [&mut on_a, &mut on_b] {
        match next_data(client).await {
            WsMessage::Binary(data) => assert_eq!(&data[..], &[1u8, 2, 3]),
            other => panic!("expected binary, got {other:?}"),
        }
    }
    handle_b.broadcast("elsewhere", "only here");
    assert_eq!(next_text(&mut elsewhere).await, "only here");
}

#[tokio::test]
async fn redis_outage_keeps_local_delivery_and_remote_delivery_resumes() {
    let mut redis = Redis::start().await;
    let (url_a, handle_a) = start_app(&redis.url()).await;
    let (url_b, handle_b) = start_app(&redis.url()).await;
    let mut a1 = join(&url_a, "lobby").await;
    let mut a2 = join(&url_a, "lobby").await;
    let mut on_b = join(&url_b, "lobby").await;
    until_remote_delivery("a", &handle_a, "lobby", &mut on_b, WAIT).await;

    redis.kill();
    // Local delivery carries on, message after message, with Redis gone.
    for i in 0..20 {
        let text = format!("local {i}");
        a1.send(WsMessage::text(text.clone())).await.expect("send");
        assert_eq!(next_text(&mut a1).await, text);
        assert_eq!(next_text(&mut a2).await, text);
    }
    assert_eq!(handle_b.broadcast("lobby", "b alone"), 1);
    assert_eq!(next_text(&mut on_b).await, "b alone");

    // Back on the same port: both brokers reconnect (backoff capped at 2 s)
    // and subscribe again.
    redis.restart().await;
    let within = Duration::from_secs(20);
    until_remote_delivery("a2", &handle_a, "lobby", &mut on_b, within).await;
    until_remote_delivery("b2", &handle_b, "lobby", &mut a1, within).await;
    on_b.send(WsMessage::text("b is back")).await.expect("send");
    // What was broadcast during the outage waited in the publish queues and
    // may arrive (late) before it.
    loop {
        match next_text(&mut a2).await.as_str() {
            "b is back" => break,
            late if late.starts_with("local ") || late == "b alone" => continue,
            other => panic!("unexpected message {other}"),
        }
    }
}

#[tokio::test]
async fn a_served_connection_means_subscribed_so_the_first_broadcast_arrives() {
    let redis = Redis::start().await;
    let (url_a, handle_a) = start_app(&redis.url()).await;
    let (url_b, _handle_b) = start_app(&redis.url()).await;
    // A server accepts connections only once its broker is subscribed: a
    // connection that is served proves it.
    let mut on_b = join(&url_b, "lobby").await;
    let mut on_a = join(&url_a, "lobby").await;
    // No probes: the very first broadcast reaches the other process.
    handle_a.broadcast("lobby", "first");
    assert_eq!(next_text(&mut on_b).await, "first");
    assert_eq!(next_text(&mut on_a).await, "first");
}

#[tokio::test]
async fn ready_waits_for_the_subscription_and_a_dead_redis_only_delays_serving() {
    // A port nothing listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let broker = RedisBroker::new(&format!("redis://127.0.0.1:{port}/")).expect("redis url");
    assert!(!broker.is_subscribed());
    let app = Application::new()
        .websocket("/room/{room}", || Room)
        .broker(broker.clone())
        .broker_ready_timeout(Duration::from_millis(200));
    let server = app.bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/room/", server.local_addr().expect("addr"));
    tokio::spawn(server.run());

    // Redis is down: the server serves anyway once the bound has passed.
    let _client = join(&url, "lobby").await;
    assert!(!broker.is_subscribed());
    assert!(
        tokio::time::timeout(Duration::from_millis(50), broker.ready())
            .await
            .is_err(),
        "ready while Redis is down"
    );

    // Redis comes up on that port: the broker subscribes, ready resolves.
    let mut redis = Redis { port, child: None };
    redis.restart().await;
    tokio::time::timeout(WAIT, broker.ready())
        .await
        .expect("subscribed once Redis is up");
    assert!(broker.is_subscribed());
}

#[test]
fn a_bad_url_is_squalls_own_error() {
    let error: squall::RedisBrokerError = RedisBroker::new("no-such-scheme://x").unwrap_err();
    assert!(
        error.to_string().starts_with("invalid Redis URL"),
        "{error}"
    );
    assert!(std::error::Error::source(&error).is_some());
}
