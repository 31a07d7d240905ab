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
use tokio::net::{TcpListener, TcpStream};

async fn serve(stream: TcpStream) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let _ = stream.set_nodelay(true);
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

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_string());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await.expect("bind");
        eprintln!("bench_tt_echo listening on {addr}");
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(async move {
                        let _ = serve(stream).await;
                    });
                }
                // EMFILE and friends: back off briefly instead of spinning.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            }
        }
    });
}
