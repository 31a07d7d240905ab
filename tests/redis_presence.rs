//! Presence across processes through a real `redis-server`: listings and
//! diffs span applications, a SIGKILLed process's members leave within the
//! documented 15 s, and presence heals after Redis restarts empty.
//! `cargo test --features redis --test redis_presence`.

#![cfg(feature = "redis")]

mod redis_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use squall::testing::{next_text, within, TestServer};
use squall::{
    Application, Handle, Member, Message, Presence, RedisBroker, WebSocket, WebSocketHandler,
};

use redis_support::{Redis, WAIT};

/// The documented bound on a dead process's members leaving, plus room for
/// the leave diff to travel.
const DEAD_NODE_BOUND: Duration = Duration::from_secs(16);

/// Joins `room` as the `user` query argument.
struct Present;

impl WebSocketHandler for Present {
    async fn open(&mut self, ws: &WebSocket) {
        let user = ws.query_argument("user").unwrap_or_default().into_owned();
        ws.join_with_presence("room", Presence::new(&user, json!({ "name": user })));
        ws.write_message("joined").await.ok();
    }

    async fn on_message(&mut self, _ws: &WebSocket, _message: Message) {}
}

fn app(redis_url: &str) -> Application {
    Application::new()
        .websocket("/", || Present)
        .broker(RedisBroker::new(redis_url).expect("redis url"))
}

fn member(user: &str, connections: usize) -> Member {
    Member {
        user: user.to_owned(),
        meta: json!({ "name": user }),
        connections,
    }
}

/// Lists `group` on `handle` until the listing is `expected` (presence
/// writes reach Redis on their own task), within `wait`.
async fn until_members(handle: &Handle, group: &str, expected: &[Member], wait: Duration) {
    let deadline = Instant::now() + wait;
    loop {
        let listed = handle.members(group).await;
        if matches!(&listed, Ok(members) if members == expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "members of {group}: {listed:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn join(server: &TestServer, user: &str) -> squall::Client {
    let mut client = server.connect(&format!("/?user={user}")).await;
    assert_eq!(next_text(&mut client).await, "joined");
    client
}

#[tokio::test]
async fn members_and_diffs_span_processes() {
    let redis = Redis::start().await;
    let a = TestServer::start(app(&redis.url())).await;
    let b = TestServer::start(app(&redis.url())).await;
    let _ada_a = join(&a, "ada").await;
    let _ada_b = join(&b, "ada").await;
    let mut bob_b = join(&b, "bob").await;
    let both = [member("ada", 2), member("bob", 1)];
    until_members(a.handle(), "room", &both, WAIT).await;
    until_members(b.handle(), "room", &both, WAIT).await;

    // A watcher on A sees bob leave B.
    let mut watch = a.handle().watch_presence("room");
    bob_b.close(1000, "").await;
    let diff = within("a leave diff from B", watch.next())
        .await
        .expect("diff");
    assert_eq!((diff.joins, diff.leaves), (vec![], vec![member("bob", 1)]));
    until_members(a.handle(), "room", &[member("ada", 2)], WAIT).await;
}

/// Not a test on its own: the child process of
/// `a_killed_process_members_leave_within_the_bound`, which runs this test
/// binary again with `SQUALL_CHILD_REDIS` set. Serves the presence app and
/// prints its port, then waits to be killed.
#[tokio::test]
async fn child_process_server() {
    let Ok(url) = std::env::var("SQUALL_CHILD_REDIS") else {
        return;
    };
    let server = TestServer::start(app(&url)).await;
    println!("SQUALL_CHILD_PORT={}", server.addr().port());
    std::future::pending::<()>().await;
}

#[tokio::test]
async fn a_killed_process_members_leave_within_the_bound() {
    let redis = Redis::start().await;
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_process_server", "--nocapture"])
        .env("SQUALL_CHILD_REDIS", redis.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child server");
    let stdout = child.stdout.take().expect("child stdout");
    let port = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("SQUALL_CHILD_PORT=")?.parse::<u16>().ok())
    });
    let port = within("the child's port", port)
        .await
        .expect("reader")
        .expect("the child printed its port");

    let here = TestServer::start(app(&redis.url())).await;
    let _ada = join(&here, "ada").await;
    let url = format!("ws://127.0.0.1:{port}/?user=");
    let _kid1 = within("connect", squall::connect(&format!("{url}kid1"))).await;
    let _kid2 = within("connect", squall::connect(&format!("{url}kid2"))).await;
    let all = [member("ada", 1), member("kid1", 1), member("kid2", 1)];
    until_members(here.handle(), "room", &all, WAIT).await;

    let mut watch = here.handle().watch_presence("room");
    child.kill().expect("SIGKILL the child");
    let killed = Instant::now();
    child.wait().expect("reap the child");
    let mut left = Vec::new();
    while left.len() < 2 {
        let diff = tokio::time::timeout(
            DEAD_NODE_BOUND.saturating_sub(killed.elapsed()),
            watch.next(),
        )
        .await
        .expect("leave diffs within the bound")
        .expect("diff");
        left.extend(diff.leaves.into_iter().map(|m| m.user));
    }
    left.sort();
    assert_eq!(left, ["kid1", "kid2"]);
    until_members(here.handle(), "room", &[member("ada", 1)], WAIT).await;
}

#[tokio::test]
async fn presence_heals_after_redis_restarts_empty() {
    let mut redis = Redis::start().await;
    let a = TestServer::start(app(&redis.url())).await;
    let b = TestServer::start(app(&redis.url())).await;
    let _ada = join(&a, "ada").await;
    let _bob = join(&b, "bob").await;
    let both = [member("ada", 1), member("bob", 1)];
    until_members(a.handle(), "room", &both, WAIT).await;

    redis.kill();
    // Listing needs Redis: a clear error, no hang.
    let listed = within("a listing during the outage", a.handle().members("room")).await;
    assert!(listed.is_err(), "{listed:?}");

    redis.restart().await;
    // Each process finds itself missing at its next heartbeat (5 s) and
    // writes its share again.
    until_members(a.handle(), "room", &both, Duration::from_secs(20)).await;
    until_members(b.handle(), "room", &both, Duration::from_secs(20)).await;
}
