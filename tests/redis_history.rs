//! History and recovery across processes through a real `redis-server`:
//! offsets monotonic per group over two applications, recovery on the
//! other application, the answer to a trimmed offset, and history across
//! a Redis restart. `cargo test --features redis --test redis_history`.

#![cfg(feature = "redis")]

mod redis_support;

use std::time::{Duration, Instant};

use serde_json::Value;
use squall::testing::{next_text, within, TestServer};
use squall::{Application, Client, History, Message, RedisBroker, WebSocket, WebSocketHandler};

use redis_support::{Redis, WAIT};

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

fn app(redis_url: &str, history: History) -> Application {
    Application::new()
        .websocket("/", || Recovering)
        .history("room", history)
        .websocket_max_queued_messages(10_000)
        .broker(RedisBroker::new(redis_url).expect("redis url"))
}

async fn next_json(client: &mut Client) -> Value {
    serde_json::from_str(&next_text(client).await).expect("JSON")
}

async fn join(server: &TestServer, since: Option<&str>) -> (Client, Value) {
    let path = since.map_or_else(|| "/".to_owned(), |since| format!("/?since={since}"));
    let mut client = server.connect(&path).await;
    let status = next_json(&mut client).await;
    assert_eq!(status["type"], "squall.recovery", "{status}");
    (client, status)
}

/// The next history message that is not a probe: (offset, data).
async fn next_message(client: &mut Client) -> (Option<String>, String) {
    loop {
        let envelope = next_json(client).await;
        assert_eq!(envelope["type"], "squall.message", "{envelope}");
        let data = envelope["data"].as_str().expect("data").to_owned();
        if !data.starts_with("probe") {
            return (envelope["offset"].as_str().map(str::to_owned), data);
        }
    }
}

fn seq(offset: &str) -> u64 {
    offset
        .rsplit_once(':')
        .expect("epoch:seq")
        .1
        .parse()
        .expect("seq")
}

fn epoch(offset: &str) -> &str {
    offset.rsplit_once(':').expect("epoch:seq").0
}

/// Broadcasts probes from `from` until `client` gets one: every broker on
/// the way is subscribed.
async fn until_delivered(from: &TestServer, client: &mut Client, within: Duration) {
    let deadline = Instant::now() + within;
    let mut n = 0;
    while Instant::now() < deadline {
        n += 1;
        from.handle().broadcast("room", format!("probe {n}"));
        let round = Duration::from_millis(200);
        while let Ok(Some(message)) = tokio::time::timeout(round, client.recv()).await {
            if message.as_text().is_some_and(|t| t.contains("\"probe ")) {
                return;
            }
        }
    }
    panic!("no delivery within {within:?}");
}

#[tokio::test]
async fn offsets_span_processes_and_recovery_works_on_the_other_one() {
    let redis = Redis::start().await;
    let a = TestServer::start(app(&redis.url(), History::last(1000))).await;
    let b = TestServer::start(app(&redis.url(), History::last(1000))).await;
    let (mut on_a, _) = join(&a, None).await;
    let (mut on_b, _) = join(&b, None).await;
    until_delivered(&b, &mut on_a, WAIT).await;
    until_delivered(&a, &mut on_b, WAIT).await;
    // Each publisher is first in, first out: once its last probe is seen,
    // all its probes have their offsets, and what follows is ours alone.
    for (from, tag) in [(&a, "a"), (&b, "b")] {
        let last = format!("probe last {tag}");
        from.handle().broadcast("room", last.clone());
        for client in [&mut on_a, &mut on_b] {
            while next_json(client).await["data"] != last.as_str() {}
        }
    }

    // Alternate publishers (whose messages race each other to Redis): one
    // count, one epoch, the same order everywhere.
    for i in 0..20 {
        let from = if i % 2 == 0 { &a } else { &b };
        from.handle().broadcast("room", format!("m{i}"));
    }
    let mut seen = Vec::new();
    for _ in 0..20 {
        let on_a = next_message(&mut on_a).await;
        assert_eq!(on_a, next_message(&mut on_b).await);
        seen.push((on_a.0.expect("an offset"), on_a.1));
    }
    let mut sent: Vec<_> = seen.iter().map(|(_, data)| data.clone()).collect();
    sent.sort();
    let mut expected: Vec<_> = (0..20).map(|i| format!("m{i}")).collect();
    expected.sort();
    assert_eq!(sent, expected);
    for pair in seen.windows(2) {
        assert_eq!(epoch(&pair[0].0), epoch(&pair[1].0));
        assert_eq!(seq(&pair[1].0), seq(&pair[0].0) + 1);
    }

    // The client on A drops after its 10th message, misses 20 more (10 of
    // them while away, from both), and comes back on B.
    drop(on_a);
    for i in 20..30 {
        let from = if i % 2 == 0 { &a } else { &b };
        from.handle().broadcast("room", format!("m{i}"));
    }
    for _ in 20..30 {
        let (offset, data) = next_message(&mut on_b).await;
        seen.push((offset.expect("an offset"), data));
    }
    let (mut back, status) = join(&b, Some(&seen[9].0)).await;
    assert_eq!(status["recovered"], true, "{status}");
    assert_eq!(status["missed"], 20);
    for (offset, data) in &seen[10..] {
        let (got_offset, got) = next_message(&mut back).await;
        assert_eq!((got_offset.as_ref(), &got), (Some(offset), data));
    }
    a.handle().broadcast("room", "live");
    let (offset, data) = next_message(&mut back).await;
    assert_eq!(data, "live");
    assert_eq!(seq(offset.as_deref().unwrap()), seq(&seen[29].0) + 1);
}

#[tokio::test]
async fn a_trimmed_offset_is_told_so() {
    let redis = Redis::start().await;
    let a = TestServer::start(app(&redis.url(), History::last(10))).await;
    let (mut client, _) = join(&a, None).await;
    until_delivered(&a, &mut client, WAIT).await;
    a.handle().broadcast("room", "first");
    let (first, _) = next_message(&mut client).await;
    // Enough for MAXLEN ~ to trim whole stream nodes.
    for i in 0..500 {
        a.handle().broadcast("room", format!("m{i}"));
    }
    for i in 0..500 {
        assert_eq!(next_message(&mut client).await.1, format!("m{i}"));
    }
    drop(client);
    let (mut client, status) = join(&a, first.as_deref()).await;
    assert_eq!(status["recovered"], false, "{status}");
    assert_eq!(status["missed"], 10, "the newest 10 are sent");
    for i in 490..500 {
        assert_eq!(next_message(&mut client).await.1, format!("m{i}"));
    }
}

#[tokio::test]
async fn history_restarts_with_a_new_epoch_after_redis_restarts_empty() {
    let mut redis = Redis::start().await;
    let a = TestServer::start(app(&redis.url(), History::last(100))).await;
    let (mut client, _) = join(&a, None).await;
    until_delivered(&a, &mut client, WAIT).await;
    a.handle().broadcast("room", "before");
    let (before, _) = next_message(&mut client).await;
    let before = before.expect("an offset");

    redis.kill();
    // Local members still get messages, without an offset (not recorded).
    let mut unrecorded = None;
    let deadline = Instant::now() + WAIT;
    while unrecorded.is_none() && Instant::now() < deadline {
        a.handle().broadcast("room", "during");
        let (offset, data) = next_message(&mut client).await;
        if data == "during" && offset.is_none() {
            unrecorded = Some(data);
        }
    }
    assert!(unrecorded.is_some(), "local delivery during the outage");

    redis.restart().await;
    let (mut fresh, _) = within("join after the restart", join(&a, None)).await;
    until_delivered(&a, &mut fresh, Duration::from_secs(20)).await;
    a.handle().broadcast("room", "after");
    let (after, _) = loop {
        let (offset, data) = next_message(&mut fresh).await;
        if data == "after" {
            break (offset.expect("an offset"), data);
        }
    };
    assert_ne!(epoch(&after), epoch(&before), "a new epoch");
    let (_client, status) = join(&a, Some(&before)).await;
    assert_eq!(status["recovered"], false, "{status}");
}

#[tokio::test]
async fn messages_older_than_the_age_limit_are_not_recovered() {
    let redis = Redis::start().await;
    let history = History::last(100).max_age(Duration::from_millis(300));
    let a = TestServer::start(app(&redis.url(), history)).await;
    let (mut client, _) = join(&a, None).await;
    until_delivered(&a, &mut client, WAIT).await;
    a.handle().broadcast("room", "first");
    let (first, _) = next_message(&mut client).await;
    let first = first.expect("an offset");
    a.handle().broadcast("room", "second");
    assert_eq!(next_message(&mut client).await.1, "second");
    drop(client);
    // Within the age limit "second" is recoverable; once it has passed
    // (Redis expires the history), the client is told it has a gap.
    let deadline = Instant::now() + WAIT;
    loop {
        let (_client, status) = join(&a, Some(&first)).await;
        if status["recovered"] == false {
            assert_eq!(status["missed"], 0, "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "never expired: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
