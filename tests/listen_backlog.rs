//! The listen backlog (issue 15): `bind` listens with `listen_backlog`
//! (default 1024, clamped by `net.core.somaxconn`), so a burst of connects
//! larger than the old default of 128 is completed by the kernel at once
//! instead of having its SYNs dropped until the clients retry.

use std::time::Duration;

use squall::testing::within;
use squall::Application;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn somaxconn() -> usize {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096)
}

/// Connects `burst` clients to a bound server whose accept loop has not
/// started: only the backlog can hold them. Each connect must complete
/// within the SYN retransmission time (1 s), i.e. no SYN was dropped; then
/// the server runs and answers every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_burst_beyond_128_is_completed_by_the_default_backlog() {
    let burst = 1000.min(somaxconn().saturating_sub(1));
    assert!(burst > 128, "somaxconn too small to test the backlog");
    let app = Application::new().page("/", "ok");
    let handle = app.handle();
    let server = app.bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();

    let mut connects = tokio::task::JoinSet::new();
    for _ in 0..burst {
        connects.spawn(async move {
            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await
        });
    }
    let mut clients = Vec::with_capacity(burst);
    while let Some(connected) = connects.join_next().await {
        let tcp = connected
            .unwrap()
            .expect("a connect was left unanswered: its SYN found the accept queue full")
            .expect("connect");
        clients.push(tcp);
    }

    let running = tokio::spawn(server.run());
    within("every queued connection to be served", async {
        for tcp in &mut clients {
            tcp.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
        }
        for tcp in &mut clients {
            let mut response = Vec::new();
            tcp.read_to_end(&mut response).await.unwrap();
            assert!(response.starts_with(b"HTTP/1.1 200"), "{response:?}");
        }
    })
    .await;
    handle.shutdown();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_backlog_above_somaxconn_is_clamped_not_refused() {
    let server = Application::new()
        .listen_backlog(u32::MAX)
        .bind("127.0.0.1:0")
        .await
        .expect("bind with an oversized backlog");
    assert!(server.local_addr().unwrap().port() > 0);
}
