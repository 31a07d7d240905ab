//! squall inside an axum application, on one port: axum serves a JSON API
//! over a small in-memory store (axum state), squall serves the Tornado echo
//! demo (the page at `/`, the socket at `/socket/`), and the squall handler
//! records every message it echoes in the same store.
//!
//! ```text
//! cargo run --example axum --features axum     # http://127.0.0.1:8888/
//! curl http://127.0.0.1:8888/api/messages      # what the socket heard
//! curl -X POST -H 'content-type: application/json' \
//!      -d '{"text":"from curl"}' http://127.0.0.1:8888/api/messages
//! ```
//!
//! Ctrl-C stops axum and closes every squall socket with 1001.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::get;
use axum::Json;
use serde::{Deserialize, Serialize};
use squall::{Application, Message, WebSocket, WebSocketHandler};

/// The store both sides use: axum as its router state, squall through the
/// handler factory.
#[derive(Clone, Default)]
struct Store(Arc<Mutex<Vec<Note>>>);

#[derive(Clone, Serialize, Deserialize)]
struct Note {
    text: String,
}

impl Store {
    fn add(&self, text: String) -> usize {
        let mut notes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        notes.push(Note { text });
        notes.len()
    }

    fn all(&self) -> Vec<Note> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The echo socket; it keeps what it hears in the store.
struct EchoWebSocket {
    store: Store,
}

impl WebSocketHandler for EchoWebSocket {
    async fn on_message(&mut self, ws: &WebSocket, message: Message) {
        let reply = match message {
            Message::Text(text) => {
                let count = self.store.add(text.to_string());
                tracing::info!(count, "stored a message from the socket");
                Message::from(format!("You said: {text}"))
            }
            binary @ Message::Binary(_) => binary,
        };
        ws.write_message(reply).await.ok();
    }

    fn check_origin(&self, _origin: &str, _request: &squall::http::Request<()>) -> bool {
        true
    }
}

async fn list(State(store): State<Store>) -> Json<Vec<Note>> {
    Json(store.all())
}

async fn add(State(store): State<Store>, Json(note): Json<Note>) -> Json<usize> {
    Json(store.add(note.text))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8888".to_owned());

    let store = Store::default();
    let squall = Application::new()
        .page("/", include_str!("echo/web.html"))
        .websocket("/socket/", {
            let store = store.clone();
            move || EchoWebSocket {
                store: store.clone(),
            }
        })
        .websocket_ping_interval(std::time::Duration::from_secs(1));
    let handle = squall.handle();
    let squall = squall.into_service();

    let app = axum::Router::new()
        .route("/api/messages", get(list).post(add))
        .with_state(store)
        .route_service("/", squall.clone())
        .route_service("/socket/", squall);

    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("listening on {}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown({
        let handle = handle.clone();
        async move {
            squall::shutdown_signal().await;
            tracing::info!("shutting down");
            handle.shutdown();
        }
    })
    .await?;
    // axum is done with HTTP; wait for the sockets' close handshakes.
    handle.stopped().await;
    Ok(())
}
