//! Across processes, through a real `redis-server` (started on a free port
//! unless `--redis URL`): delivery latency to many receivers spread over two
//! server processes with and without history, listing a large group's
//! members, recovering missed messages, and what each process pays for
//! Redis traffic as processes are added.
//!
//! ```text
//! cargo run --release --example across_processes --features redis -- \
//!     [--receivers 10000] [--rounds 100] [--members 10000] [--missed 1000] [--redis URL]
//! ```
//!
//! This process holds the clients and the clock and starts itself twice
//! again with `server REDIS_URL` (two server processes, each a tokio
//! current_thread runtime with a `RedisBroker`). Sections:
//!
//! 1. latency: receivers join group `plain` (or `h-hist`, which keeps
//!    history: messages travel through Redis with an offset even to local
//!    members), half on each server; each round, a control connection on
//!    server A broadcasts a sequence number and the clock runs until every
//!    receiver has it: p50/p99 over every delivery, and of the last one per
//!    round;
//! 2. members: M connections join `members` with a presence (distinct
//!    users), half on each server; server A times `Handle::members` (which
//!    reads the other process's share from Redis and adds its own);
//! 3. recovery: a client reconnects with the offset it had before N
//!    messages were broadcast; the time from connecting until the N-th
//!    missed message is in;
//! 4. per-process cost: P = 1, 2, 4, 8 applications in this process, each
//!    with its own broker and members in 8 rooms of its own; 100 messages
//!    per room; how many messages each received from Redis. Before
//!    subscriptions followed membership every process received all of them
//!    (its count grew with P); now each receives its rooms' only.
//!
//! Everything is bounded by timeouts; the servers exit with this process.

#[path = "procfs.rs"]
#[allow(dead_code)] // each benchmark uses a part of it
mod procfs;
use procfs::raise_nofile;
use std::cell::RefCell;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::Value;
use squall::{
    Application, Client, History, Message, Presence, RedisBroker, WebSocket, WebSocketHandler,
};
use tokio::task::LocalSet;

const WAIT: Duration = Duration::from_secs(120);

struct Opts {
    receivers: usize,
    rounds: usize,
    members: usize,
    missed: usize,
    redis: Option<String>,
}

fn parse(args: &[String]) -> Opts {
    let mut opts = Opts {
        receivers: 10_000,
        rounds: 100,
        members: 10_000,
        missed: 1000,
        redis: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().expect("a value").clone();
        match arg.as_str() {
            "--receivers" => opts.receivers = value().parse().expect("--receivers N"),
            "--rounds" => opts.rounds = value().parse().expect("--rounds N"),
            "--members" => opts.members = value().parse().expect("--members N"),
            "--missed" => opts.missed = value().parse().expect("--missed N"),
            "--redis" => opts.redis = Some(value()),
            other => panic!("unknown argument {other}"),
        }
    }
    opts
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if args.first().map(String::as_str) == Some("server") {
        runtime.block_on(serve(args[1].clone()));
        return;
    }
    raise_nofile();
    runtime.block_on(LocalSet::new().run_until(bench(parse(&args))));
}

// ---- the server processes ----

struct Bench;

impl WebSocketHandler for Bench {
    async fn open(&mut self, ws: &WebSocket) {
        let path = ws.request().uri().path().to_owned();
        if let Some(group) = path.strip_prefix("/rx/") {
            if group.starts_with("h-") {
                ws.join_with_history(group, None).await.ok();
            } else {
                ws.join(group);
            }
        } else if let Some(user) = path.strip_prefix("/member/") {
            ws.join_with_presence("members", Presence::user(user));
        } else if path == "/recover" {
            let since = ws.query_argument("since").map(|s| s.into_owned());
            ws.join_with_history("h-rec", since.as_deref()).await.ok();
        }
        ws.write_message("ready").await.ok();
    }

    async fn on_message(&mut self, ws: &WebSocket, message: Message) {
        let Some(text) = message.as_text() else {
            return;
        };
        let words: Vec<&str> = text.split(' ').collect();
        match words.as_slice() {
            ["say", group, seq] => {
                ws.broadcast(group, *seq);
            }
            ["fill", n] => {
                for i in 0..n.parse::<usize>().unwrap_or(0) {
                    ws.broadcast("h-rec", format!("missed {i}"));
                }
            }
            ["list"] => {
                let mut times = Vec::new();
                let mut count = 0;
                for _ in 0..21 {
                    let start = Instant::now();
                    count = ws.members("members").await.map_or(0, |m| m.len());
                    times.push(start.elapsed());
                }
                times.sort();
                ws.write_message(format!(
                    "list {count} {} {}",
                    times[10].as_micros(),
                    times[19].as_micros()
                ))
                .await
                .ok();
            }
            _ => {}
        }
    }
}

fn server_app(redis: &str) -> Application {
    Application::new()
        .websocket("/rx/{group}", || Bench)
        .websocket("/member/{user}", || Bench)
        .websocket("/recover", || Bench)
        .websocket("/ctl", || Bench)
        .history("h-", History::last(10_000))
        .max_connections(20_000)
        .websocket_max_queued_messages(10_000)
        .broker(RedisBroker::new(redis).expect("redis url"))
}

async fn serve(redis: String) {
    let server = server_app(&redis).bind("127.0.0.1:0").await.expect("bind");
    println!("PORT {}", server.local_addr().expect("addr").port());
    // Exits with the parent: its stdin closes.
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        std::process::exit(0);
    });
    server.run().await.ok();
}

struct Servers {
    children: Vec<Child>,
    ports: Vec<u16>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_servers(redis: &str) -> Servers {
    let mut servers = Servers {
        children: Vec::new(),
        ports: Vec::new(),
    };
    for _ in 0..2 {
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .args(["server", redis])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn a server");
        let stdout = child.stdout.take().expect("stdout");
        let port = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("PORT ")?.parse().ok())
            .expect("the server's port");
        servers.ports.push(port);
        servers.children.push(child);
    }
    servers
}

// ---- the clients and the clock ----

async fn connect(url: &str) -> Client {
    let mut client = tokio::time::timeout(WAIT, squall::connect(url))
        .await
        .expect("connect timed out")
        .expect("connect");
    loop {
        let message = tokio::time::timeout(WAIT, client.recv())
            .await
            .expect("ready timed out")
            .expect("connection open");
        if message.as_text() == Some("ready") {
            return client;
        }
    }
}

/// The sequence number in a plain message or a history envelope.
fn seq_of(message: &Message) -> Option<u64> {
    let text = message.as_text()?;
    if text.starts_with('{') {
        let envelope: Value = serde_json::from_str(text).ok()?;
        envelope["data"].as_str()?.parse().ok()
    } else {
        text.parse().ok()
    }
}

#[derive(Default)]
struct Round {
    seq: u64,
    started: Option<Instant>,
    arrived: usize,
    last: Duration,
}

struct Latency {
    round: Round,
    all: Histogram<u64>,
    done: Rc<tokio::sync::Notify>,
    receivers: usize,
}

async fn latency(servers: &Servers, group: &str, opts: &Opts) -> (Histogram<u64>, Histogram<u64>) {
    let stats = Rc::new(RefCell::new(Latency {
        round: Round::default(),
        all: Histogram::new(3).expect("histogram"),
        done: Rc::new(tokio::sync::Notify::new()),
        receivers: opts.receivers,
    }));
    let mut tasks = Vec::new();
    for i in 0..opts.receivers {
        let port = servers.ports[i % 2];
        let mut client = connect(&format!("ws://127.0.0.1:{port}/rx/{group}")).await;
        let stats = stats.clone();
        tasks.push(tokio::task::spawn_local(async move {
            while let Some(message) = client.recv().await {
                let Some(seq) = seq_of(&message) else {
                    continue;
                };
                let mut stats = stats.borrow_mut();
                if seq != stats.round.seq {
                    continue;
                }
                let Some(started) = stats.round.started else {
                    continue;
                };
                let elapsed = started.elapsed();
                stats.all.record(elapsed.as_micros() as u64).ok();
                stats.round.arrived += 1;
                stats.round.last = elapsed;
                if stats.round.arrived == stats.receivers {
                    stats.done.notify_one();
                }
            }
        }));
    }
    let control = connect(&format!("ws://127.0.0.1:{}/ctl", servers.ports[0])).await;
    let mut last = Histogram::<u64>::new(3).expect("histogram");
    // Round 0 warms up (and waits until both brokers are subscribed).
    let mut seq = 1_000_000u64;
    let mut measured = 0;
    while measured <= opts.rounds {
        seq += 1;
        let done = {
            let mut stats = stats.borrow_mut();
            stats.round = Round {
                seq,
                started: Some(Instant::now()),
                ..Round::default()
            };
            stats.done.clone()
        };
        control
            .send(format!("say {group} {seq}"))
            .await
            .expect("control");
        if tokio::time::timeout(Duration::from_secs(2), done.notified())
            .await
            .is_err()
        {
            assert!(measured == 0, "round {seq} incomplete");
            continue; // still warming up
        }
        if measured == 0 {
            stats.borrow_mut().all.reset();
        } else {
            last.record(stats.borrow().round.last.as_micros() as u64)
                .ok();
        }
        measured += 1;
    }
    for task in tasks {
        task.abort();
    }
    let all = stats.borrow().all.clone();
    (all, last)
}

async fn members(servers: &Servers, opts: &Opts) -> (usize, u64, u64) {
    let mut clients = Vec::new();
    for i in 0..opts.members {
        let port = servers.ports[i % 2];
        clients.push(connect(&format!("ws://127.0.0.1:{port}/member/u{i}")).await);
    }
    let mut control = connect(&format!("ws://127.0.0.1:{}/ctl", servers.ports[0])).await;
    // Presence writes reach Redis on their own task: list until complete.
    let deadline = Instant::now() + WAIT;
    loop {
        control.send("list").await.expect("control");
        let reply = tokio::time::timeout(WAIT, control.recv())
            .await
            .expect("list timed out")
            .expect("reply");
        let text = reply.as_text().unwrap_or_default().to_owned();
        let words: Vec<&str> = text.split(' ').collect();
        if let ["list", count, p50, p90] = words.as_slice() {
            let count: usize = count.parse().unwrap_or(0);
            if count == opts.members {
                return (count, p50.parse().unwrap_or(0), p90.parse().unwrap_or(0));
            }
        }
        assert!(Instant::now() < deadline, "members never complete: {text}");
    }
}

async fn next_json(client: &mut Client) -> Value {
    let message = tokio::time::timeout(WAIT, client.recv())
        .await
        .expect("timed out")
        .expect("open");
    serde_json::from_str(message.as_text().unwrap_or("null")).unwrap_or(Value::Null)
}

async fn recovery(servers: &Servers, opts: &Opts) -> Vec<Duration> {
    let url = format!("ws://127.0.0.1:{}/recover", servers.ports[0]);
    let control = connect(&format!("ws://127.0.0.1:{}/ctl", servers.ports[0])).await;
    let mut times = Vec::new();
    for _ in 0..11 {
        // A live member that sees the fill go by: its last offset is where
        // the next client will recover from... after the fill.
        let mut watcher = squall::connect(&url).await.expect("connect");
        let status = next_json(&mut watcher).await;
        assert_eq!(status["type"], "squall.recovery");
        // The offset before the fill: mark it with one message.
        control.send("fill 1").await.expect("control");
        let mark = loop {
            let envelope = next_json(&mut watcher).await;
            if let Some(offset) = envelope["offset"].as_str() {
                break offset.to_owned();
            }
        };
        control
            .send(format!("fill {}", opts.missed))
            .await
            .expect("control");
        let mut seen = 0;
        while seen < opts.missed {
            if next_json(&mut watcher).await["type"] == "squall.message" {
                seen += 1;
            }
        }
        let start = Instant::now();
        let mut client = squall::connect(&format!("{url}?since={mark}"))
            .await
            .expect("connect");
        let status = next_json(&mut client).await;
        assert_eq!(status["recovered"], true, "{status}");
        assert_eq!(status["missed"], opts.missed);
        let mut got = 0;
        while got < opts.missed {
            if next_json(&mut client).await["type"] == "squall.message" {
                got += 1;
            }
        }
        times.push(start.elapsed());
    }
    times.sort();
    times
}

/// Applications in this process, each with rooms of its own.
struct Member;

impl WebSocketHandler for Member {
    async fn open(&mut self, ws: &WebSocket) {
        let room = ws.path_param("room").unwrap_or_default().to_owned();
        ws.join(&room);
        ws.write_message("ready").await.ok();
    }

    async fn on_message(&mut self, _ws: &WebSocket, _message: Message) {}
}

async fn per_process_cost(redis: &str, processes: usize) -> (u64, u64) {
    const ROOMS: usize = 8;
    const MESSAGES: usize = 100;
    let mut handles = Vec::new();
    let mut brokers = Vec::new();
    let mut members = Vec::new();
    for p in 0..processes {
        let broker = RedisBroker::new(redis).expect("redis url");
        brokers.push(broker.clone());
        let app = Application::new()
            .websocket("/{room}", || Member)
            .broker(broker);
        handles.push(app.handle());
        let server = app.bind("127.0.0.1:0").await.expect("bind");
        let port = server.local_addr().expect("addr").port();
        tokio::task::spawn_local(server.run());
        for r in 0..ROOMS {
            members.push(connect(&format!("ws://127.0.0.1:{port}/p{p}r{r}")).await);
        }
    }
    // Until every room's subscription delivers.
    for (i, member) in members.iter_mut().enumerate() {
        let room = format!("p{}r{}", i / ROOMS, i % ROOMS);
        loop {
            handles[0].broadcast(&room, "probe");
            if let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(200), member.recv()).await
            {
                break;
            }
        }
    }
    // Drain stray probes, then count from here.
    for member in members.iter_mut() {
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), member.recv()).await
        {
        }
    }
    let before: Vec<u64> = brokers.iter().map(RedisBroker::received).collect();
    for m in 0..MESSAGES {
        for p in 0..processes {
            for r in 0..ROOMS {
                // Published from the last application: the others receive
                // through Redis.
                handles[processes - 1].broadcast(&format!("p{p}r{r}"), format!("{m}"));
            }
        }
        // Paced, so the publish queue (4096) never overflows: this counts
        // subscriptions, not drops.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for member in members.iter_mut() {
        let mut got = 0;
        while got < MESSAGES {
            tokio::time::timeout(WAIT, member.recv())
                .await
                .expect("delivery")
                .expect("open");
            got += 1;
        }
    }
    // Local members have theirs before the publisher's own messages come
    // back from Redis: wait until the counts stop moving.
    let mut received: Vec<u64> = Vec::new();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now: Vec<u64> = brokers
            .iter()
            .zip(&before)
            .map(|(b, before)| b.received() - before)
            .collect();
        if now == received {
            break;
        }
        received = now;
    }
    for handle in &handles {
        handle.shutdown();
    }
    let dropped: u64 = brokers.iter().map(RedisBroker::dropped).sum();
    assert_eq!(dropped, 0, "messages dropped: the figures would be wrong");
    let published = (processes * ROOMS * MESSAGES) as u64;
    let mean = received.iter().sum::<u64>() / processes as u64;
    (mean, published)
}

struct Redis(Option<Child>);

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn bench(opts: Opts) {
    let (url, _redis) = match &opts.redis {
        Some(url) => (url.clone(), Redis(None)),
        None => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server on the PATH");
            let url = format!("redis://127.0.0.1:{port}/");
            let client = redis::Client::open(url.as_str()).expect("url");
            let deadline = Instant::now() + WAIT;
            while client.get_multiplexed_async_connection().await.is_err() {
                assert!(Instant::now() < deadline, "redis-server did not start");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (url, Redis(Some(child)))
        }
    };
    let servers = start_servers(&url);
    println!(
        "## across processes: {} receivers over 2 server processes, Redis at {url}\n",
        opts.receivers
    );
    println!(
        "| delivery to {} receivers | p50 | p99 | last receiver p50 | last receiver p99 |",
        opts.receivers
    );
    println!("|---|---|---|---|---|");
    for (label, group) in [("without history", "plain"), ("with history", "h-hist")] {
        let (all, last) = latency(&servers, group, &opts).await;
        println!(
            "| {label} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            all.value_at_quantile(0.5) as f64 / 1000.0,
            all.value_at_quantile(0.99) as f64 / 1000.0,
            last.value_at_quantile(0.5) as f64 / 1000.0,
            last.value_at_quantile(0.99) as f64 / 1000.0,
        );
    }
    let (count, p50, p90) = members(&servers, &opts).await;
    println!("\n| listing {count} members (2 processes) | p50 | p90 |\n|---|---|---|");
    println!(
        "| `Handle::members` | {:.2} ms | {:.2} ms |",
        p50 as f64 / 1000.0,
        p90 as f64 / 1000.0
    );
    let times = recovery(&servers, &opts).await;
    println!(
        "\n| recovering {} missed messages | p50 | max |\n|---|---|---|",
        opts.missed
    );
    println!(
        "| connect → last missed message in | {:.2} ms | {:.2} ms |",
        times[times.len() / 2].as_secs_f64() * 1000.0,
        times[times.len() - 1].as_secs_f64() * 1000.0
    );
    drop(servers);
    println!("\n| processes (8 rooms each, 100 messages per room) | messages published | received from Redis per process | before (pattern subscription: all) |\n|---|---|---|---|");
    for processes in [1, 2, 4, 8] {
        let (mean, published) = per_process_cost(&url, processes).await;
        println!("| {processes} | {published} | {mean} | {published} |");
    }
}
