//! Soak run: many well-behaved connections exchanging messages for a while,
//! plus a stream of connects/disconnects and hostile clients, against squall's
//! `bench_echo` server run as a separate process (10 000 client sockets and
//! 10 000 server sockets in one process would reach the 20 000 open-files cap).
//!
//! ```text
//! cargo build --release --example bench_echo --example soak
//! target/release/examples/soak [--conns 10000] [--secs 60] [--interval-ms 1000]
//!                              [--flooders 10] [--page-stallers 10]
//!                              [--server target/release/examples/bench_echo]
//! ```
//!
//! Besides the four kinds of hostile clients, the run holds `--flooders`
//! clients that flood pings and never read (the server must stop reading
//! them once their unflushed pongs fill the send-queue bound, and keep its
//! memory flat), and `--page-stallers` clients that pipeline page requests
//! and never read the responses (the server must drop each one once a
//! response write has stalled for its `response_write_timeout`, 10 s).
//!
//! Reports errors on well-behaved connections (must be zero), messages
//! exchanged, churn and hostile counts by outcome, and the server's RSS
//! sampled every 5 s (read from /proc/PID/status). Everything stops by itself
//! at the end of the run; the server is stopped with SIGTERM.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    connect_errors: AtomicU64,
    messages: AtomicU64,
    errors: AtomicU64,
    churn_ok: AtomicU64,
    churn_err: AtomicU64,
    slowloris_dropped: AtomicU64,
    garbage_1002: AtomicU64,
    oversize_1009: AtomicU64,
    big_head_431: AtomicU64,
    hostile_unexpected: AtomicU64,
    flood_upgraded: AtomicU64,
    flood_bytes: AtomicU64,
    flood_held_at_end: AtomicU64,
    flood_dropped: AtomicU64,
    stall_dropped: AtomicU64,
    stall_drop_ms_total: AtomicU64,
    stall_unexpected: AtomicU64,
}

struct Args {
    conns: usize,
    secs: u64,
    interval: Duration,
    flooders: usize,
    page_stallers: usize,
    server: String,
}

fn args() -> Args {
    let mut args = Args {
        conns: 10_000,
        secs: 60,
        interval: Duration::from_millis(1000),
        flooders: 10,
        page_stallers: 10,
        server: "target/release/examples/bench_echo".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--conns" => args.conns = value.parse().expect("--conns N"),
            "--secs" => args.secs = value.parse().expect("--secs N"),
            "--interval-ms" => args.interval = Duration::from_millis(value.parse().expect("ms")),
            "--flooders" => args.flooders = value.parse().expect("--flooders N"),
            "--page-stallers" => args.page_stallers = value.parse().expect("--page-stallers N"),
            "--server" => args.server = value,
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn client_config() -> WebSocketConfig {
    // Small buffers: 10 000 clients in this process.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

async fn connect(
    addr: SocketAddr,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, Box<dyn std::error::Error + Send + Sync>>
{
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let url = format!("ws://{addr}/soak");
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async_with_config(url, tcp, Some(client_config())),
    )
    .await??;
    Ok(ws)
}

/// A well-behaved connection: a message every `interval`, its echo checked.
async fn well_behaved(
    id: usize,
    mut ws: tokio_tungstenite::WebSocketStream<TcpStream>,
    interval: Duration,
    end: Instant,
    counters: Arc<Counters>,
) {
    let phase = interval.mul_f64((id % 1000) as f64 / 1000.0);
    tokio::time::sleep(phase).await;
    let mut tick = tokio::time::interval(interval);
    let mut seq = 0u64;
    while Instant::now() < end {
        tick.tick().await;
        let text = format!("c{id}-{seq}");
        seq += 1;
        let exchange = async {
            ws.send(Message::text(text.clone()))
                .await
                .map_err(|e| e.to_string())?;
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(reply))) => {
                        return Ok::<_, String>(reply == text.as_str())
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(other)) => return Err(format!("unexpected {other:?}")),
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("closed".into()),
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(10), exchange).await {
            Ok(Ok(true)) => {
                counters.messages.fetch_add(1, Ordering::Relaxed);
            }
            outcome => {
                let n = counters.errors.fetch_add(1, Ordering::Relaxed);
                if n < 5 {
                    eprintln!("conn {id}: error {outcome:?}");
                }
                return;
            }
        }
    }
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        ws.close(None).await.ok();
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    if closed.is_err() {
        counters.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Connect, one exchange, close; over and over.
async fn churn(addr: SocketAddr, end: Instant, counters: Arc<Counters>) {
    while Instant::now() < end {
        let ok = async {
            let mut ws = connect(addr).await.map_err(|e| e.to_string())?;
            ws.send(Message::text("churn"))
                .await
                .map_err(|e| e.to_string())?;
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.as_str() == "churn" => {}
                other => return Err(format!("{other:?}")),
            }
            ws.close(None).await.map_err(|e| e.to_string())?;
            while let Some(Ok(_)) = ws.next().await {}
            Ok::<_, String>(())
        };
        match tokio::time::timeout(Duration::from_secs(10), ok).await {
            Ok(Ok(())) => counters.churn_ok.fetch_add(1, Ordering::Relaxed),
            _ => counters.churn_err.fetch_add(1, Ordering::Relaxed),
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const UPGRADE: &str = "GET /soak HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Reads until EOF (bounded) and returns what came.
async fn read_all(tcp: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    out
}

/// The close code in the first close frame after the 101 head, if any.
fn close_code_after_upgrade(bytes: &[u8]) -> Option<u16> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let mut rest = &bytes[end..];
    while rest.len() >= 2 {
        let opcode = rest[0] & 0xf;
        let len = (rest[1] & 0x7f) as usize;
        if len >= 126 || rest.len() < 2 + len {
            return None;
        }
        if opcode == 8 && len >= 2 {
            return Some(u16::from_be_bytes([rest[2], rest[3]]));
        }
        rest = &rest[2 + len..];
    }
    None
}

/// Hostile clients of four kinds, in turn, until the end.
async fn hostile(kind: usize, addr: SocketAddr, end: Instant, counters: Arc<Counters>) {
    while Instant::now() < end {
        let Ok(mut tcp) = TcpStream::connect(addr).await else {
            counters.hostile_unexpected.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        match kind % 4 {
            0 => {
                // Slowloris: one byte of the head a second until dropped.
                let mut dropped = false;
                for byte in UPGRADE.bytes() {
                    if Instant::now() > end {
                        break;
                    }
                    if tcp.write_all(&[byte]).await.is_err() {
                        dropped = true;
                        break;
                    }
                    let mut probe = [0u8; 1];
                    if let Ok(Ok(0) | Err(_)) =
                        tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut probe)).await
                    {
                        dropped = true;
                        break;
                    }
                }
                if dropped {
                    counters.slowloris_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            1 => {
                // An unmasked frame after the upgrade: 1002.
                let _ = tcp.write_all(UPGRADE.as_bytes()).await;
                let _ = tcp.write_all(&[0x81, 0x02, b'h', b'i']).await;
                let got = read_all(&mut tcp, Duration::from_secs(10)).await;
                if close_code_after_upgrade(&got) == Some(1002) {
                    counters.garbage_1002.fetch_add(1, Ordering::Relaxed);
                } else {
                    counters.hostile_unexpected.fetch_add(1, Ordering::Relaxed);
                }
            }
            2 => {
                // A frame header announcing 11 MiB (over the 10 MiB limit): 1009.
                let _ = tcp.write_all(UPGRADE.as_bytes()).await;
                let mut frame = vec![0x82, 0xff];
                frame.extend_from_slice(&(11u64 << 20).to_be_bytes());
                frame.extend_from_slice(&[1, 2, 3, 4]);
                let _ = tcp.write_all(&frame).await;
                let got = read_all(&mut tcp, Duration::from_secs(10)).await;
                if close_code_after_upgrade(&got) == Some(1009) {
                    counters.oversize_1009.fetch_add(1, Ordering::Relaxed);
                } else {
                    counters.hostile_unexpected.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                // A 20 KiB request head: 431.
                let head = format!(
                    "GET /soak HTTP/1.1\r\nX-Big: {}\r\n\r\n",
                    "a".repeat(20 * 1024)
                );
                let _ = tcp.write_all(head.as_bytes()).await;
                let got = read_all(&mut tcp, Duration::from_secs(10)).await;
                if got.starts_with(b"HTTP/1.1 431") {
                    counters.big_head_431.fetch_add(1, Ordering::Relaxed);
                } else {
                    counters.hostile_unexpected.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The bytes of the page the server serves at `/page` (`--page-bytes`).
const PAGE_BYTES: usize = 64 * 1024;

/// A socket with a small receive buffer, for clients that never read.
async fn non_reading_socket(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    socket.connect(addr).await
}

/// Upgrades, then floods 125-byte masked pings and never reads, until the
/// end. The server stops reading once the unflushed pongs fill the send
/// queue's bound; with no ping interval set, it holds the connection, so a
/// flooder is expected to be still blocked in a write at the end.
async fn ping_flooder(addr: SocketAddr, end: Instant, counters: Arc<Counters>) {
    let Ok(mut tcp) = non_reading_socket(addr).await else {
        counters.hostile_unexpected.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let _ = tcp.write_all(UPGRADE.as_bytes()).await;
    let mut head = Vec::new();
    let upgraded = tokio::time::timeout(Duration::from_secs(10), async {
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if tcp.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            head.push(byte[0]);
        }
        Some(())
    })
    .await;
    if !matches!(upgraded, Ok(Some(()))) || !head.starts_with(b"HTTP/1.1 101") {
        counters.hostile_unexpected.fetch_add(1, Ordering::Relaxed);
        return;
    }
    counters.flood_upgraded.fetch_add(1, Ordering::Relaxed);
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut ping = vec![0x89, 0x80 | 125];
    ping.extend_from_slice(&mask);
    ping.extend((0..125).map(|i| b'p' ^ mask[i % 4]));
    let chunk = ping.repeat(64 * 1024 / ping.len());
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tcp.write_all(&chunk)).await {
            Ok(Ok(())) => {
                counters
                    .flood_bytes
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            Ok(Err(_)) => {
                counters.flood_dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => {
                counters.flood_held_at_end.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// Pipelines page requests on a keep-alive connection and never reads the
/// responses, over and over until the end. The server stops reading
/// requests while a response is unsent and drops the connection once a
/// write has stalled for its write timeout (10 s): the client sees its own
/// writes fail. A connection still open 30 s later is unexpected.
async fn page_staller(addr: SocketAddr, end: Instant, counters: Arc<Counters>) {
    let requests = "GET /page HTTP/1.1\r\nHost: soak\r\n\r\n".repeat(1000);
    while Instant::now() < end {
        let Ok(mut tcp) = non_reading_socket(addr).await else {
            counters.stall_unexpected.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let started = Instant::now();
        let dropped = tokio::time::timeout(Duration::from_secs(30), async {
            while tcp.write_all(requests.as_bytes()).await.is_ok() {}
        })
        .await;
        if dropped.is_ok() {
            counters.stall_dropped.fetch_add(1, Ordering::Relaxed);
            counters
                .stall_drop_ms_total
                .fetch_add(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        } else {
            counters.stall_unexpected.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn main() {
    let args = args();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut server = std::process::Command::new(&args.server)
        .arg(addr.to_string())
        .args(["--page-bytes", &PAGE_BYTES.to_string()])
        .env("RUST_LOG", "error")
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", args.server));
    let pid = server.id();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (counters, samples, elapsed) = runtime.block_on(run(&args, addr, pid));
    runtime.shutdown_timeout(Duration::from_secs(5));

    // SAFETY: signalling the child process we spawned.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = server.wait().expect("server exit");

    let c = &counters;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "\n## squall soak: {} connections, {} s",
        args.conns, args.secs
    );
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| well-behaved connections opened | {} |",
        load(&c.connected)
    );
    println!("| connect errors | {} |", load(&c.connect_errors));
    println!("| messages echoed and checked | {} |", load(&c.messages));
    println!(
        "| message rate | {:.0}/s |",
        load(&c.messages) as f64 / elapsed.as_secs_f64()
    );
    println!(
        "| **errors on well-behaved connections** | **{}** |",
        load(&c.errors)
    );
    println!(
        "| churn connect/echo/close ok / failed | {} / {} |",
        load(&c.churn_ok),
        load(&c.churn_err)
    );
    println!(
        "| hostile: slowloris dropped | {} |",
        load(&c.slowloris_dropped)
    );
    println!(
        "| hostile: unmasked frame → 1002 | {} |",
        load(&c.garbage_1002)
    );
    println!(
        "| hostile: 11 MiB frame header → 1009 | {} |",
        load(&c.oversize_1009)
    );
    println!("| hostile: 20 KiB head → 431 | {} |", load(&c.big_head_431));
    println!(
        "| hostile: unexpected outcome | {} |",
        load(&c.hostile_unexpected)
    );
    println!(
        "| ping flooders upgraded / still held (server stopped reading) at the end / dropped | {} / {} / {} |",
        load(&c.flood_upgraded),
        load(&c.flood_held_at_end),
        load(&c.flood_dropped)
    );
    println!(
        "| ping bytes the flooders got out, in all (kernel buffers included) | {:.1} MiB |",
        load(&c.flood_bytes) as f64 / (1024.0 * 1024.0)
    );
    let stalls = load(&c.stall_dropped);
    println!(
        "| non-reading page clients dropped / still open after 30 s | {} / {} |",
        stalls,
        load(&c.stall_unexpected)
    );
    if stalls > 0 {
        println!(
            "| non-reading page client: mean time from connect to drop | {:.1} s |",
            load(&c.stall_drop_ms_total) as f64 / stalls as f64 / 1000.0
        );
    }
    println!("| server exit on SIGTERM | {status} |");
    println!();
    println!("| t (s) | server RSS (MiB) | server fds | messages so far |");
    println!("|---|---|---|---|");
    for (t, rss, fds, msgs) in &samples {
        println!("| {t:.0} | {:.1} | {fds} | {msgs} |", *rss as f64 / 1024.0);
    }
    if load(&c.errors) > 0 || load(&c.connect_errors) > 0 || load(&c.stall_unexpected) > 0 {
        std::process::exit(1);
    }
}

async fn run(
    args: &Args,
    addr: SocketAddr,
    pid: u32,
) -> (Arc<Counters>, Vec<(f64, u64, usize, u64)>, Duration) {
    // Wait for the server to listen.
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    eprintln!("server RSS before connecting: {} KiB", rss_kib(pid));

    // Open the well-behaved connections, 200 handshakes at a time.
    let gate = Arc::new(Semaphore::new(200));
    let mut opening = tokio::task::JoinSet::new();
    for id in 0..args.conns {
        let gate = gate.clone();
        opening.spawn(async move {
            let _permit = gate.acquire_owned().await;
            (id, connect(addr).await)
        });
    }
    let mut sockets = Vec::with_capacity(args.conns);
    while let Some(joined) = opening.join_next().await {
        match joined.expect("connect task") {
            (id, Ok(ws)) => {
                counters.connected.fetch_add(1, Ordering::Relaxed);
                sockets.push((id, ws));
            }
            (id, Err(e)) => {
                if counters.connect_errors.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("connect {id}: {e}");
                }
            }
        }
    }
    eprintln!(
        "{} connections open in {:.1}s; server RSS {} KiB",
        sockets.len(),
        started.elapsed().as_secs_f64(),
        rss_kib(pid)
    );

    let run_started = Instant::now();
    let end = run_started + Duration::from_secs(args.secs);
    let mut tasks = tokio::task::JoinSet::new();
    for (id, ws) in sockets {
        tasks.spawn(well_behaved(id, ws, args.interval, end, counters.clone()));
    }
    for _ in 0..4 {
        tasks.spawn(churn(addr, end, counters.clone()));
    }
    for kind in 0..16 {
        tasks.spawn(hostile(kind, addr, end, counters.clone()));
    }
    for _ in 0..args.flooders {
        tasks.spawn(ping_flooder(addr, end, counters.clone()));
    }
    for _ in 0..args.page_stallers {
        tasks.spawn(page_staller(addr, end, counters.clone()));
    }
    let mut samples = Vec::new();
    let sampler = {
        let counters = counters.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            while Instant::now() < end + Duration::from_secs(1) {
                tick.tick().await;
                samples.push((
                    run_started.elapsed().as_secs_f64(),
                    rss_kib(pid),
                    fd_count(pid),
                    counters.messages.load(Ordering::Relaxed),
                ));
            }
            samples
        }
    };
    let samples = sampler.await;
    let drained = tokio::time::timeout(Duration::from_secs(40), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        eprintln!("{} tasks still running after the end: aborted", tasks.len());
        tasks.abort_all();
    }
    let elapsed = run_started.elapsed();
    (counters, samples, elapsed)
}
