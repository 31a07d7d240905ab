//! What every baseline echo server shares: `HOST:PORT` from the command line
//! (default 127.0.0.1:9001), one tokio current_thread runtime (the benchmark
//! pins the server to one core), and an accept loop that spawns `serve` per
//! connection with Nagle off, backing off briefly on accept errors (EMFILE
//! and friends) instead of spinning.

use std::future::Future;

use tokio::net::{TcpListener, TcpStream};

pub fn serve_forever<F, Fut>(name: &str, serve: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_string());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::bind(&addr).await.expect("bind");
        eprintln!("{name} listening on {addr}");
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::task::spawn_local(serve(stream));
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            }
        }
    });
}
