//! Clients that stop reading HTTP responses (issue 15): every response write
//! of the HTTP/1.1 front is bounded by `response_write_timeout`, and no
//! further pipelined request is read while a response is unsent, so such a
//! client is dropped and its connection slot freed instead of held for ever.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{read_to_eof, request, Raw};
use squall::testing::{within, TestServer};
use squall::{Application, Message, WebSocket, WebSocketHandler};
use tokio::io::{AsyncWriteExt, BufReader};

/// Large enough that a few responses fill the kernel's buffers.
const BODY: usize = 256 * 1024;
const PIPELINED: usize = 2_000;
const WRITE_TIMEOUT: Duration = Duration::from_millis(300);

/// A client socket with a small receive buffer that will never be read.
async fn non_reading_client(addr: SocketAddr) -> Raw {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    BufReader::new(within("connect", socket.connect(addr)).await.unwrap())
}

/// GETs `/` on fresh connections until one is served (the single slot is
/// free again): 503s are retried, anything else fails the test.
async fn served_once_a_slot_is_free(addr: SocketAddr) {
    within("the stalled client's slot to be freed", async {
        loop {
            let (response, _) = request(addr, b"GET /small HTTP/1.1\r\nHost: t\r\n\r\n").await;
            match response.status {
                200 => return,
                503 => tokio::time::sleep(Duration::from_millis(20)).await,
                other => panic!("unexpected status {other}"),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_client_that_stops_reading_pages_is_dropped_and_its_slot_freed() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = Application::new()
        .get("/", move |_request: http::Request<()>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { http::Response::new(vec![b'x'; BODY]) }
        })
        .page("/small", "ok")
        .max_connections(1)
        .response_write_timeout(WRITE_TIMEOUT);
    let server = TestServer::start(app).await;

    let stalled = non_reading_client(server.addr()).await;
    let requests = "GET / HTTP/1.1\r\nHost: t\r\n\r\n".repeat(PIPELINED);
    // Written from a task: the server stops reading too, so these writes may
    // never finish.
    let (mut read_half, mut write_half) = stalled.into_inner().into_split();
    let writer = tokio::spawn(async move {
        let _ = write_half.write_all(requests.as_bytes()).await;
        write_half
    });

    // The only slot is held until the stalled write times out.
    served_once_a_slot_is_free(server.addr()).await;

    // The server stopped reading requests once a response could not be
    // written: far fewer handler calls than requests sent.
    let answered = calls.load(Ordering::SeqCst);
    assert!(
        answered < PIPELINED / 10,
        "{answered} of {PIPELINED} pipelined requests were read"
    );
    // And the stalled connection is over: reading now finds its end.
    let got = read_to_eof(&mut read_half).await;
    assert!(
        got.len() < answered * (BODY + 200),
        "more bytes than responses"
    );
    writer.abort();
}

/// Refuses every upgrade with a 16 MiB body: a client that does not read
/// stalls the write of this error response.
struct HugeRefusal;

impl WebSocketHandler for HugeRefusal {
    async fn prepare(
        &mut self,
        _request: &mut http::Request<()>,
    ) -> Result<(), http::Response<bytes::Bytes>> {
        let mut response = http::Response::new(bytes::Bytes::from(vec![b'n'; 16 << 20]));
        *response.status_mut() = http::StatusCode::UNAUTHORIZED;
        Err(response)
    }
    async fn on_message(&mut self, _ws: &WebSocket, _msg: Message) {}
}

#[tokio::test]
async fn a_stalled_handshake_error_response_is_bounded_by_the_write_timeout() {
    let app = Application::new()
        .websocket("/ws", || HugeRefusal)
        .page("/small", "ok")
        .max_connections(1)
        .response_write_timeout(WRITE_TIMEOUT);
    let server = TestServer::start(app).await;
    let mut stalled = non_reading_client(server.addr()).await;
    let upgrade = common::Upgrade::new(server.addr(), "/ws").to_bytes();
    stalled.get_mut().write_all(&upgrade).await.unwrap();

    served_once_a_slot_is_free(server.addr()).await;
    let got = read_to_eof(&mut stalled).await;
    assert!(got.starts_with(b"HTTP/1.1 401"));
    assert!(got.len() < 16 << 20, "the whole refusal was written");
}
