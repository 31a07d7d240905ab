//! The classic Tornado WebSocket demo: a page at `/` with buttons to connect,
//! send "hello world" and close, and a socket at `/socket/` that answers
//! `You said: <message>` (binary messages come back unchanged).
//!
//! ```text
//! cargo run --example echo              # http://127.0.0.1:8888/
//! cargo run --example echo -- 0.0.0.0:9000
//! cargo run --example echo -- 127.0.0.1:8888 --deflate
//! ```
//!
//! With `--deflate` the handler accepts permessage-deflate (Tornado's
//! `get_compression_options`); the page shows what the browser agreed to
//! (`WebSocket.extensions`).

use std::time::Duration;

use squall::prelude::*;

struct EchoWebSocket {
    deflate: bool,
}

impl WebSocketHandler for EchoWebSocket {
    fn compression_options(&self) -> Option<CompressionOptions> {
        self.deflate.then(CompressionOptions::new)
    }

    async fn open(&mut self, ws: &WebSocket) {
        tracing::info!(remote = %ws.remote_addr(), "WebSocket opened");
    }

    async fn on_message(&mut self, ws: &WebSocket, message: Message) {
        let reply = match message {
            Message::Text(text) => Message::from(format!("You said: {text}")),
            binary @ Message::Binary(_) => binary,
        };
        ws.write_message(reply).await.ok();
    }

    async fn on_pong(&mut self, _ws: &WebSocket, data: Bytes) {
        tracing::info!(?data, "pong");
    }

    async fn on_close(&mut self, ws: &WebSocket) {
        tracing::info!(code = ?ws.close_code(), reason = ?ws.close_reason(), "WebSocket closed");
    }

    fn check_origin(&self, _origin: &str, _request: &http::Request<()>) -> bool {
        true
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let deflate = args.iter().any(|a| a == "--deflate");
    let addr = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:8888".to_owned());
    Application::new()
        .page("/", include_str!("echo/web.html"))
        .websocket("/socket/", move || EchoWebSocket { deflate })
        .websocket_ping_interval(Duration::from_secs(1))
        .listen(addr)
        .await
}
