//! squall's pure echo server for benchmarks and the Autobahn suite: every
//! text and binary message comes back unchanged, on every path, with default
//! settings otherwise.
//!
//! ```text
//! cargo run --release --example bench_echo -- 127.0.0.1:9001
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
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(
            Application::new()
                .websocket("/", || Echo)
                .websocket("/{*path}", || Echo)
                .listen(addr),
        )
}
