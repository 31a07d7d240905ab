//! SPEC §3, the hostile request heads: oversize heads (431), slowloris and
//! silent connections (dropped), the connection limit (503) and malformed
//! requests (400). None of them may reach a handler; every refusal is a
//! complete response, after which the server closes the connection.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{open, read_to_eof, refusal, Upgrade};
use squall::testing::{next_text, within, TestServer};
use squall::{Application, Client, Message, WebSocket, WebSocketHandler};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Counts every handler method that runs.
struct Counted(Arc<AtomicUsize>);

impl WebSocketHandler for Counted {
    async fn prepare(
        &mut self,
        _request: &mut http::Request<()>,
    ) -> Result<(), http::Response<bytes::Bytes>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn open(&mut self, _ws: &WebSocket) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    async fn on_message(&mut self, ws: &WebSocket, msg: Message) {
        ws.write_message(msg).await.ok();
    }
}

fn counted_app(app: Application) -> (Application, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    (app.websocket("/ws", move || Counted(c.clone())), calls)
}

/// Connects to `/ws`, retrying while the server answers 503 (until a slot
/// is free).
async fn connect_once_a_slot_is_free(server: &TestServer) -> Client {
    within("a free connection slot", async {
        loop {
            match squall::connect(&server.url("/ws")).await {
                Ok(client) => return client,
                Err(error) if error.status() == Some(http::StatusCode::SERVICE_UNAVAILABLE) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Err(error) => panic!("{error}"),
            }
        }
    })
    .await
}

#[tokio::test]
async fn oversize_head_gets_431() {
    let (app, calls) = counted_app(Application::new().max_request_head_size(1024));
    let server = TestServer::start(app).await;
    let big = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(2000)
    );
    assert_eq!(refusal(server.addr(), big.as_bytes()).await.status, 431);
    // Too many header lines is too large as well.
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    let response = refusal(
        server.addr(),
        format!("GET /ws HTTP/1.1\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert_eq!(response.status, 431);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn default_head_limit_is_16_kib() {
    let (app, calls) = counted_app(Application::new());
    let server = TestServer::start(app).await;
    let big = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(17 * 1024)
    );
    assert_eq!(refusal(server.addr(), big.as_bytes()).await.status, 431);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    server.shutdown().await;
}

/// A client sending its head one byte every 50 ms is dropped when the head
/// timeout passes, and its connection slot is freed.
#[tokio::test]
async fn slowloris_is_dropped_and_its_slot_freed() {
    let head_timeout = Duration::from_millis(300);
    let (app, calls) = counted_app(
        Application::new()
            .request_head_timeout(head_timeout)
            .max_connections(1),
    );
    let server = TestServer::start(app).await;

    let mut slow = open(server.addr()).await;
    let started = Instant::now();
    let request = Upgrade::new(server.addr(), "/ws").to_bytes();
    let (mut read_half, mut write_half) = tokio::io::split(&mut slow);
    let attack = async {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        for byte in &request {
            tick.tick().await;
            if write_half.write_all(&[*byte]).await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await;
    };
    let dropped = async {
        let mut buf = [0u8; 64];
        read_half.read(&mut buf).await.unwrap_or(0)
    };
    let n = tokio::select! {
        () = attack => unreachable!(),
        n = within("the slowloris to be dropped", dropped) => n,
    };
    assert_eq!(n, 0, "the server must drop the connection, not answer");
    let elapsed = started.elapsed();
    assert!(elapsed >= head_timeout, "dropped too early: {elapsed:?}");
    assert!(elapsed < head_timeout * 10, "dropped too late: {elapsed:?}");
    drop(slow);

    // The only slot is free again: a well-behaved client is served.
    let mut client = connect_once_a_slot_is_free(&server).await;
    client.send("ok").await.unwrap();
    assert_eq!(next_text(&mut client).await, "ok");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "prepare and open, once");
    client.close(1000, "").await;
    server.shutdown().await;
}

/// Past `max_connections`, new connections get 503 and reach no handler.
#[tokio::test]
async fn connections_past_the_limit_get_503() {
    let (app, calls) = counted_app(Application::new().max_connections(3));
    let server = TestServer::start(app).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(server.connect("/ws").await);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    for _ in 0..5 {
        let refused = squall::connect(&server.url("/ws")).await.unwrap_err();
        assert_eq!(
            refused.status(),
            Some(http::StatusCode::SERVICE_UNAVAILABLE),
            "{refused}"
        );
    }
    // A raw look at the 503.
    let request = Upgrade::new(server.addr(), "/ws").to_bytes();
    assert_eq!(refusal(server.addr(), &request).await.status, 503);
    assert_eq!(calls.load(Ordering::SeqCst), 6, "no handler ran for them");
    // The ones in keep working.
    for client in &mut clients {
        client.send("hi").await.unwrap();
        assert_eq!(next_text(client).await, "hi");
    }
    // Closing one frees a slot.
    let mut first = clients.remove(0);
    first.close(1000, "").await;
    let mut again = connect_once_a_slot_is_free(&server).await;
    again.send("back").await.unwrap();
    assert_eq!(next_text(&mut again).await, "back");
    again.close(1000, "").await;
    for mut client in clients {
        client.close(1000, "").await;
    }
    server.shutdown().await;
}

/// Malformed request lines and headers get 400, and reach no handler.
#[tokio::test]
async fn malformed_requests_get_400() {
    let (app, calls) = counted_app(Application::new());
    let server = TestServer::start(app).await;
    let cases: &[&[u8]] = &[
        b"GARBAGE\r\n\r\n",
        b"THIS IS NOT HTTP\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /ws\r\n\r\n",
        b"GET /ws HTTP/9.9\r\n\r\n",
        b"GET ws HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nNoColon\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"G\x01T /ws HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        b"GET /w s HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    for case in cases {
        let response = refusal(server.addr(), case).await;
        assert_eq!(
            response.status,
            400,
            "{:?} -> {response:?}",
            String::from_utf8_lossy(case)
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    server.shutdown().await;
}

/// A connection that sends nothing at all is dropped after the head timeout
/// too (and an idle keep-alive connection the same way).
#[tokio::test]
async fn silent_connection_is_dropped() {
    let (app, _calls) =
        counted_app(Application::new().request_head_timeout(Duration::from_millis(200)));
    let server = TestServer::start(app).await;
    let mut raw = open(server.addr()).await;
    let started = Instant::now();
    assert_eq!(
        read_to_eof(&mut raw).await,
        b"",
        "dropped without a response"
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
    server.shutdown().await;
}
