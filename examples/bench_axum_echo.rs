//! squall's pure echo server mounted in axum (feature `axum`): the same
//! engine as `bench_echo`, reached through `axum::serve` and
//! `Application::into_service`, for the benchmark matrix and the Autobahn
//! suite. Every text and binary message comes back unchanged, on every path.
//!
//! ```text
//! cargo run --release --features axum --example bench_axum_echo -- 127.0.0.1:9001 [--max-message-size BYTES]
//! ```
//!
//! One tokio thread, as the benchmark pins the server to one core.

use squall::{Application, Message, WebSocket, WebSocketHandler};

struct Echo;

impl WebSocketHandler for Echo {
    async fn on_message(&mut self, ws: &WebSocket, message: Message) {
        ws.write_message(message).await.ok();
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let mut squall = Application::new()
        .websocket("/", || Echo)
        .websocket("/{*path}", || Echo);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--max-message-size", Some(bytes)) => {
                squall = squall.websocket_max_message_size(bytes)
            }
            _ => {
                eprintln!("usage: bench_axum_echo HOST:PORT [--max-message-size BYTES]");
                std::process::exit(2);
            }
        }
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let app = axum::Router::new().fallback_service(squall.into_service());
            let listener = tokio::net::TcpListener::bind(addr).await?;
            axum::serve(listener, app).await
        })
}
