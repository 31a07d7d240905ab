//! squall's pure echo server for benchmarks and the Autobahn suite: every
//! text and binary message comes back unchanged, on every path, with default
//! settings otherwise.
//!
//! ```text
//! cargo run --release --example bench_echo -- 127.0.0.1:9001 [--max-message-size BYTES]
//!     [--page-bytes BYTES] [--read-buffer-size BYTES] [--deflate]
//! ```
//!
//! `--deflate` accepts permessage-deflate (default settings) for Autobahn's
//! 12.* and 13.* cases and the compression benchmarks. One tokio thread, as
//! the benchmark pins the server to one core; `BENCH_WORKERS=N` (N > 1) runs
//! a multi-thread runtime of N workers, for the matrix's many-core run.

use squall::{Application, CompressionOptions, Message, WebSocket, WebSocketHandler};

#[derive(Clone, Copy)]
struct Echo {
    deflate: bool,
}

impl WebSocketHandler for Echo {
    fn compression_options(&self) -> Option<CompressionOptions> {
        self.deflate.then(CompressionOptions::new)
    }

    async fn on_message(&mut self, ws: &WebSocket, message: Message) {
        ws.write_message(message).await.ok();
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let mut app = Application::new();
    let mut echo = Echo { deflate: false };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--deflate" => echo.deflate = true,
            "--max-message-size" => match args.next().and_then(|v| v.parse().ok()) {
                Some(bytes) => app = app.websocket_max_message_size(bytes),
                None => usage(),
            },
            // A plain page of BYTES at /page, for the soak's clients that
            // stop reading responses.
            "--page-bytes" => match args.next().and_then(|v| v.parse().ok()) {
                Some(bytes) => app = app.page("/page", vec![b'x'; bytes]),
                None => usage(),
            },
            "--read-buffer-size" => match args.next().and_then(|v| v.parse().ok()) {
                Some(bytes) => app = app.websocket_read_buffer_size(bytes),
                None => usage(),
            },
            _ => usage(),
        }
    }
    let app = app
        .websocket("/", move || echo)
        .websocket("/{*path}", move || echo);
    let workers = std::env::var("BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 1);
    let runtime = match workers {
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    };
    runtime.block_on(app.listen(addr))
}

fn usage() -> ! {
    eprintln!(
        "usage: bench_echo HOST:PORT [--max-message-size BYTES] [--page-bytes BYTES] [--read-buffer-size BYTES] [--deflate]"
    );
    std::process::exit(2);
}
