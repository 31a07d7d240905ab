//! One client floods, the others keep their latency: what the input rate
//! limit (`websocket_max_messages_per_second`, policy `Pause`) buys.
//!
//! One process, three threads: a squall echo server on a current_thread
//! runtime; K paced clients (tokio-tungstenite) on another, each sending a
//! 32 B text every 10 ms and timing its echo; and, in the flood phases, one
//! raw client on a third thread writing 32 B frames as fast as the socket
//! takes them (and reading the echoes, so that only the server's input side
//! can hold it back). Each round runs three phases back to back, each on a
//! fresh server:
//!
//! - `quiet`: rate-limited server, no flooder (the reference latency);
//! - `flood, limited`: rate-limited server (R messages/s per connection,
//!   burst R), one flooder;
//! - `flood, unlimited`: no rate limit, one flooder (what the limit
//!   prevents).
//!
//! ```text
//! cargo run --release --example flood [-- --clients 16 --seconds 4 --rate 1000 --rounds 3]
//! ```
//!
//! Alternating rounds, because the machine's speed drifts (shared cores):
//! compare phases within a round.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use squall::{Application, Message, WebSocket, WebSocketHandler};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;

struct Echo;

impl WebSocketHandler for Echo {
    async fn on_message(&mut self, ws: &WebSocket, message: Message) {
        ws.write_message(message).await.ok();
    }
}

struct Options {
    clients: usize,
    seconds: f64,
    rate: u32,
    rounds: usize,
}

fn options() -> Options {
    let mut opts = Options {
        clients: 16,
        seconds: 4.0,
        rate: 1000,
        rounds: 3,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        let bad = || -> ! {
            eprintln!("usage: flood [--clients K] [--seconds S] [--rate R] [--rounds N]");
            std::process::exit(2)
        };
        match flag.as_str() {
            "--clients" => opts.clients = value.parse().unwrap_or_else(|_| bad()),
            "--seconds" => opts.seconds = value.parse().unwrap_or_else(|_| bad()),
            "--rate" => opts.rate = value.parse().unwrap_or_else(|_| bad()),
            "--rounds" => opts.rounds = value.parse().unwrap_or_else(|_| bad()),
            _ => bad(),
        }
    }
    opts
}

/// Starts a squall echo server on its own thread; returns its address and
/// a guard that stops it.
fn server(rate: Option<u32>) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let mut app = Application::new().websocket("/", || Echo);
            if let Some(rate) = rate {
                app = app.websocket_max_messages_per_second(rate, rate);
            }
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            tokio::select! {
                _ = app.serve(listener) => {}
                _ = stopped => {}
            }
        });
    });
    (addr, stop)
}

/// The flooder: writes 32 B frames in batches as fast as the socket takes
/// them until `done`; returns how many echoes it read back.
fn flooder(addr: std::net::SocketAddr, done: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
                .await
                .expect("flooder connects");
            let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = ws.into_inner() else {
                unreachable!("ws:// is plain TCP");
            };
            let tcp: TcpStream = tcp;
            let (mut read, mut write) = tcp.into_split();
            // 256 masked 32 B text frames per write.
            let mut frame = vec![0x81u8, 0x80 | 32, 1, 2, 3, 4];
            frame.extend((0..32u8).map(|i| (b'a' + i % 26) ^ [1, 2, 3, 4][usize::from(i % 4)]));
            let batch: Vec<u8> = frame
                .iter()
                .copied()
                .cycle()
                .take(frame.len() * 256)
                .collect();
            let echoed = Arc::new(AtomicU64::new(0));
            let counter = echoed.clone();
            let reader = tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = read.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    counter.fetch_add(n as u64, Relaxed);
                }
            });
            while !done.load(Relaxed) {
                let write_batch = write.write_all(&batch);
                match tokio::time::timeout(Duration::from_millis(50), write_batch).await {
                    Ok(Ok(())) | Err(_) => {}
                    Ok(Err(_)) => break,
                }
            }
            reader.abort();
            // Server frames of 32 B carry a 2-byte header.
            echoed.load(Relaxed) / 34
        })
    })
}

/// K paced clients for `seconds`; returns their RTT histogram (µs).
async fn paced(addr: std::net::SocketAddr, clients: usize, seconds: f64) -> Histogram<u64> {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        tasks.push(tokio::spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
                .await
                .expect("client connects");
            let mut histogram = Histogram::<u64>::new(3).expect("histogram");
            let payload: tungstenite::Utf8Bytes = "x".repeat(32).into();
            let end = Instant::now() + Duration::from_secs_f64(seconds);
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while Instant::now() < end {
                tick.tick().await;
                let sent = Instant::now();
                ws.send(tungstenite::Message::Text(payload.clone()))
                    .await
                    .expect("send");
                loop {
                    match ws.next().await {
                        Some(Ok(tungstenite::Message::Text(_))) => break,
                        Some(Ok(_)) => continue,
                        _ => panic!("paced client lost its connection"),
                    }
                }
                let _ = histogram.record(sent.elapsed().as_micros() as u64);
            }
            let _ = ws.close(None).await;
            histogram
        }));
    }
    let mut all = Histogram::<u64>::new(3).expect("histogram");
    for task in tasks {
        all.add(task.await.expect("client task"))
            .expect("same bounds");
    }
    all
}

fn main() {
    let opts = options();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "{} paced clients (32 B every 10 ms) for {} s per phase; flooder limited to {} msg/s (burst {}) under Pause",
        opts.clients, opts.seconds, opts.rate, opts.rate
    );
    println!("| round | phase | paced RTT p50 µs | p99 µs | p99.9 µs | paced echoes | flooder echoes/s |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for round in 1..=opts.rounds {
        for (phase, limit, flood) in [
            ("quiet", Some(opts.rate), false),
            ("flood, limited", Some(opts.rate), true),
            ("flood, unlimited", None, true),
        ] {
            let (addr, stop) = server(limit);
            let done = Arc::new(AtomicBool::new(false));
            let flooding = flood.then(|| flooder(addr, done.clone()));
            let started = Instant::now();
            let histogram = runtime.block_on(paced(addr, opts.clients, opts.seconds));
            done.store(true, Relaxed);
            let echoes = flooding.map(|f| f.join().expect("flooder"));
            let elapsed = started.elapsed().as_secs_f64();
            let _ = stop.send(());
            println!(
                "| {round} | {phase} | {} | {} | {} | {} | {} |",
                histogram.value_at_quantile(0.5),
                histogram.value_at_quantile(0.99),
                histogram.value_at_quantile(0.999),
                histogram.len(),
                echoes.map_or("–".to_owned(), |e| format!("{:.0}", e as f64 / elapsed)),
            );
        }
    }
}
