//! Baseline: the naive hand-written tokio-tungstenite echo server.
//!
//! Every received text/binary message is answered with `SinkExt::send`, which
//! writes *and flushes* the reply, i.e. one write syscall per message. This is
//! the way most users write a tokio-tungstenite echo loop.
//!
//! Runtime: tokio current_thread (the benchmark pins the server to one core),
//! same as every other server of the benchmark matrix.
//!
//! Usage: bench_tt_echo HOST:PORT

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;

#[path = "common.rs"]
mod common;

/// One connection: `send` (write and flush) per received message.
pub async fn serve(stream: TcpStream) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let mut ws = tokio_tungstenite::accept_async(stream).await?;
    while let Some(msg) = ws.next().await {
        let msg = msg?;
        if msg.is_text() || msg.is_binary() {
            ws.send(msg).await?;
        }
        // Ping/pong/close are answered by tungstenite itself; after a close
        // the stream ends and the loop falls through.
    }
    Ok(())
}

#[allow(dead_code)] // not used where benches/alloc_count.rs includes this file
fn main() {
    common::serve_forever("bench_tt_echo", |stream| async move {
        let _ = serve(stream).await;
    });
}
