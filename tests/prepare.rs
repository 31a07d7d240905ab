//! `WebSocketHandler::prepare`: the async hook before the upgrade, which
//! accepts (keeping a user for the connection) or refuses with any HTTP
//! response.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{RawResponse, Upgrade};
use squall::http::{header, Request, Response, StatusCode};
use squall::testing::{next_text, within, TestServer};
use squall::{
    Application, Bytes, ConnectOptions, CurrentUser, Message, RequestExt, WebSocket,
    WebSocketHandler,
};
use tokio::sync::Notify;

#[derive(Clone, Debug, PartialEq)]
struct User {
    name: String,
}

/// What the tests observe from the server side.
#[derive(Default)]
struct Probe {
    opens: AtomicUsize,
    closes: AtomicUsize,
    prepares: AtomicUsize,
    /// Signalled when a `slow` prepare has started waiting.
    slow_entered: Notify,
    /// Released by the test to let a `slow` prepare finish.
    slow_release: Notify,
}

/// A handler whose `prepare` does what the `mode` query argument says.
struct Gate {
    probe: Arc<Probe>,
    /// The user as kept in `self`.
    user: Option<User>,
}

fn refusal(
    status: StatusCode,
    headers: &[(header::HeaderName, &str)],
    body: &str,
) -> Response<Bytes> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(name, *value);
    }
    builder.body(Bytes::from(body.to_owned())).unwrap()
}

impl WebSocketHandler for Gate {
    async fn prepare(&mut self, request: &mut Request<()>) -> Result<(), Response<Bytes>> {
        self.probe.prepares.fetch_add(1, Ordering::SeqCst);
        let mode = request
            .query_argument("mode")
            .unwrap_or_default()
            .into_owned();
        match mode.as_str() {
            "401" => {
                return Err(refusal(
                    StatusCode::UNAUTHORIZED,
                    &[(header::WWW_AUTHENTICATE, "Bearer realm=\"squall\"")],
                    "who are you?",
                ))
            }
            "403" => return Err(refusal(StatusCode::FORBIDDEN, &[], "not you")),
            "302" => {
                return Err(refusal(
                    StatusCode::FOUND,
                    &[(header::LOCATION, "/login?next=%2Fws")],
                    "",
                ))
            }
            "slow" => {
                self.probe.slow_entered.notify_one();
                self.probe.slow_release.notified().await;
            }
            "forever" => std::future::pending::<()>().await,
            "panic" => panic!("prepare panicked on purpose"),
            _ => {}
        }
        // Accepted: the user comes from a cookie, the path, or the query.
        let name = request
            .cookie("user")
            .map(str::to_owned)
            .or_else(|| request.path_param("name").map(str::to_owned))
            .unwrap_or_else(|| "anonymous".to_owned());
        assert!(request.remote_addr().is_some_and(|a| a.ip().is_loopback()));
        let user = User { name };
        self.user = Some(user.clone());
        request.extensions_mut().insert(CurrentUser(user));
        Ok(())
    }

    fn check_origin(&self, _origin: &str, _request: &Request<()>) -> bool {
        false
    }

    async fn open(&mut self, ws: &WebSocket) {
        self.probe.opens.fetch_add(1, Ordering::SeqCst);
        let from_self = self.user.as_ref().map_or("-", |u| u.name.as_str());
        let from_ws = ws.current_user::<User>().map_or("-", |u| u.name.as_str());
        ws.write_message(format!("self={from_self} ws={from_ws}"))
            .await
            .ok();
    }

    async fn on_message(&mut self, ws: &WebSocket, message: Message) {
        ws.write_message(message).await.ok();
    }

    async fn on_close(&mut self, _ws: &WebSocket) {
        self.probe.closes.fetch_add(1, Ordering::SeqCst);
    }
}

fn app(probe: &Arc<Probe>) -> Application {
    let for_ws = probe.clone();
    let for_rooms = probe.clone();
    Application::new()
        .websocket("/ws", move || Gate {
            probe: for_ws.clone(),
            user: None,
        })
        .websocket("/rooms/{name}", move || Gate {
            probe: for_rooms.clone(),
            user: None,
        })
}

async fn start() -> (TestServer, Arc<Probe>) {
    let probe = Arc::new(Probe::default());
    (TestServer::start(app(&probe)).await, probe)
}

/// Sends an upgrade request by hand (with an `Origin` if given) and returns
/// the refusal, after which the server must close the connection.
async fn refused_upgrade(addr: SocketAddr, target: &str, origin: Option<&str>) -> RawResponse {
    let mut upgrade = Upgrade::new(addr, target);
    if let Some(origin) = origin {
        upgrade = upgrade.header("Origin", origin);
    }
    common::refusal(addr, &upgrade.to_bytes()).await
}

/// The status code and reason phrase.
fn status_line(response: &RawResponse) -> (u16, &str) {
    (response.status, response.reason.as_str())
}

async fn refused_status(server: &TestServer, target: &str) -> StatusCode {
    let error = server
        .try_connect(target, ConnectOptions::new())
        .await
        .expect_err("the upgrade should be refused");
    error.status().expect("an HTTP refusal")
}

#[tokio::test]
async fn accepted_user_is_kept_in_self_and_readable_from_ws() {
    let (server, probe) = start().await;

    let mut client = server
        .try_connect(
            "/ws",
            ConnectOptions::new().header("Cookie", "a=1; user=ada"),
        )
        .await
        .unwrap();
    assert_eq!(next_text(&mut client).await, "self=ada ws=ada");
    client.send("ping?").await.unwrap();
    assert_eq!(next_text(&mut client).await, "ping?");
    client.close(1000, "").await;

    // Path parameters are routed before prepare runs.
    let mut client = server.connect("/rooms/grace").await;
    assert_eq!(next_text(&mut client).await, "self=grace ws=grace");
    client.close(1000, "").await;

    server.shutdown().await;
    assert_eq!(probe.opens.load(Ordering::SeqCst), 2);
    assert_eq!(probe.closes.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn refused_with_401_and_www_authenticate() {
    let (server, probe) = start().await;

    let response = refused_upgrade(server.addr(), "/ws?mode=401", None).await;
    assert_eq!(status_line(&response), (401, "Unauthorized"));
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer realm=\"squall\"")
    );
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(response.header("content-length"), Some("12"));
    assert_eq!(response.body_text(), "who are you?");

    assert_eq!(
        refused_status(&server, "/ws?mode=401").await,
        StatusCode::UNAUTHORIZED
    );
    server.shutdown().await;
    assert_eq!(probe.opens.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn refused_with_403() {
    let (server, probe) = start().await;
    let response = refused_upgrade(server.addr(), "/ws?mode=403", None).await;
    assert_eq!(status_line(&response), (403, "Forbidden"));
    assert_eq!(response.body_text(), "not you");
    assert_eq!(
        refused_status(&server, "/ws?mode=403").await,
        StatusCode::FORBIDDEN
    );
    server.shutdown().await;
    assert_eq!(probe.opens.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn refused_with_302_to_login() {
    let (server, probe) = start().await;
    let response = refused_upgrade(server.addr(), "/ws?mode=302", None).await;
    assert_eq!(status_line(&response), (302, "Found"));
    assert_eq!(response.header("location"), Some("/login?next=%2Fws"));
    assert_eq!(response.header("content-length"), Some("0"));
    assert_eq!(
        refused_status(&server, "/ws?mode=302").await,
        StatusCode::FOUND
    );
    server.shutdown().await;
    assert_eq!(probe.opens.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn slow_prepare_does_not_delay_other_connections() {
    let (server, probe) = start().await;

    let url = server.url("/ws?mode=slow");
    let slow = tokio::spawn(async move { squall::connect(&url).await });
    within("the slow prepare to start", probe.slow_entered.notified()).await;

    // While that prepare waits, another connection does its whole
    // handshake and an echo.
    let mut fast = server.connect("/ws").await;
    assert_eq!(next_text(&mut fast).await, "self=anonymous ws=anonymous");
    fast.send("fast").await.unwrap();
    assert_eq!(next_text(&mut fast).await, "fast");
    assert!(!slow.is_finished(), "the slow handshake finished early");

    probe.slow_release.notify_one();
    let mut slow = within("the slow handshake", slow).await.unwrap().unwrap();
    assert_eq!(next_text(&mut slow).await, "self=anonymous ws=anonymous");
    slow.send("slow").await.unwrap();
    assert_eq!(next_text(&mut slow).await, "slow");

    fast.close(1000, "").await;
    slow.close(1000, "").await;
    server.shutdown().await;
    assert_eq!(probe.opens.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn prepare_timeout_answers_503() {
    let probe = Arc::new(Probe::default());
    let server = TestServer::start(app(&probe).prepare_timeout(Duration::from_millis(100))).await;

    let started = tokio::time::Instant::now();
    let response = refused_upgrade(server.addr(), "/ws?mode=forever", None).await;
    assert_eq!(status_line(&response), (503, "Service Unavailable"));
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(
        refused_status(&server, "/ws?mode=forever").await,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // A prepare that answers in time is unaffected by the limit.
    let mut client = server.connect("/ws").await;
    assert_eq!(next_text(&mut client).await, "self=anonymous ws=anonymous");
    client.close(1000, "").await;

    server.shutdown().await;
    assert_eq!(probe.opens.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn prepare_panic_answers_500() {
    let (server, probe) = start().await;
    assert_eq!(
        refused_status(&server, "/ws?mode=panic").await,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    // The server goes on.
    let mut client = server.connect("/ws").await;
    assert_eq!(next_text(&mut client).await, "self=anonymous ws=anonymous");
    client.close(1000, "").await;
    server.shutdown().await;
    assert_eq!(probe.opens.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn prepare_runs_before_check_origin() {
    let (server, probe) = start().await;
    let cross_origin = Some("http://evil.example");

    // Refused by prepare: prepare's status, not check_origin's 403.
    let response = refused_upgrade(server.addr(), "/ws?mode=401", cross_origin).await;
    assert_eq!(status_line(&response), (401, "Unauthorized"));
    assert!(response.header("www-authenticate").is_some());

    // Accepted by prepare: check_origin (false here) still applies after it.
    let response = refused_upgrade(server.addr(), "/ws", cross_origin).await;
    assert_eq!(status_line(&response), (403, "Forbidden"));
    assert_eq!(response.body_text(), "Cross origin websockets not allowed");

    server.shutdown().await;
    assert_eq!(probe.prepares.load(Ordering::SeqCst), 2);
    assert_eq!(probe.opens.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn refused_handler_never_opens_or_closes() {
    let (server, probe) = start().await;
    for mode in ["401", "403", "302", "panic"] {
        refused_status(&server, &format!("/ws?mode={mode}")).await;
    }
    server.shutdown().await;
    assert_eq!(probe.prepares.load(Ordering::SeqCst), 4);
    assert_eq!(probe.opens.load(Ordering::SeqCst), 0);
    assert_eq!(probe.closes.load(Ordering::SeqCst), 0);
}
