//! The `/metrics` example (`examples/metrics.rs`, feature `metrics`): after a
//! scripted session, a scrape of `/metrics` shows exactly what happened.
//!
//! This binary installs the process's one global recorder, so it holds one
//! test only.

mod common;
#[path = "../examples/metrics.rs"]
#[allow(dead_code)]
mod example;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use common::{request, Upgrade};
use squall::testing::{within, TestServer};
use squall::Message;

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
    let server = TestServer::start(example::app(example::install_recorder())).await;
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
        ("squall_handler_seconds_count{route=\"/socket/\"}", 4.0),
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
    assert!(!metrics
        .keys()
        .any(|k| k.starts_with("squall_send_queue_overflows_total")));
    assert!(!metrics.keys().any(|k| k.starts_with("squall_prepare_")));

    // A second scrape changes nothing (the /metrics page is not a WebSocket).
    let again = scrape(addr).await;
    assert_eq!(
        again.get("squall_messages_received_total{route=\"/socket/\"}"),
        Some(&4.0)
    );
    server.shutdown().await;
}
