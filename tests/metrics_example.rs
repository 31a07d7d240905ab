//! The `/metrics` example (`examples/metrics.rs`, feature `metrics`): after a
//! scripted session, a scrape of `/metrics` shows exactly what happened.
//!
//! The process has one global recorder, shared by the tests of this binary:
//! each test uses routes of its own, so the per-route counts stay exact, and
//! only one test triggers the unlabelled (per-process) ones.

mod common;
#[path = "../examples/metrics.rs"]
#[allow(dead_code)]
mod example;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use common::{raw_websocket, read_close, request, Frame, Upgrade, TEXT};
use metrics_exporter_prometheus::PrometheusHandle;
use squall::testing::{within, TestServer};
use squall::{Broker, Delivery, Message, WebSocket, WebSocketHandler};
use tokio::io::AsyncWriteExt;

/// The process's recorder, installed by the first test that needs it.
fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(example::install_recorder).clone()
}

/// One scrape: `name{label="v",…}` (labels sorted) → value.
async fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (response, _) = request(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 200);
    assert!(response
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")));
    response
        .body_text()
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            (normalise(series), value.parse::<f64>().expect("a number"))
        })
        .collect()
}

/// Sorts a series' labels, so the assertions do not depend on their order.
fn normalise(series: &str) -> String {
    let Some((name, labels)) = series.split_once('{') else {
        return series.to_owned();
    };
    let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
    labels.sort_unstable();
    format!("{name}{{{}}}", labels.join(","))
}

#[tokio::test]
async fn a_scrape_after_a_scripted_session_shows_exact_counts() {
    let server = TestServer::start(example::app(recorder())).await;
    let addr = server.addr();

    // A refused upgrade: no `Upgrade` header (400).
    let (refused, _) = Upgrade::new(addr, "/socket/")
        .without("upgrade")
        .send(addr)
        .await;
    assert_eq!(refused.status, 400);

    // One connection: three texts and a binary message, echoed, then the
    // client closes with 1000.
    let mut client = server.connect("/socket/").await;
    for message in [
        Message::from("a"),
        Message::from("bb"),
        Message::from("ccc"),
        Message::from(vec![1u8, 2, 3, 4]),
    ] {
        client.send(message.clone()).await.expect("send");
        assert_eq!(client.recv().await, Some(message));
    }
    client.close(1000, "done").await;

    // on_close runs (and the close is counted) just after the client has
    // seen the close handshake end: wait for the gauge to come back to 0.
    let open = "squall_connections_open{route=\"/socket/\"}";
    let metrics = within("the connection to be counted closed", async {
        loop {
            let metrics = scrape(addr).await;
            if metrics.get("squall_closes_total{code=\"1000\",route=\"/socket/\",side=\"client\"}")
                == Some(&1.0)
            {
                return metrics;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;

    let expected = [
        (open, 0.0),
        (
            "squall_handshakes_total{route=\"/socket/\",status=\"101\"}",
            1.0,
        ),
        (
            "squall_handshakes_total{route=\"/socket/\",status=\"400\"}",
            1.0,
        ),
        ("squall_messages_received_total{route=\"/socket/\"}", 4.0),
        ("squall_received_bytes_total{route=\"/socket/\"}", 10.0),
        ("squall_messages_sent_total{route=\"/socket/\"}", 4.0),
        ("squall_sent_bytes_total{route=\"/socket/\"}", 10.0),
        // Handler time is sampled (by default one message in 8, starting
        // with the first): of these four messages, only the first is timed.
        ("squall_handler_seconds_count{route=\"/socket/\"}", 1.0),
        // A histogram in the example's buckets, not a summary.
        (
            "squall_handler_seconds_bucket{le=\"+Inf\",route=\"/socket/\"}",
            1.0,
        ),
        (
            "squall_closes_total{code=\"1000\",route=\"/socket/\",side=\"client\"}",
            1.0,
        ),
    ];
    for (series, value) in expected {
        assert_eq!(
            metrics.get(series),
            Some(&value),
            "{series} in the scrape:\n{metrics:#?}"
        );
    }
    // Nothing else happened: no panics, no timeouts, no overflows.
    for absent in [
        "squall_handler_panics_total{route=\"/socket/\"}",
        "squall_ping_timeouts_total{route=\"/socket/\"}",
    ] {
        assert_eq!(metrics.get(absent).copied().unwrap_or(0.0), 0.0, "{absent}");
    }
    for series in metrics.keys() {
        assert!(
            !series.contains("route=\"/socket/\"") || !series.starts_with("squall_prepare_"),
            "{series}"
        );
    }

    // A second scrape changes nothing (the /metrics page is not a WebSocket).
    let again = scrape(addr).await;
    assert_eq!(
        again.get("squall_messages_received_total{route=\"/socket/\"}"),
        Some(&4.0)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn handler_time_sampling_times_the_first_message_then_one_in_n() {
    let app = example::app(recorder())
        .websocket("/sampled", || example::Echo)
        .handler_time_sampling(4);
    let server = TestServer::start(app).await;
    let addr = server.addr();
    let timed = "squall_handler_seconds_count{route=\"/sampled\"}";

    // Nine messages on one connection: messages 1, 5 and 9 are timed.
    let mut client = server.connect("/sampled").await;
    for i in 0..9 {
        let message = Message::from(format!("{i}"));
        client.send(message.clone()).await.expect("send");
        assert_eq!(client.recv().await, Some(message));
    }
    client.close(1000, "").await;
    let metrics = scrape_until(
        addr,
        "squall_messages_received_total{route=\"/sampled\"}",
        9.0,
    )
    .await;
    assert_eq!(metrics.get(timed), Some(&3.0), "{metrics:#?}");
    assert_eq!(
        metrics.get("squall_handler_seconds_bucket{le=\"+Inf\",route=\"/sampled\"}"),
        Some(&3.0)
    );
    assert!(metrics["squall_handler_seconds_sum{route=\"/sampled\"}"] > 0.0);

    // The countdown is per connection: a new one times its first message.
    let mut second = server.connect("/sampled").await;
    second.send("again").await.expect("send");
    assert_eq!(second.recv().await, Some(Message::from("again")));
    second.close(1000, "").await;
    let metrics = scrape_until(
        addr,
        "squall_messages_received_total{route=\"/sampled\"}",
        10.0,
    )
    .await;
    assert_eq!(metrics.get(timed), Some(&4.0), "{metrics:#?}");
    server.shutdown().await;
}

/// Misbehaves on request, to trigger each counted event.
struct Events;

impl WebSocketHandler for Events {
    async fn prepare(
        &mut self,
        request: &mut http::Request<()>,
    ) -> Result<(), http::Response<squall::Bytes>> {
        match request.uri().query() {
            Some("refuse") => Err(http::Response::builder()
                .status(401)
                .body(squall::Bytes::new())
                .unwrap()),
            Some("slow") => std::future::pending().await,
            _ => Ok(()),
        }
    }

    async fn on_message(&mut self, ws: &WebSocket, message: Message) {
        match message.as_text() {
            Some("panic") => panic!("boom"),
            Some("flood") => common::send_until_full(&ws.sender()).await,
            Some("broadcast") => {
                ws.broadcast("room", "hi");
            }
            _ => {}
        }
    }
}

/// A broker that hands every publication straight back, as if another
/// process had published it.
#[derive(Default)]
struct Loopback(Mutex<Option<Delivery>>);

impl Broker for Loopback {
    fn start(&self, delivery: Delivery) {
        *self.0.lock().unwrap() = Some(delivery);
    }
    fn publish(&self, group: &str, message: &Message) {
        if let Some(delivery) = &*self.0.lock().unwrap() {
            delivery.deliver(group, message.clone());
        }
    }
}

/// Waits until a scrape shows `series` at `value`.
async fn scrape_until(addr: SocketAddr, series: &str, value: f64) -> BTreeMap<String, f64> {
    let last = Mutex::new(BTreeMap::new());
    let found = tokio::time::timeout(squall::testing::TIMEOUT, async {
        loop {
            let metrics = scrape(addr).await;
            if metrics.get(series) == Some(&value) {
                return metrics;
            }
            *last.lock().unwrap() = metrics;
            tokio::task::yield_now().await;
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!(
            "{series} never reached {value}:\n{:#?}",
            last.lock().unwrap()
        )
    })
}

#[tokio::test]
async fn every_kind_of_event_is_counted() {
    let prometheus = recorder();
    let app = example::app(prometheus)
        .websocket("/events", || Events)
        .prepare_timeout(Duration::from_millis(50))
        .websocket_ping_interval(Duration::from_millis(100))
        .websocket_close_timeout(Duration::from_millis(100))
        .websocket_max_queued_messages(2)
        .websocket_max_messages_per_second(1000, 3)
        .websocket_rate_limit_policy(squall::RateLimitPolicy::Close)
        .broker(Loopback::default());
    let server = TestServer::start(app).await;
    let addr = server.addr();

    // prepare refuses (401), and times out (503).
    let (refused, _) = Upgrade::new(addr, "/events?refuse").send(addr).await;
    assert_eq!(refused.status, 401);
    let (slow, _) = Upgrade::new(addr, "/events?slow").send(addr).await;
    assert_eq!(slow.status, 503);

    // A handler panic: 1011 from the server.
    let mut client = server.connect("/events").await;
    client.send("panic").await.unwrap();
    while client.recv().await.is_some() {}
    assert_eq!(client.close_code(), Some(1011));

    // A broadcast through the broker: published once, delivered back once.
    let mut member = server.connect("/events").await;
    member.send("broadcast").await.unwrap();
    member.close(1000, "").await;

    // The send queue overflows a client that does not read (default
    // policy: close with 1013).
    let mut stalled = raw_websocket(addr, "/events").await;
    stalled
        .write_all(&Frame::new(TEXT).with(b"flood"))
        .await
        .unwrap();

    // Four messages at once, burst 3: closed with 1008.
    let mut eager = raw_websocket(addr, "/events").await;
    let four: Vec<u8> = (0..4).flat_map(|_| Frame::new(TEXT).with(b"x")).collect();
    eager.write_all(&four).await.unwrap();
    assert_eq!(read_close(&mut eager).await.0, 1008);

    // A raw client never answers pings: closed with 1001 by the ping
    // timeout (the stalled one above is closed by its overflow first; the
    // others answered pings until they closed).
    let _silent = raw_websocket(addr, "/events").await;

    // Every connection has ended (and been counted) once the silent one has
    // timed out and none is open.
    scrape_until(addr, "squall_ping_timeouts_total{route=\"/events\"}", 1.0).await;
    let metrics = scrape_until(addr, "squall_connections_open{route=\"/events\"}", 0.0).await;
    let _ = &mut stalled;
    let expected = [
        ("squall_prepare_refusals_total{route=\"/events\"}", 1.0),
        ("squall_prepare_timeouts_total{route=\"/events\"}", 1.0),
        (
            "squall_handshakes_total{route=\"/events\",status=\"401\"}",
            1.0,
        ),
        (
            "squall_handshakes_total{route=\"/events\",status=\"503\"}",
            1.0,
        ),
        (
            "squall_handshakes_total{route=\"/events\",status=\"101\"}",
            5.0,
        ),
        ("squall_handler_panics_total{route=\"/events\"}", 1.0),
        (
            "squall_closes_total{code=\"1011\",route=\"/events\",side=\"server\"}",
            1.0,
        ),
        (
            "squall_closes_total{code=\"1008\",route=\"/events\",side=\"server\"}",
            1.0,
        ),
        (
            "squall_closes_total{code=\"1013\",route=\"/events\",side=\"server\"}",
            1.0,
        ),
        (
            "squall_closes_total{code=\"1001\",route=\"/events\",side=\"server\"}",
            1.0,
        ),
        (
            "squall_closes_total{code=\"1000\",route=\"/events\",side=\"client\"}",
            1.0,
        ),
        ("squall_connections_open{route=\"/events\"}", 0.0),
        (
            "squall_rate_limited_total{action=\"close\",route=\"/events\"}",
            1.0,
        ),
        ("squall_ping_timeouts_total{route=\"/events\"}", 1.0),
        ("squall_send_queue_overflows_total{policy=\"close\"}", 1.0),
        ("squall_broker_publishes_total", 1.0),
        ("squall_broker_deliveries_total", 1.0),
    ];
    for (series, value) in expected {
        assert_eq!(
            metrics.get(series),
            Some(&value),
            "{series} in the scrape:\n{metrics:#?}"
        );
    }
}
