//! Heap allocations per echoed message, on the server's thread only.
//!
//! One process, two threads: an echo server on a tokio current_thread
//! runtime in one thread, a tokio-tungstenite client in the main thread. A
//! counting global allocator (wrapping `System`) counts `alloc`,
//! `alloc_zeroed` and `realloc` calls, but only on threads whose
//! thread-local "counted" flag is set, which only the server thread sets. After a
//! warm-up, the client sends M text messages (keeping W in flight) and waits
//! for every echo; the server thread's allocations over that window divided
//! by M is the figure.
//!
//! Two servers, same run: squall (the handler of `examples/bench_echo.rs`)
//! and, as the baseline, a hand-written tokio-tungstenite echo server
//! (`accept_async`, then `next()` / `send()` per message, as
//! `benches/servers/tt_echo.rs`).
//!
//! ```text
//! cargo run --release --example alloc_count [-- --messages 100000 --size 32]
//! # where do they come from: print a backtrace for the first N allocations
//! # of the measured window (one server, one W)
//! CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo run --release --example alloc_count -- \
//!     --only squall --window 1 --messages 1000 --trace 20
//! # with the `metrics` feature and a Prometheus recorder installed
//! cargo run --release --features metrics --example alloc_count -- --prometheus
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use squall::{Application, Message, WebSocket, WebSocketHandler};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static REALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Backtraces still to print (`--trace N`), armed at the measured window.
static TRACE_LEFT: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the server thread only.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
    /// Set while the hook itself prints a backtrace (which allocates).
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

fn record(size: usize, realloc: bool) {
    let _ = COUNTED.try_with(|counted| {
        if !counted.get() || IN_HOOK.with(Cell::get) {
            return;
        }
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(size as u64, Relaxed);
        if realloc {
            REALLOCS.fetch_add(1, Relaxed);
        }
        if TRACE_LEFT.load(Relaxed) > 0 {
            TRACE_LEFT.fetch_sub(1, Relaxed);
            IN_HOOK.with(|hook| hook.set(true));
            let trace = std::backtrace::Backtrace::force_capture();
            let what = if realloc { "realloc to" } else { "alloc of" };
            eprintln!("=== {what} {size} bytes on the server thread:\n{trace}");
            IN_HOOK.with(|hook| hook.set(false));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size(), false);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size(), false);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size, true);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Server {
    Squall,
    Tungstenite,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Squall => "squall",
            Server::Tungstenite => "tokio-tungstenite",
        }
    }
}

/// The handler of `examples/bench_echo.rs`.
struct Echo;

impl WebSocketHandler for Echo {
    async fn on_message(&mut self, ws: &WebSocket, message: Message) {
        ws.write_message(message).await.ok();
    }
}

/// The baseline: `benches/servers/tt_echo.rs` itself, its connection loop.
#[path = "servers/tt_echo.rs"]
mod tt_echo;

/// Runs `server` on a current_thread runtime in its own, counted thread until
/// `stop` fires.
fn spawn_server(
    server: Server,
    listener: std::net::TcpListener,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        COUNTED.with(|counted| counted.set(true));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = TcpListener::from_std(listener).expect("listener");
            let serve = async move {
                match server {
                    Server::Squall => {
                        let _ = Application::new()
                            .websocket("/", || Echo)
                            .websocket("/{*path}", || Echo)
                            .serve(listener)
                            .await;
                    }
                    Server::Tungstenite => loop {
                        let (stream, _) = listener.accept().await.expect("accept");
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(async move {
                            let _ = tt_echo::serve(stream).await;
                        });
                    },
                }
            };
            tokio::select! {
                () = serve => {}
                _ = stop => {}
            }
        });
    })
}

type Client = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Sends `n` messages keeping `window` in flight; checks every echo.
async fn pump(ws: &mut Client, n: usize, window: usize, payload: &tungstenite::Utf8Bytes) {
    let mut sent = 0;
    while sent < window.min(n) {
        ws.feed(tungstenite::Message::Text(payload.clone()))
            .await
            .expect("feed");
        sent += 1;
    }
    ws.flush().await.expect("flush");
    let mut received = 0;
    while received < n {
        match ws.next().await {
            Some(Ok(tungstenite::Message::Text(text))) if text == *payload => {}
            other => panic!("unexpected echo: {other:?}"),
        }
        received += 1;
        if sent < n {
            ws.send(tungstenite::Message::Text(payload.clone()))
                .await
                .expect("send");
            sent += 1;
        }
    }
}

struct Counts {
    allocs: u64,
    reallocs: u64,
    bytes: u64,
}

fn counts() -> Counts {
    Counts {
        allocs: ALLOCS.load(Relaxed),
        reallocs: REALLOCS.load(Relaxed),
        bytes: BYTES.load(Relaxed),
    }
}

struct Options {
    messages: usize,
    warmup: usize,
    size: usize,
    trace: u64,
    only: Option<String>,
    prometheus: bool,
    window: Option<usize>,
}

fn run(server: Server, window: usize, opts: &Options) -> (f64, f64, f64, Duration) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let thread = spawn_server(server, listener, stop_rx);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = runtime.block_on(async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp)
            .await
            .expect("upgrade");
        let payload: tungstenite::Utf8Bytes = "x".repeat(opts.size).into();

        pump(&mut ws, opts.warmup, window, &payload).await;
        // Let the server go idle before and after the window.
        let settle = Duration::from_millis(50);
        tokio::time::sleep(settle).await;
        let before = counts();
        TRACE_LEFT.store(opts.trace, Relaxed);
        let started = Instant::now();
        pump(&mut ws, opts.messages, window, &payload).await;
        let elapsed = started.elapsed();
        tokio::time::sleep(settle).await;
        TRACE_LEFT.store(0, Relaxed);
        let after = counts();
        let _ = ws.close(None).await;
        let m = opts.messages as f64;
        (
            (after.allocs - before.allocs) as f64 / m,
            (after.reallocs - before.reallocs) as f64 / m,
            (after.bytes - before.bytes) as f64 / m,
            elapsed,
        )
    });
    let _ = stop_tx.send(());
    thread.join().expect("server thread");
    result
}

fn parse_options() -> Options {
    let mut opts = Options {
        messages: 100_000,
        warmup: 10_000,
        size: 32,
        trace: 0,
        only: None,
        prometheus: false,
        window: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--prometheus" {
            opts.prometheus = true;
            continue;
        }
        let value = args.next().unwrap_or_default();
        let number = || -> usize {
            value.parse().unwrap_or_else(|_| {
                eprintln!("{flag} needs a number");
                std::process::exit(2)
            })
        };
        match flag.as_str() {
            "--messages" => opts.messages = number(),
            "--warmup" => opts.warmup = number(),
            "--size" => opts.size = number(),
            "--trace" => opts.trace = number() as u64,
            "--window" => opts.window = Some(number()),
            "--only" => opts.only = Some(value),
            _ => {
                eprintln!(
                    "usage: alloc_count [--messages M] [--warmup N] [--size BYTES] \
                     [--window W] [--only squall|tokio-tungstenite] [--trace N] [--prometheus]"
                );
                std::process::exit(2);
            }
        }
    }
    opts.messages = opts.messages.max(1);
    opts
}

fn main() {
    let opts = parse_options();
    if opts.prometheus {
        install_prometheus();
    }
    println!(
        "server-thread heap allocations per echoed message: {} messages of {} B text after {} warm-up",
        opts.messages, opts.size, opts.warmup
    );
    println!("| server | W | allocs/msg | of which reallocs | bytes allocated/msg | window |");
    println!("|---|---:|---:|---:|---:|---:|");
    for window in [1usize, 16] {
        if opts.window.is_some_and(|w| w != window) {
            continue;
        }
        for server in [Server::Squall, Server::Tungstenite] {
            if opts
                .only
                .as_deref()
                .is_some_and(|only| only != server.name())
            {
                continue;
            }
            let (allocs, reallocs, bytes, elapsed) = run(server, window, &opts);
            println!(
                "| {} | {window} | {allocs:.3} | {reallocs:.3} | {bytes:.1} | {:.2} s |",
                server.name(),
                elapsed.as_secs_f64()
            );
        }
    }
}

/// Installs a Prometheus recorder (`--prometheus`, feature `metrics`), so
/// squall's counters and histograms record for real during the count.
#[cfg(feature = "metrics")]
fn install_prometheus() {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("squall_handler_seconds".into()),
            &squall::HANDLER_SECONDS_BUCKETS,
        )
        .expect("buckets given")
        .install_recorder()
        .expect("the only recorder");
    println!("(feature `metrics` on, Prometheus recorder installed, handler time in buckets)");
}

#[cfg(not(feature = "metrics"))]
fn install_prometheus() {
    eprintln!("--prometheus needs the `metrics` feature: cargo run --release --features metrics --example alloc_count -- --prometheus");
    std::process::exit(2);
}
