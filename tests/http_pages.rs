//! SPEC §4: pages, GET handlers with path parameters, HEAD, 405, keep-alive
//! and `Connection: close`, all on raw bytes. Hostile request heads
//! (malformed, oversized, slow) are in `hardening_handshake.rs`.

mod common;

use common::{open, read_response, read_to_eof, request};
use squall::testing::TestServer;
use squall::{Application, RequestExt};
use tokio::io::AsyncWriteExt;

const HTML: &str = "<!doctype html><title>squall</title><p>hello</p>";

async fn start() -> TestServer {
    let app = Application::new().page("/", HTML).get(
        "/hello/{name}",
        |request: http::Request<()>| async move {
            let name = request.path_param("name").unwrap_or("nobody").to_owned();
            http::Response::new(format!("hello {name}"))
        },
    );
    TestServer::start(app).await
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn page_serves_200_text_html_with_content_length() {
    let server = start().await;
    let (response, _) = request(server.addr(), &get("/")).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(
        response.header("content-length"),
        Some(HTML.len().to_string().as_str())
    );
    assert_eq!(response.body_text(), HTML);
}

#[tokio::test]
async fn head_returns_the_headers_without_a_body() {
    let server = start().await;
    let mut raw = open(server.addr()).await;
    raw.write_all(b"HEAD / HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let head = read_response(&mut raw, true).await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(
        head.header("content-length"),
        Some(HTML.len().to_string().as_str())
    );
    // No body follows: the very next bytes are the next response's.
    raw.write_all(&get("/hello/next")).await.unwrap();
    let next = read_response(&mut raw, false).await;
    assert_eq!(next.status, 200);
    assert_eq!(next.body_text(), "hello next");
}

#[tokio::test]
async fn post_to_a_page_is_405_with_allow() {
    let server = start().await;
    let (response, _) = request(
        server.addr(),
        b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn get_handler_with_path_parameter() {
    let server = start().await;
    let (response, _) = request(server.addr(), &get("/hello/ada%20lovelace")).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body_text(), "hello ada lovelace");
}

#[tokio::test]
async fn unknown_path_is_404() {
    let server = start().await;
    let (response, _) = request(server.addr(), &get("/nowhere")).await;
    assert_eq!(response.status, 404);
}

#[tokio::test]
async fn keep_alive_serves_two_requests_on_one_connection() {
    let server = start().await;
    let (first, mut raw) = request(server.addr(), &get("/hello/one")).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("connection"), None);
    assert_eq!(first.body_text(), "hello one");
    raw.write_all(&get("/hello/two")).await.unwrap();
    let second = read_response(&mut raw, false).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.body_text(), "hello two");
}

#[tokio::test]
async fn connection_close_is_honoured() {
    let server = start().await;
    let (response, mut raw) = request(
        server.addr(),
        b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(read_to_eof(&mut raw).await, b"");
}
