//! squall's pure echo server for benchmarks and the Autobahn suite: every
//! text and binary message comes back unchanged, on every path, with default
//! settings otherwise.
//!
//! ```text
//! cargo run --release --example bench_echo -- 127.0.0.1:9001 [--max-message-size BYTES] [--page-bytes BYTES]
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
    let mut app = Application::new()
        .websocket("/", || Echo)
        .websocket("/{*path}", || Echo);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--max-message-size", Some(bytes)) => app = app.websocket_max_message_size(bytes),
            // A plain page of BYTES at /page, for the soak's clients that
            // stop reading responses.
            ("--page-bytes", Some(bytes)) => app = app.page("/page", vec![b'x'; bytes]),
            _ => {
                eprintln!(
                    "usage: bench_echo HOST:PORT [--max-message-size BYTES] [--page-bytes BYTES]"
                );
                std::process::exit(2);
            }
        }
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(app.listen(addr))
}
