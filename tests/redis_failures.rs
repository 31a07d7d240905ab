//! Failures against a real `redis-server`: a slow (paused) Redis stalls no
//! local delivery and everything resumes after it; a process killed in the
//! middle of a broadcast stream leaves the others running with a history
//! that agrees with what they delivered. (Redis restarts are covered in
//! redis_broker.rs, redis_presence.rs, redis_history.rs and
//! redis_subscriptions.rs.) `cargo test --features redis --test redis_failures`.

#![cfg(feature = "redis")]

mod redis_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use squall::testing::{next_text, within, TestServer};
use squall::{
    Application, Client, History, Message, Presence, RedisBroker, WebSocket, WebSocketHandler,
};

use redis_support::{Redis, WAIT};

/// How long the test pauses Redis: longer than the broker's 5 s I/O bound.
const PAUSE: Duration = Duration::from_secs(7);

/// Joins `lobby` (with presence) and `h-lobby` (with history); says `ready`.
struct Member;

impl WebSocketHandler for Member {
    async fn open(&mut self, ws: &WebSocket) {
        let since = ws.query_argument("since").map(|s| s.into_owned());
        ws.join_with_presence("lobby", Presence::new("u", json!({})));
        ws.join_with_history("h-lobby", since.as_deref()).await.ok();
        ws.write_message("ready").await.ok();
    }

    async fn on_message(&mut self, _ws: &WebSocket, _message: Message) {}
}

fn app(redis_url: &str) -> Application {
    Application::new()
        .websocket("/", || Member)
        .history("h-", History::last(100_000))
        .websocket_max_queued_messages(100_000)
        .broker(RedisBroker::new(redis_url).expect("redis url"))
}

/// Connects and reads up to `ready` (the recovery status comes first).
async fn member(server: &TestServer, since: Option<&str>) -> (Client, Value) {
    let path = since.map_or_else(|| "/".to_owned(), |s| format!("/?since={s}"));
    let mut client = server.connect(&path).await;
    let status: Value = serde_json::from_str(&next_text(&mut client).await).expect("JSON");
    assert_eq!(status["type"], "squall.recovery");
    (client, status)
}

/// The next text that is not `ready` or a leftover probe.
async fn next(client: &mut Client) -> String {
    loop {
        let text = next_text(client).await;
        if text != "ready" && text != "probe" && !text.contains("\"data\":\"probe\"") {
            return text;
        }
    }
}

/// Broadcasts probes to `group` from `from` until `client` gets one.
async fn until_delivered(from: &TestServer, group: &str, client: &mut Client, wait: Duration) {
    let deadline = Instant::now() + wait;
    loop {
        from.handle().broadcast(group, "probe");
        let round = Instant::now() + Duration::from_millis(200);
        while let Ok(Some(message)) = tokio::time::timeout(
            round.saturating_duration_since(Instant::now()),
            client.recv(),
        )
        .await
        {
            let text = message.as_text().unwrap_or_default();
            if text == "probe" || text.contains("\"data\":\"probe\"") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "no delivery on {group}");
    }
}

async fn redis_command(redis: &Redis, command: &[&str]) {
    let client = redis::Client::open(redis.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let mut cmd = redis::cmd(command[0]);
    for arg in &command[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async::<()>(&mut conn).await.expect("command");
}

#[tokio::test]
async fn a_slow_redis_stalls_no_local_delivery_and_everything_resumes() {
    let redis = Redis::start().await;
    let a = TestServer::start(app(&redis.url())).await;
    let b = TestServer::start(app(&redis.url())).await;
    let (mut on_a, _) = member(&a, None).await;
    let (mut on_b, _) = member(&b, None).await;
    until_delivered(&a, "lobby", &mut on_b, WAIT).await;
    until_delivered(&b, "lobby", &mut on_a, WAIT).await;

    // Every client command blocks for PAUSE: Redis answers nothing.
    redis_command(
        &redis,
        &["CLIENT", "PAUSE", &PAUSE.as_millis().to_string(), "ALL"],
    )
    .await;
    let paused = Instant::now();
    for i in 0..20 {
        a.handle().broadcast("lobby", format!("local {i}"));
        assert_eq!(next(&mut on_a).await, format!("local {i}"));
    }
    // History groups too: delivered at once here, or late through Redis,
    // never lost for the local member (without an offset if unrecorded).
    a.handle().broadcast("h-lobby", "during the pause");
    let listing = a.handle().members("lobby").await;
    assert!(
        paused.elapsed() < PAUSE,
        "local delivery waited for Redis ({:?})",
        paused.elapsed()
    );
    // The listing needs Redis: an error after the 5 s bound, or an answer
    // once the pause is over; never a hang.
    if let Err(error) = &listing {
        assert!(error.to_string().contains("unavailable"), "{error}");
    }
    let deadline = Instant::now() + WAIT + PAUSE;
    loop {
        let envelope: Value = serde_json::from_str(&next(&mut on_a).await).expect("JSON");
        if envelope["data"] == "during the pause" {
            break;
        }
        assert!(Instant::now() < deadline, "the history message never came");
    }

    // After the pause: remote delivery, history offsets and presence again.
    let within_after = Duration::from_secs(20);
    until_delivered(&b, "lobby", &mut on_a, within_after).await;
    until_delivered(&a, "lobby", &mut on_b, within_after).await;
    let deadline = Instant::now() + within_after;
    loop {
        a.handle().broadcast("h-lobby", "after");
        let envelope: Value = serde_json::from_str(&next(&mut on_b).await).expect("JSON");
        if envelope["data"] == "after" && envelope["offset"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "no recorded history message");
    }
    let deadline = Instant::now() + within_after;
    while a.handle().members("lobby").await.map(|m| m.len()).ok() != Some(1)
        || a.handle()
            .members("lobby")
            .await
            .map(|m| m[0].connections)
            .ok()
            != Some(2)
    {
        assert!(Instant::now() < deadline, "presence did not heal");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Not a test on its own: the child process of
/// `a_process_killed_mid_broadcast_leaves_the_others_consistent`.
/// Broadcasts `k0`, `k1`, … to `h-lobby` until it is killed.
#[tokio::test]
async fn child_broadcasting_server() {
    let Ok(url) = std::env::var("SQUALL_CHILD_REDIS") else {
        return;
    };
    let server = TestServer::start(app(&url)).await;
    println!("SQUALL_CHILD_READY");
    for i in 0u64.. {
        server.handle().broadcast("h-lobby", format!("k{i}"));
        if i % 16 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[tokio::test]
async fn a_process_killed_mid_broadcast_leaves_the_others_consistent() {
    let redis = Redis::start().await;
    let survivor = TestServer::start(app(&redis.url())).await;
    let (mut client, _) = member(&survivor, None).await;

    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_broadcasting_server", "--nocapture"])
        .env("SQUALL_CHILD_REDIS", redis.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("stdout");
    let ready = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line == "SQUALL_CHILD_READY")
    });
    assert!(within("the child", ready).await.expect("reader"));

    // Receive a good part of the stream, then kill the child mid-stream.
    let mut received: Vec<(String, String)> = Vec::new();
    while received.len() < 300 {
        let envelope: Value = serde_json::from_str(&next(&mut client).await).expect("JSON");
        let offset = envelope["offset"].as_str().expect("recorded").to_owned();
        received.push((offset, envelope["data"].as_str().expect("data").to_owned()));
    }
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap");

    // The survivor still delivers what Redis accepted before the kill: read
    // until the stream stops, then mark the end with our own message.
    survivor.handle().broadcast("h-lobby", "end");
    loop {
        let envelope: Value = serde_json::from_str(&next(&mut client).await).expect("JSON");
        let data = envelope["data"].as_str().expect("data").to_owned();
        let offset = envelope["offset"].as_str().expect("recorded").to_owned();
        received.push((offset, data.clone()));
        if data == "end" {
            break;
        }
    }
    // In order, without gaps, each once: the child's k0, k1, … prefix, then
    // "end" right after it.
    let seq = |o: &str| -> u64 { o.rsplit_once(':').unwrap().1.parse().unwrap() };
    for (i, pair) in received.windows(2).enumerate() {
        assert_eq!(seq(&pair[1].0), seq(&pair[0].0) + 1, "at {i}");
    }
    for (i, (_, data)) in received.iter().take(received.len() - 1).enumerate() {
        assert_eq!(data, &format!("k{i}"));
    }

    // A client recovering from the 100th message gets exactly what the
    // survivor delivered after it.
    let (mut back, status) = member(&survivor, Some(&received[99].0)).await;
    assert_eq!(status["recovered"], true, "{status}");
    assert_eq!(status["missed"], received.len() - 100);
    for (offset, data) in &received[100..] {
        let envelope: Value = serde_json::from_str(&next(&mut back).await).expect("JSON");
        assert_eq!(
            (&envelope["offset"], &envelope["data"]),
            (&json!(offset), &json!(data))
        );
    }
}

#[tokio::test]
async fn a_dropped_subscription_leaves_live_history_members_no_gap() {
    let redis = Redis::start().await;
    let a = TestServer::start(app(&redis.url())).await;
    let b = TestServer::start(app(&redis.url())).await;
    let (mut on_a, _) = member(&a, None).await;
    let (mut on_b, _) = member(&b, None).await;
    until_delivered(&b, "h-lobby", &mut on_a, WAIT).await;
    until_delivered(&a, "h-lobby", &mut on_b, WAIT).await;
    // Each publisher is first in, first out: once B's last probe is seen,
    // every probe has its offset and what follows is the stream alone.
    b.handle().broadcast("h-lobby", "probes done");
    let first = loop {
        let envelope: Value = serde_json::from_str(&next(&mut on_a).await).expect("JSON");
        if envelope["data"] == "probes done" {
            break envelope["offset"].as_str().expect("offset").to_owned();
        }
    };
    let seq = |o: &str| -> u64 { o.rsplit_once(':').unwrap().1.parse().unwrap() };

    // B publishes without pause while the subscription connections are
    // killed three times: A's member still gets every offset, once, in order.
    const TOTAL: u64 = 3000;
    let sending = tokio::spawn({
        let handle = b.handle().clone();
        async move {
            for i in 0..TOTAL {
                handle.broadcast("h-lobby", format!("s{i}"));
                if i % 16 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    });
    let mut expected = seq(&first) + 1;
    let mut kills = 0;
    while expected <= seq(&first) + TOTAL {
        let envelope: Value = serde_json::from_str(&next(&mut on_a).await).expect("JSON");
        let offset = envelope["offset"].as_str().expect("recorded");
        assert_eq!(seq(offset), expected, "in order, none missed, none twice");
        expected += 1;
        if (expected - seq(&first)) % 700 == 0 && kills < 3 {
            redis_command(&redis, &["CLIENT", "KILL", "TYPE", "pubsub"]).await;
            kills += 1;
        }
    }
    assert_eq!(kills, 3);
    sending.await.expect("sender");
}
