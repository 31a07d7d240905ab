//! Input rate limits (`websocket_max_messages_per_second`,
//! `websocket_max_bytes_per_second`): a raw client floods one connection
//! and the handler sees the configured rate, within 10 %, while the flood
//! waits in TCP (the writer blocks; nothing piles up in the server); or,
//! under `RateLimitPolicy::Close`, the connection closes with 1008.
//!
//! Time is tokio's paused clock once the connection is open, so the rates
//! measured do not depend on how loaded the machine is, and the tests take
//! milliseconds. See [`pause_clock`] for why a 1 ms ticker runs meanwhile.

mod common;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use common::{raw_websocket, read_close, Frame, TEXT};
use squall::testing::{within, TestServer};
use squall::{Application, Message, RateLimitPolicy, WebSocket, WebSocketHandler};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Pauses tokio's clock, with a task ticking every 1 ms (virtual) until the
/// returned guard is dropped.
///
/// A paused current-thread runtime with nothing to run jumps the clock to
/// the next timer even when socket events are already waiting to be handled
/// (it cannot tell them apart from an idle park). Without the ticker that
/// next timer could be a test's 10 s bound, failing it spuriously; with it,
/// such a jump moves time by 1 ms at most.
fn pause_clock() -> impl Drop {
    struct Abort(tokio::task::JoinHandle<()>);
    impl Drop for Abort {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    tokio::time::pause();
    Abort(tokio::spawn(async {
        loop {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }))
}

/// Reports when each message arrived.
struct Arrivals(mpsc::UnboundedSender<Instant>);

impl WebSocketHandler for Arrivals {
    async fn on_message(&mut self, _ws: &WebSocket, _message: Message) {
        let _ = self.0.send(Instant::now());
    }
}

fn app(tx: mpsc::UnboundedSender<Instant>) -> Application {
    Application::new().websocket("/in", move || Arrivals(tx.clone()))
}

/// Writes `payload`-sized text frames as fast as the socket takes them,
/// counting the bytes written, until the socket fails.
fn flood(raw: common::Raw, payload: usize) -> Arc<AtomicU64> {
    let written = Arc::new(AtomicU64::new(0));
    let count = written.clone();
    let frame = Frame::new(TEXT).with(&vec![b'x'; payload]);
    let mut tcp = raw.into_inner();
    tokio::spawn(async move {
        while tcp.write_all(&frame).await.is_ok() {
            count.fetch_add(frame.len() as u64, Relaxed);
        }
    });
    written
}

/// The arrival times of the first `n` messages.
async fn arrivals(rx: &mut mpsc::UnboundedReceiver<Instant>, n: usize) -> Vec<Instant> {
    within("the messages", async {
        let mut times = Vec::with_capacity(n);
        while times.len() < n {
            times.push(rx.recv().await.expect("handler alive"));
        }
        times
    })
    .await
}

/// The flood is held in TCP: the writer is blocked (no progress while the
/// runtime runs everything else but the clock stands still), having written
/// no more than the messages delivered plus what socket buffers hold.
async fn assert_flood_blocked(written: &AtomicU64, delivered_bytes: u64) {
    let before = written.load(Relaxed);
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        written.load(Relaxed),
        before,
        "the flooding writer is blocked"
    );
    // Loopback socket buffers hold a few MiB at most (send + receive).
    let bound = delivered_bytes + 32 * 1024 * 1024;
    assert!(before < bound, "{before} bytes written, bound {bound}");
}

fn within_10_percent(measured: f64, expected: f64, what: &str) {
    assert!(
        (measured - expected).abs() <= expected * 0.10,
        "{what}: measured {measured:.4}, expected {expected:.4} ± 10 %"
    );
}

#[tokio::test]
async fn message_rate_holds_under_a_flood_and_the_flood_waits_in_tcp() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = TestServer::start(
        app(tx).websocket_max_messages_per_second(100, 10), // Pause is the default
    )
    .await;
    let raw = raw_websocket(server.addr(), "/in").await;
    let _clock = pause_clock();
    let written = flood(raw, 64);

    // The burst arrives at once, then one message every 10 ms: message 210
    // is due 2 s after the first.
    let times = arrivals(&mut rx, 210).await;
    let start = times[0];
    assert!(
        times[9] - start < Duration::from_millis(1),
        "the burst of 10 passes at once"
    );
    within_10_percent(
        (times[209] - start).as_secs_f64(),
        2.0,
        "time to message 210",
    );
    let rate = 200.0 / (times[209] - times[9]).as_secs_f64();
    within_10_percent(rate, 100.0, "messages per second after the burst");
    assert_flood_blocked(&written, 210 * 70).await;
}

#[tokio::test]
async fn byte_rate_holds_under_a_flood() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = TestServer::start(
        app(tx)
            .websocket_max_bytes_per_second(64 * 1024, 16 * 1024)
            .websocket_rate_limit_policy(RateLimitPolicy::Pause),
    )
    .await;
    let raw = raw_websocket(server.addr(), "/in").await;
    let _clock = pause_clock();
    let written = flood(raw, 1024);

    // 16 KiB of burst (plus the one message that overdraws it), then
    // 64 messages of 1 KiB a second: message 145 is due 2 s after the first.
    let times = arrivals(&mut rx, 145).await;
    let start = times[0];
    within_10_percent(
        (times[144] - start).as_secs_f64(),
        2.0,
        "time to message 145",
    );
    let bytes_per_second = (128.0 * 1024.0) / (times[144] - times[16]).as_secs_f64();
    within_10_percent(
        bytes_per_second,
        65536.0,
        "bytes per second after the burst",
    );
    assert_flood_blocked(&written, 145 * 1100).await;
}

#[tokio::test]
async fn close_policy_closes_with_1008_at_the_first_message_over_the_limit() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = TestServer::start(
        app(tx)
            .websocket_max_messages_per_second(10, 5)
            .websocket_rate_limit_policy(RateLimitPolicy::Close),
    )
    .await;
    let mut raw = raw_websocket(server.addr(), "/in").await;
    let _clock = pause_clock();
    let burst: Vec<u8> = (0..8).flat_map(|_| Frame::new(TEXT).with(b"hi")).collect();
    raw.write_all(&burst).await.expect("write");
    let (code, reason) = read_close(&mut raw).await;
    assert_eq!(
        (code, reason.as_str()),
        (1008, "message rate limit exceeded")
    );
    // The five of the burst were delivered, the sixth and later were not.
    assert_eq!(arrivals(&mut rx, 5).await.len(), 5);
    assert!(
        rx.try_recv().is_err(),
        "nothing past the limit reached the handler"
    );
}

#[tokio::test]
async fn close_policy_on_bytes_says_so() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let server = TestServer::start(
        app(tx)
            .websocket_max_bytes_per_second(1000, 1000)
            .websocket_rate_limit_policy(RateLimitPolicy::Close),
    )
    .await;
    let mut raw = raw_websocket(server.addr(), "/in").await;
    let _clock = pause_clock();
    // 1200 bytes pass (into debt), the next message finds the bucket empty.
    let two: Vec<u8> = (0..2)
        .flat_map(|_| Frame::new(TEXT).with(&[b'x'; 1200]))
        .collect();
    raw.write_all(&two).await.expect("write");
    let (code, reason) = read_close(&mut raw).await;
    assert_eq!((code, reason.as_str()), (1008, "byte rate limit exceeded"));
}

/// Real time here: a client pacing itself at half the limit (one message
/// every 20 ms against 100 a second, burst 2) is never closed and every
/// message arrives. (Under the paused clock, idle gaps between messages let
/// the runtime's auto-advance outrun the socket events.)
#[tokio::test]
async fn a_paced_client_under_the_limit_is_never_held_back() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = TestServer::start(
        app(tx)
            .websocket_max_messages_per_second(100, 2)
            .websocket_rate_limit_policy(RateLimitPolicy::Close),
    )
    .await;
    let mut raw = raw_websocket(server.addr(), "/in").await;
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    // Paced means paced: after a stall (a busy machine) the next tick waits
    // its 20 ms rather than firing the missed ones back to back, which
    // would be a burst over the limit.
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..20 {
        pace.tick().await;
        raw.write_all(&Frame::new(TEXT).with(b"tick"))
            .await
            .expect("write");
        arrivals(&mut rx, 1).await;
    }
}
