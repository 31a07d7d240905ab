//! What every baseline echo server shares: `HOST:PORT` from the command line
//! (default 127.0.0.1:9001), one tokio current_thread runtime (the benchmark
//! pins the server to one core; `BENCH_WORKERS=N` with N > 1 runs a
//! multi-thread runtime of N workers instead, for the many-core run), and an
//! accept loop that spawns `serve` per connection with Nagle off, backing off
//! briefly on accept errors (EMFILE and friends) instead of spinning.

use std::future::Future;

use tokio::net::{TcpListener, TcpStream};

pub fn serve_forever<F, Fut>(name: &str, serve: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_string());
    if let Some(workers) = workers() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .expect("runtime");
        let name = format!("{name} ({workers} workers)");
        rt.block_on(accept_loop(&name, &addr, serve, |task| {
            tokio::spawn(task);
        }));
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(
        &rt,
        accept_loop(name, &addr, serve, |task| {
            tokio::task::spawn_local(task);
        }),
    );
}

/// Accepts for ever, handing each connection's `serve` to `spawn`.
async fn accept_loop<F, Fut>(name: &str, addr: &str, serve: F, spawn: impl Fn(Fut))
where
    F: Fn(TcpStream) -> Fut,
{
    let listener = TcpListener::bind(addr).await.expect("bind");
    eprintln!("{name} listening on {addr}");
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                spawn(serve(stream));
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
        }
    }
}

/// `BENCH_WORKERS`, when it asks for more than one worker thread.
pub fn workers() -> Option<usize> {
    std::env::var("BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 1)
}
