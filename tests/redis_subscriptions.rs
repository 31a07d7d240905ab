//! Subscriptions follow membership, against a real `redis-server`: a
//! process subscribes to a group's channel only while it has a local member
//! (or a member catching up, or a presence watcher); rapid join/leave
//! sequences end subscribed exactly when a member remains; subscriptions
//! come back after Redis restarts; a member joining with history while
//! messages flow misses none. `cargo test --features redis --test redis_subscriptions`.

#![cfg(feature = "redis")]

mod redis_support;

use std::time::{Duration, Instant};

use serde_json::Value;
use squall::testing::{next_text, TestServer};
use squall::{Application, Client, History, Message, RedisBroker, WebSocket, WebSocketHandler};

use redis_support::{Redis, WAIT};

/// `join G` / `leave G` / `history G SINCE` commands from the client; says
/// `ok` after each.
struct Commands;

impl WebSocketHandler for Commands {
    async fn on_message(&mut self, ws: &WebSocket, message: Message) {
        let Some(text) = message.as_text() else {
            return;
        };
        let words: Vec<&str> = text.split(' ').collect();
        match words.as_slice() {
            ["join", group] => {
                ws.join(group);
            }
            ["leave", group] => {
                ws.leave(group);
            }
            ["history", group, since] => {
                let since = (*since != "-").then_some(*since);
                ws.join_with_history(group, since).await.ok();
            }
            _ => return,
        }
        ws.write_message("ok").await.ok();
    }
}

fn app(redis_url: &str) -> Application {
    Application::new()
        .websocket("/", || Commands)
        .history("h-", History::last(10_000))
        .websocket_max_queued_messages(10_000)
        .broker(RedisBroker::new(redis_url).expect("redis url"))
}

/// How many subscribers Redis counts on `group`'s channel.
async fn subscribers(redis: &Redis, group: &str) -> usize {
    let client = redis::Client::open(redis.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    let (_, count): (String, usize) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(format!("squall:group:{group}"))
        .query_async(&mut conn)
        .await
        .expect("PUBSUB NUMSUB");
    count
}

/// Waits (bounded) until Redis counts `expected` subscribers on `group`.
async fn until_subscribers(redis: &Redis, group: &str, expected: usize, wait: Duration) {
    let deadline = Instant::now() + wait;
    loop {
        let count = subscribers(redis, group).await;
        if count == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{group}: {count} subscribers, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn command(client: &mut Client, command: &str) {
    client.send(command).await.expect("send");
    assert_eq!(next_text(client).await, "ok");
}

#[tokio::test]
async fn a_process_subscribes_only_while_it_has_a_local_member() {
    let redis = Redis::start().await;
    let a = TestServer::start(app(&redis.url())).await;
    let b = TestServer::start(app(&redis.url())).await;
    let mut on_a = a.connect("/").await;
    let mut on_b = b.connect("/").await;
    until_subscribers(&redis, "x", 0, WAIT).await;

    command(&mut on_a, "join x").await;
    until_subscribers(&redis, "x", 1, WAIT).await;
    command(&mut on_b, "join x").await;
    until_subscribers(&redis, "x", 2, WAIT).await;
    // B is in x only: it never subscribes to y.
    command(&mut on_a, "join y").await;
    until_subscribers(&redis, "y", 1, WAIT).await;

    command(&mut on_a, "leave x").await;
    until_subscribers(&redis, "x", 1, WAIT).await;
    // A closing leaves y: nobody listens to y any more.
    drop(on_a);
    until_subscribers(&redis, "y", 0, WAIT).await;
    // A presence watcher wants the group too, while it lives.
    let watch = a.handle().watch_presence("y");
    until_subscribers(&redis, "y", 1, WAIT).await;
    drop(watch);
    until_subscribers(&redis, "y", 0, WAIT).await;
    drop(on_b);
    until_subscribers(&redis, "x", 0, WAIT).await;
}

#[tokio::test]
async fn rapid_joins_and_leaves_end_subscribed_exactly_when_a_member_remains() {
    let redis = Redis::start().await;
    let a = TestServer::start(app(&redis.url())).await;
    let mut one = a.connect("/").await;
    let mut two = a.connect("/").await;
    for round in 0..50 {
        // Interleave two members' joins and leaves without waiting for
        // the subscriber in between.
        command(&mut one, "join r").await;
        command(&mut two, "join r").await;
        command(&mut one, "leave r").await;
        if round % 2 == 0 {
            command(&mut two, "leave r").await;
            command(&mut two, "join r").await;
        }
        command(&mut two, "leave r").await;
    }
    until_subscribers(&redis, "r", 0, WAIT).await;
    command(&mut one, "leave r").await;
    command(&mut one, "join r").await;
    command(&mut two, "join r").await;
    command(&mut two, "leave r").await;
    until_subscribers(&redis, "r", 1, WAIT).await;

    // And the subscription works: a broadcast from another process arrives.
    let b = TestServer::start(app(&redis.url())).await;
    let deadline = Instant::now() + WAIT;
    loop {
        b.handle().broadcast("r", "hello");
        match tokio::time::timeout(Duration::from_millis(200), one.recv()).await {
            Ok(Some(message)) if message.as_text() == Some("hello") => break,
            _ => assert!(Instant::now() < deadline, "no remote delivery"),
        }
    }
}

#[tokio::test]
async fn subscriptions_come_back_after_redis_restarts() {
    let mut redis = Redis::start().await;
    let a = TestServer::start(app(&redis.url())).await;
    let mut on_a = a.connect("/").await;
    for group in ["p", "q"] {
        command(&mut on_a, &format!("join {group}")).await;
        until_subscribers(&redis, group, 1, WAIT).await;
    }
    redis.kill();
    // Membership changes during the outage count too.
    command(&mut on_a, "leave q").await;
    command(&mut on_a, "join s").await;
    redis.restart().await;
    let within = Duration::from_secs(20);
    until_subscribers(&redis, "p", 1, within).await;
    until_subscribers(&redis, "s", 1, within).await;
    until_subscribers(&redis, "q", 0, within).await;
}

async fn next_json(client: &mut Client) -> Value {
    serde_json::from_str(&next_text(client).await).expect("JSON")
}

#[tokio::test]
async fn joining_with_history_while_messages_flow_misses_none() {
    let redis = Redis::start().await;
    let a = TestServer::start(app(&redis.url())).await;
    let b = TestServer::start(app(&redis.url())).await;
    // A member on B, to learn an offset; A has nobody in h-room yet.
    let mut on_b = b.connect("/").await;
    on_b.send("history h-room -").await.expect("send");
    assert_eq!(next_json(&mut on_b).await["type"], "squall.recovery");
    assert_eq!(next_text(&mut on_b).await, "ok");
    let deadline = Instant::now() + WAIT;
    let start = loop {
        b.handle().broadcast("h-room", "start");
        let envelope = next_json(&mut on_b).await;
        if envelope["type"] == "squall.message" {
            break envelope["offset"].as_str().expect("offset").to_owned();
        }
        assert!(Instant::now() < deadline);
    };
    let start_seq: u64 = start.rsplit_once(':').unwrap().1.parse().unwrap();

    // B publishes without pause while a client joins on A from `start`:
    // A subscribes, reads the history, and goes live, in that order.
    let sending = tokio::spawn({
        let handle = b.handle().clone();
        async move {
            for i in 0..2000 {
                handle.broadcast("h-room", format!("n{i}"));
                if i % 20 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }
    });
    let mut on_a = a.connect("/").await;
    on_a.send(format!("history h-room {start}"))
        .await
        .expect("send");
    let mut expected = start_seq + 1;
    let mut received = 0;
    let mut saw_ok = false;
    while received < 2000 {
        let text = next_text(&mut on_a).await;
        if text == "ok" {
            saw_ok = true;
            continue;
        }
        let message: Value = serde_json::from_str(&text).expect("JSON");
        if message["type"] == "squall.recovery" {
            assert_eq!(message["recovered"], true, "{message}");
            continue;
        }
        let offset = message["offset"].as_str().expect("offset");
        let seq: u64 = offset.rsplit_once(':').unwrap().1.parse().unwrap();
        assert_eq!(seq, expected, "in order, none missed, none twice");
        expected += 1;
        // Retried "start" probes may come first.
        if message["data"].as_str().is_some_and(|d| d.starts_with('n')) {
            assert_eq!(message["data"], format!("n{received}"));
            received += 1;
        }
    }
    sending.await.expect("sender");
    assert!(saw_ok || next_text(&mut on_a).await == "ok");
}
