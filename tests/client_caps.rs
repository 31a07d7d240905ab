//! Caps per client address (`max_connections_per_ip`: 429 with
//! `Retry-After`), counted right however a connection ends; the opt-in
//! trusted proxy (`trusted_proxies`: `X-Forwarded-For` / `Forwarded`) as
//! `remote_addr()`, the access line and the cap see it; and the span every
//! connection runs in (id, route, client), which a handler's events carry.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::{assert_accepted, Frame, Upgrade, TEXT};
use squall::testing::{within, TestServer};
use squall::{Application, ConnectOptions, Message, WebSocket, WebSocketHandler};
use tokio::io::AsyncWriteExt;

/// Tells the client its address; `panic` panics, `close` closes with 4000.
struct Who;

impl WebSocketHandler for Who {
    async fn open(&mut self, ws: &WebSocket) {
        tracing::info!("hello from the handler");
        ws.write_message(ws.remote_addr().to_string()).await.ok();
    }

    async fn on_message(&mut self, ws: &WebSocket, message: Message) {
        match message.as_text() {
            Some("panic") => panic!("boom"),
            Some("close") => ws.close(4000, "bye"),
            _ => {}
        }
    }

    async fn prepare(
        &mut self,
        request: &mut http::Request<()>,
    ) -> Result<(), http::Response<squall::Bytes>> {
        if request.uri().query() == Some("refuse") {
            return Err(http::Response::builder()
                .status(401)
                .body(squall::Bytes::new())
                .unwrap());
        }
        Ok(())
    }
}

fn app() -> Application {
    Application::new().websocket("/who", || Who)
}

/// Waits until a new connection from this address is accepted again (its
/// slot freed), and returns it.
async fn reconnect(server: &TestServer) -> squall::Client {
    within("the address's slot to be freed", async {
        loop {
            match server.try_connect("/who", ConnectOptions::new()).await {
                Ok(client) => return client,
                Err(error) if error.status().is_some_and(|s| s.as_u16() == 429) => {
                    tokio::task::yield_now().await
                }
                Err(error) => panic!("unexpected refusal: {error}"),
            }
        }
    })
    .await
}

/// With one connection open, a second from the same address gets 429.
async fn assert_cap_full(server: &TestServer) {
    let (response, _) = Upgrade::new(server.addr(), "/who")
        .send(server.addr())
        .await;
    assert_eq!(response.status, 429, "{response:?}");
    assert_eq!(response.header("retry-after"), Some("5"));
}

#[tokio::test]
async fn over_the_cap_per_address_answers_429_with_retry_after() {
    let server = TestServer::start(app().max_connections_per_ip(2)).await;
    let _first = server.connect("/who").await;
    let _second = server.connect("/who").await;
    assert_cap_full(&server).await;
    // Plain pages are not counted.
    let (page, _) =
        common::request(server.addr(), b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(page.status, 404);
}

#[tokio::test]
async fn the_slot_is_given_back_however_the_connection_ends() {
    let server = TestServer::start(app().max_connections_per_ip(1)).await;

    // A clean close from the client.
    let mut client = server.connect("/who").await;
    assert_cap_full(&server).await;
    client.close(1000, "").await;

    // The client vanishes without a close handshake.
    let client = reconnect(&server).await;
    assert_cap_full(&server).await;
    drop(client);

    // The handler panics (1011).
    let mut client = reconnect(&server).await;
    assert_cap_full(&server).await;
    client.send("panic").await.unwrap();
    while client.recv().await.is_some() {}
    assert_eq!(client.close_code(), Some(1011));

    // The handler closes (4000).
    let mut client = reconnect(&server).await;
    client.send("close").await.unwrap();
    while client.recv().await.is_some() {}
    assert_eq!(client.close_code(), Some(4000));

    // `prepare` refuses: the slot taken for the handshake is given back.
    let client = reconnect(&server).await;
    drop(client);
    let mut refused = None;
    within("a refusal from prepare", async {
        loop {
            let (response, _) = Upgrade::new(server.addr(), "/who?refuse")
                .send(server.addr())
                .await;
            if response.status != 429 {
                refused = Some(response.status);
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(refused, Some(401));

    // A raw client that dies mid-frame.
    let client = reconnect(&server).await;
    drop(client);
    let mut raw = within("a raw upgrade", async {
        loop {
            let (response, raw) = Upgrade::new(server.addr(), "/who")
                .send(server.addr())
                .await;
            if response.status == 101 {
                assert_accepted(&response);
                return raw;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    let frame = Frame::new(TEXT).with(b"half a frame");
    raw.write_all(&frame[..5]).await.unwrap();
    drop(raw);

    // After all that the count is exactly right: one connection fits, and
    // a second does not.
    let _last = reconnect(&server).await;
    assert_cap_full(&server).await;
}

async fn first_text(client: &mut squall::Client) -> String {
    let message = within("a message", client.recv()).await.expect("a message");
    message.as_text().expect("text").to_owned()
}

#[tokio::test]
async fn forwarded_addresses_are_ignored_unless_the_proxy_is_trusted() {
    let server = TestServer::start(app()).await;
    let options = ConnectOptions::new().header("X-Forwarded-For", "203.0.113.7");
    let mut client = server.try_connect("/who", options).await.unwrap();
    let seen = first_text(&mut client).await;
    assert!(seen.starts_with("127.0.0.1:"), "{seen}");
}

#[tokio::test]
async fn a_trusted_proxy_sets_remote_addr_the_access_line_the_span_and_the_cap() {
    let log = common::log();
    let server = TestServer::start(
        app()
            .trusted_proxies([IpAddr::V4(Ipv4Addr::LOCALHOST)])
            .max_connections_per_ip(1),
    )
    .await;

    let via = |client: &str| ConnectOptions::new().header("X-Forwarded-For", client);
    let mut first = server
        .try_connect("/who", via("203.0.113.7"))
        .await
        .unwrap();
    assert_eq!(first_text(&mut first).await, "203.0.113.7:0");
    let forwarded = ConnectOptions::new().header("Forwarded", "for=\"[2001:db8::9]:4711\"");
    let mut second = server.try_connect("/who", forwarded).await.unwrap();
    assert_eq!(first_text(&mut second).await, "[2001:db8::9]:4711");

    // The cap counts the forwarded address, not the proxy's.
    let refused = server
        .try_connect("/who", via("203.0.113.7"))
        .await
        .expect_err("over the cap");
    assert_eq!(refused.status().map(|s| s.as_u16()), Some(429));

    let text = log.text();
    // The access line keeps Tornado's format, with the client's address.
    assert!(
        text.contains("101 GET /who (203.0.113.7) "),
        "access line with the forwarded address:\n{text}"
    );
    assert!(text.contains("429 GET /who (203.0.113.7) "), "{text}");
    // The handler's own event carries the connection's span.
    let line = text
        .lines()
        .find(|line| line.contains("hello from the handler") && line.contains("203.0.113.7"))
        .unwrap_or_else(|| panic!("the handler's event with its span:\n{text}"));
    assert!(line.contains("websocket{id="), "{line}");
    assert!(line.contains("route=\"/who\""), "{line}");
    assert!(line.contains("client=203.0.113.7:0"), "{line}");
}
