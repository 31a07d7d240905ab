//! Tornado's chat demo in squall: a page with a message box and a shared
//! log, one group per room (`/chat/{room}`), a member list (presence), and
//! recovery of missed messages after a reload or a dropped network (each
//! room keeps its last 200 messages: history).
//!
//! ```text
//! cargo run --example chat                                  # in-process groups
//! cargo run --example chat --features redis -- --redis redis://127.0.0.1:6379/
//! cargo run --example chat -- --addr 127.0.0.1:8889          # another port
//! ```
//!
//! Then open <http://127.0.0.1:8888/>. With `--redis`, start several
//! processes on different ports against the same Redis: people in the same
//! room talk across processes, see each other in the member list, and a
//! page reconnecting to any process recovers what it missed.
//!
//! The page connects to `/chat/{room}?name=…&since=OFFSET` through
//! `squall-history.js` (served at `/squall-history.js`), which keeps the
//! last offset it saw. Messages from the server, all JSON text:
//! `{"type":"welcome","name":…,"room":…}` and
//! `{"type":"members","members":[{"user","meta","connections"}…]}` (to the
//! newcomer), `{"type":"presence","joins":[…],"leaves":[…]}` (diffs),
//! squall's `squall.recovery` status, and the room's messages in squall's
//! history envelope, whose `data` is `{"type":"message","from":…,"body":…}`.
//! The page sends `{"body":"…"}` (or plain text).

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::json;
use squall::prelude::*;
use squall::{History, Presence};

/// The longest message body relayed, in characters.
const MAX_BODY: usize = 2000;
/// The longest display name, in characters.
const MAX_NAME: usize = 32;
/// How many messages each room keeps for clients that reconnect.
const HISTORY: usize = 200;

/// One chat participant.
struct ChatSocket {
    guests: Arc<AtomicUsize>,
    name: String,
    room: String,
}

impl WebSocketHandler for ChatSocket {
    async fn open(&mut self, ws: &WebSocket) {
        self.room = ws.path_param("room").unwrap_or("lobby").to_owned();
        self.name = match ws.query_argument("name") {
            Some(name) if !name.trim().is_empty() => name.trim().chars().take(MAX_NAME).collect(),
            // Random-looking, so guests of different processes differ.
            _ => {
                let n = self.guests.fetch_add(1, Ordering::Relaxed) as u64;
                let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
                hasher.write_u64(n);
                format!("guest-{:04x}", hasher.finish() & 0xffff)
            }
        };
        let since = ws.query_argument("since").map(|since| since.into_owned());
        // Sends what this page missed since its last offset (if any), then
        // joins: live messages follow, none twice.
        if ws
            .join_with_history(&self.room, since.as_deref())
            .await
            .is_err()
        {
            return;
        }
        ws.set_presence(
            &self.room,
            Presence::new(&self.name, json!({ "name": self.name })),
        );
        // Watch before listing, so no change after the listing is missed
        // (one made between the two may be counted twice).
        let mut watch = ws.watch_presence(&self.room);
        ws.write_json(&json!({"type": "welcome", "name": self.name, "room": self.room}))
            .await
            .ok();
        match ws.members(&self.room).await {
            Ok(members) => {
                ws.write_json(&json!({"type": "members", "members": members}))
                    .await
                    .ok();
            }
            Err(error) => tracing::warn!(%error, "member list unavailable"),
        }
        // Presence diffs to the page until the connection closes.
        let sender = ws.sender();
        tokio::spawn(async move {
            loop {
                let diff = match watch.next().await {
                    Ok(diff) => diff,
                    Err(squall::PresenceError::Lagged(_)) => continue,
                    Err(_) => break,
                };
                let diff = json!({"type": "presence", "joins": diff.joins, "leaves": diff.leaves});
                if sender.send(diff).is_err() {
                    break;
                }
            }
        });
        tracing::info!(room = %self.room, name = %self.name, "joined");
    }

    async fn on_message(&mut self, ws: &WebSocket, message: Message) {
        let Some(text) = message.as_text() else {
            return;
        };
        // The page sends {"body": "..."}; plain text is accepted too.
        let body = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(value) => match value.get("body").and_then(|b| b.as_str()) {
                Some(body) => body.to_owned(),
                None => return,
            },
            Err(_) => text.to_owned(),
        };
        let body: String = body.chars().take(MAX_BODY).collect();
        if body.trim().is_empty() {
            return;
        }
        // Serialised once, shared by every member of the room (and, with
        // Redis, published once to the other processes).
        if let Ok(chat) =
            Message::json(&json!({"type": "message", "from": self.name, "body": body}))
        {
            ws.broadcast(&self.room, chat);
        }
    }

    async fn on_close(&mut self, _ws: &WebSocket) {
        // The connection has already left its groups: the others see it in
        // a presence diff.
        tracing::info!(room = %self.room, name = %self.name, "left");
    }
}

/// `--addr HOST:PORT` and `--redis URL`, by hand.
struct Args {
    addr: String,
    redis: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:8888".to_owned(),
        redis: None,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--addr" => args.addr = argv.next().ok_or("--addr needs HOST:PORT")?,
            "--redis" => args.redis = Some(argv.next().ok_or("--redis needs a URL")?),
            "-h" | "--help" => {
                return Err(
                    "usage: chat [--addr 127.0.0.1:8888] [--redis redis://127.0.0.1:6379/]".into(),
                )
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = parse_args()?;
    let guests = Arc::new(AtomicUsize::new(0));
    let page = include_str!("chat/index.html");
    let app = Application::new()
        .page("/", page)
        .page("/room/{room}", page)
        .get("/squall-history.js", |_request| async {
            let mut response = squall::http::Response::new(include_str!("chat/squall-history.js"));
            response.headers_mut().insert(
                squall::http::header::CONTENT_TYPE,
                squall::http::HeaderValue::from_static("text/javascript; charset=utf-8"),
            );
            response
        })
        .history("", History::last(HISTORY))
        .websocket("/chat/{room}", move || ChatSocket {
            guests: guests.clone(),
            name: String::new(),
            room: String::new(),
        });
    let app = match args.redis {
        Some(url) => with_redis(app, &url)?,
        None => app,
    };
    app.listen(args.addr).await?;
    Ok(())
}

#[cfg(feature = "redis")]
fn with_redis(app: Application, url: &str) -> Result<Application, Box<dyn std::error::Error>> {
    tracing::info!(%url, "groups shared through Redis");
    Ok(app.broker(squall::RedisBroker::new(url)?))
}

#[cfg(not(feature = "redis"))]
fn with_redis(_app: Application, _url: &str) -> Result<Application, Box<dyn std::error::Error>> {
    Err("--redis needs the `redis` feature: cargo run --example chat --features redis -- --redis URL".into())
}
