//! Ping floods from clients that never read (issue 15). Every pong squall
//! owes counts against the send queue's bound until it is flushed; when the
//! outgoing side is full squall stops reading that socket, so the flooder
//! meets TCP backpressure and server memory stays within the bound README
//! states for a control-frame flood, per flooder. Other connections keep
//! echoing meanwhile, and with keep-alive pings on, a flooder that still
//! reads nothing is closed by the ping and close timeouts.
//!
//! One test in this file: it measures this process's resident memory.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{assert_accepted, Frame, Raw, Upgrade, PING};
use squall::testing::{next_text, within, TestServer};
use squall::{Application, Message, WebSocket, WebSocketHandler};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::mpsc;

const FLOODERS: usize = 8;
const QUEUED_BYTES: usize = 256 * 1024;
/// Pings each flooder offers: far more than buffers between it and the
/// server can hold, so it only finishes if the server keeps reading.
const OFFERED: usize = 64 * 1024 * 1024;

/// Echoes text, reports `on_close`.
struct Echo(mpsc::UnboundedSender<()>);

impl WebSocketHandler for Echo {
    async fn on_message(&mut self, ws: &WebSocket, msg: Message) {
        ws.write_message(msg).await.ok();
    }
    async fn on_close(&mut self, _ws: &WebSocket) {
        let _ = self.0.send(());
    }
}

fn echo_app(app: Application) -> (Application, mpsc::UnboundedReceiver<()>) {
    let (closed, closed_rx) = mpsc::unbounded_channel();
    (
        app.websocket("/ws", move || Echo(closed.clone())),
        closed_rx,
    )
}

/// This process's resident set size in bytes.
fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Upgrades a raw client with a small receive buffer, then floods 125-byte
/// pings from a task without ever reading; `sent` counts bytes written.
async fn flooder(addr: std::net::SocketAddr, sent: Arc<AtomicUsize>) -> OwnedReadHalf {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut raw = Raw::new(within("connect", socket.connect(addr)).await.unwrap());
    assert_accepted(&Upgrade::new(addr, "/ws").send_on(&mut raw).await);
    let ping = Frame::new(PING).with(&[0x70; 125]);
    let chunk: Vec<u8> = ping.repeat(64 * 1024 / ping.len());
    let (read, mut write) = raw.into_inner().into_split();
    tokio::spawn(async move {
        while sent.load(Ordering::SeqCst) < OFFERED {
            if write.write_all(&chunk).await.is_err() {
                return;
            }
            sent.fetch_add(chunk.len(), Ordering::SeqCst);
        }
    });
    // The read half stays with the caller, unread.
    read
}

/// Waits until `sent` stops moving for half a second: the flood is held.
async fn until_stalled(sent: &AtomicUsize) -> usize {
    within("the ping flood to stall", async {
        let mut last = usize::MAX;
        let mut still = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = sent.load(Ordering::SeqCst);
            if now == last {
                still += 1;
                if still == 5 {
                    return now;
                }
            } else {
                (last, still) = (now, 0);
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_from_non_readers_is_bounded_and_others_keep_echoing() {
    let (app, _closed) = echo_app(Application::new().websocket_max_queued_bytes(QUEUED_BYTES));
    let server = TestServer::start(app).await;
    let mut client = squall::connect(&server.url("/ws")).await.unwrap();
    client.send("warm-up").await.unwrap();
    assert_eq!(next_text(&mut client).await, "warm-up");

    let rss_before = rss_bytes();
    let sent = Arc::new(AtomicUsize::new(0));
    let mut held = Vec::new();
    for _ in 0..FLOODERS {
        held.push(flooder(server.addr(), sent.clone()).await);
    }
    let stalled_at = until_stalled(&sent).await;
    assert!(
        stalled_at < FLOODERS * OFFERED,
        "the server kept reading the flood: {stalled_at} bytes of pings taken"
    );

    // README, Settings: a peer that sends only control frames and reads
    // nothing holds at most the read buffers (2 KiB + a 64 KiB read-ahead),
    // the inbox (32 pings) and the outgoing bound (max_queued_bytes of
    // pongs; tungstenite's buffer may reserve up to twice what it holds).
    let per_flooder = 2 * 1024 + 64 * 1024 + 32 * 125 + 2 * (QUEUED_BYTES + 127);
    let slack = 4 * 1024 * 1024;
    let growth = rss_bytes().saturating_sub(rss_before);
    eprintln!(
        "{FLOODERS} ping flooders: {stalled_at} bytes of pings sent before the stall; RSS +{} KiB (bound {} KiB + {} KiB slack)",
        growth / 1024,
        FLOODERS * per_flooder / 1024,
        slack / 1024
    );
    assert!(
        growth <= FLOODERS * per_flooder + slack,
        "RSS grew by {} KiB under {FLOODERS} ping flooders",
        growth / 1024
    );

    // Everyone else is served as usual.
    client.send("still here").await.unwrap();
    assert_eq!(next_text(&mut client).await, "still here");
    let mut late = squall::connect(&server.url("/ws")).await.unwrap();
    late.send("late").await.unwrap();
    assert_eq!(next_text(&mut late).await, "late");
    drop(held);
    server.shutdown().await;

    // With keep-alive pings on, a flooder that still reads nothing is closed
    // by the existing timeouts: its pong cannot be read (reading is
    // stopped), the ping times out, and the close times out in turn.
    let (app, mut closed) = echo_app(
        Application::new()
            .websocket_max_queued_bytes(QUEUED_BYTES)
            .websocket_ping_interval(Duration::from_millis(200))
            .websocket_close_timeout(Duration::from_millis(300)),
    );
    let server = TestServer::start(app).await;
    let sent = Arc::new(AtomicUsize::new(0));
    let _held = flooder(server.addr(), sent.clone()).await;
    within("the flooder's on_close", closed.recv())
        .await
        .expect("on_close ran");
    assert!(sent.load(Ordering::SeqCst) < OFFERED);
}
