//! Slow consumers: the per-connection send queue is bounded, `write_message`
//! waits for room, `send` never waits, and the overflow policy decides what
//! happens to a connection whose queue is full.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{assert_accepted, send_until_full, Raw, Upgrade};
use squall::testing::{assert_closed_with, next_message, within, TestServer};
use squall::{Application, Message, OverflowPolicy, WebSocket, WebSocketHandler, WebSocketSender};
use tokio::sync::mpsc;

const CHUNK: usize = 64 * 1024;
const OFFERED: usize = 200 * 1024 * 1024;

/// Hands each connection's sender to the test, and reports `on_close`.
struct Exposed {
    senders: mpsc::UnboundedSender<WebSocketSender>,
    closed: mpsc::UnboundedSender<()>,
}

impl WebSocketHandler for Exposed {
    async fn open(&mut self, ws: &WebSocket) {
        self.senders.send(ws.sender()).unwrap();
    }
    async fn on_message(&mut self, _ws: &WebSocket, _msg: Message) {}
    async fn on_close(&mut self, _ws: &WebSocket) {
        let _ = self.closed.send(());
    }
}

fn exposed(
    app: Application,
) -> (
    Application,
    mpsc::UnboundedReceiver<WebSocketSender>,
    mpsc::UnboundedReceiver<()>,
) {
    let (senders, senders_rx) = mpsc::unbounded_channel();
    let (closed, closed_rx) = mpsc::unbounded_channel();
    let app = app.websocket("/ws", move || Exposed {
        senders: senders.clone(),
        closed: closed.clone(),
    });
    (app, senders_rx, closed_rx)
}

/// A raw client with a small receive buffer that completes the handshake
/// and then never reads.
async fn never_reading_client(addr: std::net::SocketAddr) -> Raw {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut raw = Raw::new(within("connect", socket.connect(addr)).await.unwrap());
    assert_accepted(&Upgrade::new(addr, "/ws").send_on(&mut raw).await);
    raw
}

/// This process's resident set size in bytes, from /proc/self/status.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn proc_max(path: &str) -> usize {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(8 * 1024 * 1024)
}

/// A client that never reads while the server offers 200 MB: `write_message`
/// stops making progress at the queue bound (plus what kernel buffers take),
/// `send` fails at once with `QueueFull`, and resident memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_reading_client_bounds_the_queue_and_memory() {
    const QUEUED_MESSAGES: usize = 8;
    const QUEUED_BYTES: usize = 512 * 1024;
    let (app, mut senders, mut closed) = exposed(
        Application::new()
            .websocket_max_queued_messages(QUEUED_MESSAGES)
            .websocket_max_queued_bytes(QUEUED_BYTES)
            .websocket_overflow(OverflowPolicy::Reject),
    );
    let server = TestServer::start(app).await;
    let rss_before = rss_bytes();
    let client = never_reading_client(server.addr()).await;
    let sender = within("open", senders.recv()).await.unwrap();

    let completed = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn({
        let sender = sender.clone();
        let completed = completed.clone();
        async move {
            let chunk = squall::Bytes::from(vec![0x5a; CHUNK]);
            for _ in 0..OFFERED / CHUNK {
                if sender.write_message(chunk.clone()).await.is_err() {
                    break;
                }
                completed.fetch_add(1, Ordering::SeqCst);
            }
        }
    });

    // Wait until the writer stops making progress (bounded).
    let mut last = usize::MAX;
    let mut stable_for = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = completed.load(Ordering::SeqCst);
        if now == last {
            stable_for += 1;
            if stable_for >= 10 {
                break;
            }
        } else {
            stable_for = 0;
            last = now;
        }
    }
    let stalled_at = completed.load(Ordering::SeqCst);
    // The queue holds QUEUED_BYTES; tungstenite's write buffer holds about a
    // flush's worth plus one frame; the kernel's send and receive buffers
    // (autotuned, up to their maxima) absorb the rest.
    let kernel = proc_max("/proc/sys/net/ipv4/tcp_wmem") + 4096 * 2;
    let bound = QUEUED_BYTES / CHUNK + 2 + kernel.div_ceil(CHUNK) + 2;
    assert!(
        stalled_at <= bound,
        "write_message kept going: {stalled_at} writes of 64 KiB (bound {bound})"
    );
    assert!(stalled_at < OFFERED / CHUNK);
    assert!(!writer.is_finished(), "the writer must be blocked");

    // A non-waiting send fails at once, and the connection stays (Reject).
    let started = std::time::Instant::now();
    let error = sender.send(vec![1u8; CHUNK]).unwrap_err();
    assert!(error.is_queue_full(), "{error:?}");
    assert!(started.elapsed() < Duration::from_millis(100));
    assert!(!sender.is_closed());

    let rss_after = rss_bytes();
    let growth = rss_after.saturating_sub(rss_before);
    eprintln!(
        "slow consumer: {stalled_at} writes completed (bound {bound}); RSS {} -> {} KiB (+{} KiB)",
        rss_before / 1024,
        rss_after / 1024,
        growth / 1024
    );
    assert!(
        growth < 64 * 1024 * 1024,
        "RSS grew by {} MiB",
        growth / (1024 * 1024)
    );

    // The client leaves: the blocked writer wakes with Closed, on_close runs.
    drop(client);
    within("on_close", closed.recv()).await.unwrap();
    within("the writer to finish", writer).await.unwrap();
    assert!(sender.is_closed());
    assert!(sender.send("late").unwrap_err().is_closed());
    server.shutdown().await;
}

/// Fills a connection's queue with non-waiting sends while nothing drains it.
/// Runs on the current-thread runtime, so the connection task cannot drain the
/// queue during the loop.
fn fill(sender: &WebSocketSender) -> (usize, squall::WriteError) {
    for i in 0..OFFERED / CHUNK {
        let mut payload = vec![0u8; CHUNK];
        payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
        if let Err(error) = sender.send(payload) {
            return (i, error);
        }
    }
    panic!("the queue never filled");
}

fn index_of(message: &Message) -> u64 {
    match message {
        Message::Binary(data) => u64::from_be_bytes(data[..8].try_into().unwrap()),
        other => panic!("unexpected {other:?}"),
    }
}

/// `OverflowPolicy::Reject`: the sender gets `QueueFull`, the connection stays
/// open, and every message accepted before arrives in order.
#[tokio::test]
async fn reject_policy_keeps_the_connection() {
    let (app, mut senders, mut closed) =
        exposed(Application::new().websocket_overflow(OverflowPolicy::Reject));
    let server = TestServer::start(app).await;
    let mut client = server.connect("/ws").await;
    let sender = within("open", senders.recv()).await.unwrap();

    let (accepted, error) = fill(&sender);
    assert!(error.is_queue_full(), "{error:?}");
    // Default byte bound: 1 MiB of 64 KiB messages.
    assert_eq!(accepted, 16);
    assert!(!sender.is_closed());

    for i in 0..accepted {
        assert_eq!(index_of(&next_message(&mut client).await), i as u64);
    }
    sender.send("still here").unwrap();
    assert_eq!(
        next_message(&mut client).await.as_text(),
        Some("still here")
    );
    assert!(!sender.is_closed());
    assert!(closed.try_recv().is_err(), "on_close must not have run");
    client.close(1000, "").await;
    within("on_close", closed.recv()).await.unwrap();
    server.shutdown().await;
}

/// `OverflowPolicy::Close(1008)`: the sender gets `QueueFull`, then the
/// connection delivers what was queued and closes with 1008.
#[tokio::test]
async fn close_policy_closes_with_its_code_after_the_queue() {
    overflow_closes_with(
        Application::new().websocket_overflow(OverflowPolicy::Close(1008)),
        1008,
    )
    .await;
}

/// The default policy is `Close(1013)`.
#[tokio::test]
async fn default_policy_closes_with_1013() {
    assert_eq!(OverflowPolicy::default(), OverflowPolicy::Close(1013));
    overflow_closes_with(Application::new(), 1013).await;
}

async fn overflow_closes_with(app: Application, code: u16) {
    let (app, mut senders, mut closed) = exposed(app);
    let server = TestServer::start(app).await;
    let mut client = server.connect("/ws").await;
    let sender = within("open", senders.recv()).await.unwrap();

    let (accepted, error) = fill(&sender);
    assert!(error.is_queue_full(), "{error:?}");
    assert_eq!(accepted, 16);
    for i in 0..accepted {
        assert_eq!(index_of(&next_message(&mut client).await), i as u64);
    }
    assert_closed_with(&mut client, code).await;
    within("on_close", closed.recv()).await.unwrap();
    assert!(sender.is_closed());
    assert!(sender.send("late").unwrap_err().is_closed());
    server.shutdown().await;
}

/// A client that never reads meets the close policy: the server cannot even
/// write the close frame, so it gives up after the close timeout, drops the
/// socket and runs `on_close`.
#[tokio::test]
async fn close_policy_drops_a_client_that_never_reads() {
    let (app, mut senders, mut closed) = exposed(
        Application::new()
            .websocket_overflow(OverflowPolicy::Close(1008))
            .websocket_close_timeout(Duration::from_millis(300)),
    );
    let server = TestServer::start(app).await;
    let _client = never_reading_client(server.addr()).await;
    let sender = within("open", senders.recv()).await.unwrap();
    // Keep offering until the queue overflows (the kernel absorbs the first
    // few megabytes).
    send_until_full(&sender).await;
    within("on_close", closed.recv()).await.unwrap();
    assert!(sender.is_closed());
    server.shutdown().await;
}
