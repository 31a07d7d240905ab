//! Baseline: hand-written tokio-tungstenite echo server with write combining.
//!
//! Replies are queued with `SinkExt::feed` (no flush); the server keeps taking
//! messages that are already readable without waiting, and flushes once the
//! input would block (or after a bounded batch). Several replies then leave in
//! one write syscall.
//!
//! Runtime: tokio current_thread (the benchmark pins the server to one core),
//! same as every other server of the benchmark matrix.
//!
//! Usage: bench_tt_combined HOST:PORT

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Error, Message};

#[path = "common.rs"]
mod common;

/// Bounds on what is queued before a forced flush, so one busy client cannot
/// grow the write buffer without limit (and large messages are not piled up
/// in memory only to be copied around again).
const MAX_BATCH: usize = 256;
const MAX_BATCH_BYTES: usize = 64 * 1024;

async fn serve(stream: TcpStream) -> Result<(), Error> {
    let mut ws = tokio_tungstenite::accept_async(stream).await?;
    while let Some(first) = ws.next().await {
        let mut msg: Message = first?;
        let (mut queued, mut queued_bytes) = (0usize, 0usize);
        loop {
            if msg.is_text() || msg.is_binary() {
                queued_bytes += msg.len();
                ws.feed(msg).await?;
                queued += 1;
            }
            if queued >= MAX_BATCH || queued_bytes >= MAX_BATCH_BYTES {
                break;
            }
            // Take the next message only if it is ready right now.
            match ws.next().now_or_never() {
                Some(Some(next)) => msg = next?,
                Some(None) => {
                    ws.flush().await?;
                    return Ok(());
                }
                None => break,
            }
        }
        ws.flush().await?;
    }
    Ok(())
}

fn main() {
    common::serve_forever("bench_tt_combined", |stream| async move {
        let _ = serve(stream).await;
    });
}
