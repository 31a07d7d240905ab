//! The Redis broker on a real three-node Redis Cluster that the test starts
//! (three `redis-server` processes joined with `redis-cli --cluster
//! create`): sharded pub/sub, so each group's channel lives on one shard and
//! only processes with members subscribe there; broadcasts, history and
//! presence across two applications.
//! `cargo test --features redis-cluster --test redis_cluster`.

#![cfg(feature = "redis-cluster")]

mod redis_support;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use squall::testing::{next_text, TestServer};
use squall::{
    Application, Client, History, Message, Presence, RedisBroker, WebSocket, WebSocketHandler,
};

use redis_support::{free_port, WAIT};

/// The bound on a new cluster agreeing on its slots (gossip between the
/// nodes; slower on a loaded machine).
const FORMING: Duration = Duration::from_secs(60);

/// Three cluster nodes (masters, no replicas), killed on drop.
struct Cluster {
    ports: Vec<u16>,
    children: Vec<Child>,
    dir: std::path::PathBuf,
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = std::env::temp_dir().join(format!("squall-cluster-{}", free_port()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ports: Vec<u16> = (0..3).map(|_| cluster_port()).collect();
        let mut children = Vec::new();
        for port in &ports {
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--cluster-node-timeout", "2000"])
                .args(["--dir", dir.to_str().expect("utf-8 path")])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server on the PATH (apt-get install redis-server)");
            children.push(child);
        }
        let cluster = Cluster {
            ports,
            children,
            dir,
        };
        for port in &cluster.ports {
            cluster.until(*port, "PING", |reply| reply == "PONG").await;
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli on the PATH (it comes with redis-server)");
        assert!(status.success(), "redis-cli --cluster create failed");
        for port in &cluster.ports {
            cluster
                .until(*port, "CLUSTER INFO", |info| {
                    info.contains("cluster_state:ok")
                })
                .await;
        }
        cluster
    }

    fn url(&self, i: usize) -> String {
        format!("redis://127.0.0.1:{}/", self.ports[i])
    }

    async fn node(&self, port: u16) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to a node")
    }

    /// Runs `command` on one node until `done` accepts its answer (bounded).
    async fn until(&self, port: u16, command: &str, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + FORMING;
        loop {
            if let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) {
                if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                    let mut cmd = redis::cmd(command.split(' ').next().unwrap());
                    for arg in command.split(' ').skip(1) {
                        cmd.arg(arg);
                    }
                    if let Ok(reply) = cmd.query_async::<String>(&mut conn).await {
                        if done(&reply) {
                            return;
                        }
                    }
                }
            }
            assert!(Instant::now() < deadline, "{command} on {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sharded subscriptions per channel, per node port.
    async fn shard_subscriptions(&self) -> HashMap<String, Vec<(u16, usize)>> {
        let mut all: HashMap<String, Vec<(u16, usize)>> = HashMap::new();
        for port in &self.ports {
            let mut conn = self.node(*port).await;
            let channels: Vec<String> = redis::cmd("PUBSUB")
                .arg("SHARDCHANNELS")
                .query_async(&mut conn)
                .await
                .expect("PUBSUB SHARDCHANNELS");
            for channel in channels {
                let (_, count): (String, usize) = redis::cmd("PUBSUB")
                    .arg("SHARDNUMSUB")
                    .arg(&channel)
                    .query_async(&mut conn)
                    .await
                    .expect("PUBSUB SHARDNUMSUB");
                all.entry(channel).or_default().push((*port, count));
            }
            let classic: Vec<String> = redis::cmd("PUBSUB")
                .arg("CHANNELS")
                .query_async(&mut conn)
                .await
                .expect("PUBSUB CHANNELS");
            assert!(classic.is_empty(), "classic subscriptions: {classic:?}");
        }
        all
    }
}

/// A free port whose cluster bus port (the port + 10 000) is free too.
fn cluster_port() -> u16 {
    loop {
        let port = free_port();
        let Some(bus) = port.checked_add(10_000) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", bus)).is_ok() {
            return port;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `join G`, `history G SINCE`, `presence G USER`; broadcasts `say G TEXT`.
struct Commands;

impl WebSocketHandler for Commands {
    async fn on_message(&mut self, ws: &WebSocket, message: Message) {
        let Some(text) = message.as_text() else {
            return;
        };
        let words: Vec<&str> = text.splitn(3, ' ').collect();
        match words.as_slice() {
            ["join", group] => {
                ws.join(group);
            }
            ["history", group, since] => {
                let since = (*since != "-").then_some(*since);
                ws.join_with_history(group, since).await.ok();
            }
            ["presence", group, user] => {
                ws.join_with_presence(group, Presence::new(*user, json!({})));
            }
            ["say", group, text] => {
                ws.broadcast(group, *text);
                return;
            }
            _ => return,
        }
        ws.write_message("ok").await.ok();
    }
}

fn app(cluster: &Cluster, node: usize) -> Application {
    Application::new()
        .websocket("/", || Commands)
        .history("h-", History::last(100))
        .broker(RedisBroker::cluster([cluster.url(node)]).expect("cluster url"))
}

async fn command(client: &mut Client, command: &str) {
    client.send(command).await.expect("send");
    assert_eq!(next_text(client).await, "ok");
}

/// Broadcasts `text` to `group` from `from` until `client` gets it.
async fn until_delivered(from: &TestServer, group: &str, client: &mut Client) {
    let deadline = Instant::now() + WAIT;
    loop {
        from.handle().broadcast(group, format!("probe {group}"));
        let round = Instant::now() + Duration::from_millis(200);
        while let Ok(Some(message)) = tokio::time::timeout(
            round.saturating_duration_since(Instant::now()),
            client.recv(),
        )
        .await
        {
            if message.as_text() == Some(&format!("probe {group}")) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "no delivery on {group}");
    }
}

#[tokio::test]
async fn sharded_channels_live_on_one_shard_with_only_the_processes_with_members() {
    let cluster = Cluster::start().await;
    // Each application knows a different node; they find the rest.
    let a = TestServer::start(app(&cluster, 0)).await;
    let b = TestServer::start(app(&cluster, 1)).await;
    let mut on_a = a.connect("/").await;
    let mut on_b = b.connect("/").await;
    let groups: Vec<String> = (0..12).map(|i| format!("g{i}")).collect();
    for (i, group) in groups.iter().enumerate() {
        command(&mut on_a, &format!("join {group}")).await;
        if i % 2 == 0 {
            command(&mut on_b, &format!("join {group}")).await;
        }
    }
    for (i, group) in groups.iter().enumerate() {
        until_delivered(&b, group, &mut on_a).await;
        if i % 2 == 0 {
            until_delivered(&a, group, &mut on_b).await;
        }
    }

    // Every group's channel is subscribed on exactly one node, by the
    // processes with members (2 or 1), and the groups spread over the shards.
    let subscriptions = cluster.shard_subscriptions().await;
    let mut nodes_used = std::collections::HashSet::new();
    for (i, group) in groups.iter().enumerate() {
        let on = &subscriptions[&format!("squall:group:{{{group}}}")];
        assert_eq!(on.len(), 1, "{group} on one node: {on:?}");
        assert_eq!(on[0].1, if i % 2 == 0 { 2 } else { 1 }, "{group}");
        nodes_used.insert(on[0].0);
    }
    assert_eq!(nodes_used.len(), 3, "groups spread over the three shards");

    // A message from A to a group B has no member in never reaches B's
    // subscription: B's client sees only its own groups.
    on_a.send("say g1 odd").await.expect("send");
    on_a.send("say g2 even").await.expect("send");
    loop {
        let text = next_text(&mut on_b).await;
        assert_ne!(text, "odd", "B is not subscribed to g1");
        if text == "even" {
            break;
        }
    }
}

#[tokio::test]
async fn history_and_presence_work_on_the_cluster() {
    let cluster = Cluster::start().await;
    let a = TestServer::start(app(&cluster, 0)).await;
    let b = TestServer::start(app(&cluster, 2)).await;

    // Presence over both applications.
    let mut ada = a.connect("/").await;
    let mut bob = b.connect("/").await;
    command(&mut ada, "presence room ada").await;
    command(&mut bob, "presence room bob").await;
    let deadline = Instant::now() + WAIT;
    loop {
        let members = a.handle().members("room").await;
        let users: Vec<String> = members.iter().flatten().map(|m| m.user.clone()).collect();
        if users == ["ada", "bob"] {
            break;
        }
        assert!(Instant::now() < deadline, "members: {members:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // History: offsets from the shard of h-room, recovery on the other app.
    let mut on_a = a.connect("/").await;
    on_a.send("history h-room -").await.expect("send");
    let status: Value = serde_json::from_str(&next_text(&mut on_a).await).expect("JSON");
    assert_eq!(status["type"], "squall.recovery");
    assert_eq!(next_text(&mut on_a).await, "ok");
    let mut offsets = Vec::new();
    let deadline = Instant::now() + WAIT;
    while offsets.len() < 5 {
        b.handle()
            .broadcast("h-room", format!("m{}", offsets.len()));
        let envelope: Value = serde_json::from_str(&next_text(&mut on_a).await).expect("JSON");
        if envelope["type"] == "squall.message" {
            offsets.push(envelope["offset"].as_str().expect("offset").to_owned());
        }
        assert!(Instant::now() < deadline);
    }
    let mut back = b.connect("/").await;
    back.send(format!("history h-room {}", offsets[1]))
        .await
        .expect("send");
    let status: Value = serde_json::from_str(&next_text(&mut back).await).expect("JSON");
    assert_eq!(status["recovered"], true, "{status}");
    assert_eq!(status["missed"], 3);
    for offset in &offsets[2..] {
        let envelope: Value = serde_json::from_str(&next_text(&mut back).await).expect("JSON");
        assert_eq!(envelope["offset"], offset.as_str());
    }
}
