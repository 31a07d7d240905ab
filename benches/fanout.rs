//! Fan-out benchmark: one message to N connections in one group.
//!
//! ```text
//! cargo run --release --example fanout -- [-n 10000] [-k 50] [--burst 20] [--bursts 5]
//!     [--size 100] [--modes shared,naive[,ordered]] [--redis URL]
//!     [--deflate off|shared|own] [--mem-level 1..9] [--words]
//! ```
//!
//! `--deflate` makes the receivers offer permessage-deflate and the server
//! accept it: `shared` without server context takeover (a broadcast is
//! compressed once for every receiver), `own` with it (each receiver's
//! connection compresses the shared message with its own window; about
//! 300 KiB of compressor per receiver, so keep `-n` small). The client
//! inflates what it receives, one decompressor per receiver.
//! `--mem-level` sets the server's `CompressionOptions::mem_level`
//! (default 8). `--words` fills the messages with varied words instead of
//! one repeated letter, so that a large message gives the compressor
//! thousands of symbols, as a real document does.
//!
//! Two processes, because N clients and N server sockets in one process
//! would need 2N descriptors and open files are capped at 20 000 per process
//! here: this process (the clients and the clock) starts itself again with
//! `server` as the first argument. Each process runs one tokio
//! current_thread runtime.
//!
//! The server has a receivers' route (`/rx`: join group `bench`, say `r`)
//! and a control route (`/ctl`). The client opens N receivers, waits for
//! every `r`, then for each mode sends commands on the control connection:
//!
//! - `shared SEQ`: `WebSocket::broadcast`, the frame (header and payload)
//!   built once, every receiver queue holding it and every connection
//!   writing those same bytes;
//! - `naive SEQ`: the baseline, a loop over the receivers'
//!   `WebSocketSender`s, sending each its own freshly built
//!   `Message::from(String)`;
//! - `ordered SEQ` (diagnostic): one shared buffer, as `shared`, but sent
//!   through the receivers' `WebSocketSender`s in the order they connected,
//!   where `broadcast` walks the group's hash map in its own order;
//! - with `--redis URL`, `redis SEQ`: the control connection is on a second
//!   application in the server process, with no receivers; both share Redis
//!   through `RedisBroker`, so every delivery crosses Redis.
//!
//! Latency: K rounds one at a time; for each, the time from sending the
//! command until the last of the N receivers has the message (p50, p99).
//! Throughput: `--burst B` commands back to back, N×B deliveries over the
//! time until the last one arrives, repeated `--bursts R` times (median,
//! min and max reported) after one untimed burst per mode. Figures include
//! the control message's own trip (tens of µs on loopback). `--modes` sets
//! which in-process modes run and in what order (run both orders).
//! The server times each fan-out call (the broadcast, or the naive loop) and
//! prints the figures on stderr when it exits; the server's CPU (from
//! `/proc`) over each mode's rounds and bursts, divided by their deliveries,
//! is the CPU per delivery. Everything is bounded by timeouts.

#[path = "procfs.rs"]
#[allow(dead_code)] // each benchmark uses a part of it
mod procfs;
use procfs::{process_cpu, raise_nofile};
use std::cell::RefCell;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flate2::{Decompress, FlushDecompress};
use squall::{
    Application, CompressionOptions, Message, WebSocket, WebSocketHandler, WebSocketSender,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::LocalSet;

const GROUP: &str = "bench";
/// Bound on one round (and on connecting everyone).
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);
/// The server process exits by itself after this, whatever happens.
const SERVER_LIFETIME: Duration = Duration::from_secs(900);

struct Opts {
    n: usize,
    k: usize,
    burst: usize,
    bursts: usize,
    size: usize,
    modes: Vec<&'static str>,
    redis: Option<String>,
    deflate: &'static str,
    mem_level: u8,
    words: bool,
}

fn parse(args: &[String]) -> Opts {
    let mut opts = Opts {
        n: 10_000,
        k: 50,
        burst: 20,
        bursts: 5,
        size: 100,
        modes: vec!["shared", "naive"],
        redis: None,
        deflate: "off",
        mem_level: 8,
        words: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().expect("option needs a value").clone();
        match arg.as_str() {
            "-n" => opts.n = value().parse().expect("-n N"),
            "-k" => opts.k = value().parse().expect("-k K"),
            "--burst" => opts.burst = value().parse().expect("--burst B"),
            "--bursts" => opts.bursts = value().parse::<usize>().expect("--bursts R").max(1),
            "--modes" => {
                opts.modes = value()
                    .split(',')
                    .map(|m| match m {
                        "shared" => "shared",
                        "naive" => "naive",
                        "ordered" => "ordered",
                        other => panic!("unknown mode {other}"),
                    })
                    .collect()
            }
            "--size" => opts.size = value().parse().expect("--size BYTES"),
            "--redis" => opts.redis = Some(value()),
            "--deflate" => {
                opts.deflate = match value().as_str() {
                    "off" => "off",
                    "shared" => "shared",
                    "own" => "own",
                    other => panic!("unknown --deflate {other}"),
                }
            }
            "--mem-level" => opts.mem_level = value().parse().expect("--mem-level 1..9"),
            "--words" => opts.words = true,
            other => panic!("unknown argument {other}"),
        }
    }
    opts
}

/// `--words`: the server's message bodies are words, not one letter.
static WORDS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `{"seq":SEQ,"body":"xxx…"}`, padded to about `size` bytes; with
/// `--words`, the body is words picked by a small deterministic generator.
fn payload(seq: u64, size: usize) -> String {
    let head = format!("{{\"seq\":{seq},\"body\":\"");
    let pad = size.saturating_sub(head.len() + 2);
    if !WORDS.load(std::sync::atomic::Ordering::Relaxed) {
        return format!("{head}{}\"}}", "x".repeat(pad));
    }
    const VOCABULARY: [&str; 16] = [
        "alpha ", "bravo ", "room ", "user ", "message ", "hello ", "world ", "json ", "seven ",
        "ninety ", "delta ", "quick ", "brown ", "fox ", "lazy ", "dog ",
    ];
    let mut body = String::with_capacity(pad + 16);
    let mut state = seq
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    while body.len() < pad {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        body.push_str(VOCABULARY[(state >> 60) as usize]);
        body.push_str(&((state >> 40) % 1000).to_string());
        body.push(' ');
    }
    body.truncate(pad);
    format!("{head}{body}\"}}")
}

// ---------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------

type Registry = Arc<Mutex<Vec<WebSocketSender>>>;

struct Receiver {
    registry: Registry,
    deflate: &'static str,
    mem_level: u8,
}

impl WebSocketHandler for Receiver {
    fn compression_options(&self) -> Option<CompressionOptions> {
        let options = CompressionOptions::new().mem_level(self.mem_level);
        match self.deflate {
            "shared" => Some(options.server_no_context_takeover(true)),
            "own" => Some(options),
            _ => None,
        }
    }

    async fn open(&mut self, ws: &WebSocket) {
        ws.join(GROUP);
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ws.sender());
        ws.write_message("r").await.ok();
    }

    async fn on_message(&mut self, _ws: &WebSocket, _msg: Message) {}
}

/// How long each fan-out call took in the server, per mode.
type CallTimes = Arc<Mutex<Vec<(&'static str, Duration)>>>;

struct Control {
    registry: Registry,
    size: usize,
    times: CallTimes,
}

impl WebSocketHandler for Control {
    async fn on_message(&mut self, ws: &WebSocket, msg: Message) {
        let Some((mode, seq)) = msg.as_text().and_then(|t| t.split_once(' ')) else {
            return;
        };
        let seq: u64 = seq.parse().unwrap_or(0);
        let started = Instant::now();
        let mode = match mode {
            "shared" | "redis" => {
                ws.broadcast(GROUP, payload(seq, self.size));
                if mode == "shared" {
                    "shared"
                } else {
                    "redis"
                }
            }
            "naive" => {
                let receivers = self.registry.lock().unwrap_or_else(|e| e.into_inner());
                for sender in receivers.iter() {
                    // A fresh String and a fresh frame per receiver.
                    let _ = sender.send(Message::from(payload(seq, self.size)));
                }
                "naive"
            }
            "ordered" => {
                // One shared buffer, as `shared`, but sent in the order the
                // receivers connected (the group's map has its own order).
                let message = Message::from(payload(seq, self.size));
                let receivers = self.registry.lock().unwrap_or_else(|e| e.into_inner());
                for sender in receivers.iter() {
                    let _ = sender.send(message.clone());
                }
                "ordered"
            }
            _ => return,
        };
        let took = started.elapsed();
        self.times
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((mode, took));
    }
}

fn server(opts: Opts) -> std::io::Result<()> {
    raise_nofile();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let registry = Registry::default();
        let times = CallTimes::default();
        let size = opts.size;
        let (deflate, mem_level) = (opts.deflate, opts.mem_level);
        WORDS.store(opts.words, std::sync::atomic::Ordering::Relaxed);
        let rx_registry = registry.clone();
        let ctl_registry = registry.clone();
        let ctl_times = times.clone();
        let receivers = Application::new()
            .websocket("/rx", move || Receiver {
                registry: rx_registry.clone(),
                deflate,
                mem_level,
            })
            .websocket("/ctl", move || Control {
                registry: ctl_registry.clone(),
                size,
                times: ctl_times.clone(),
            });
        let (receivers, control) = with_redis(receivers, &opts, &registry, &times);
        let rx = receivers.bind("127.0.0.1:0").await?;
        let rx_port = rx.local_addr()?.port();
        let rx_handle = rx.handle();
        tokio::spawn(rx.run());
        let ctl_port = match control {
            Some(app) => {
                let ctl = app.bind("127.0.0.1:0").await?;
                let port = ctl.local_addr()?.port();
                tokio::spawn(ctl.run());
                port
            }
            None => rx_port,
        };
        println!("READY {rx_port} {ctl_port}");
        // Until the client closes our stdin (or the lifetime runs out).
        let mut stdin = tokio::io::stdin();
        let mut sink = [0u8; 64];
        let _ = tokio::time::timeout(SERVER_LIFETIME, async {
            while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
        rx_handle.shutdown();
        report_call_times(&times.lock().unwrap_or_else(|e| e.into_inner()));
        Ok(())
    })
}

/// On stderr: per mode, how long one fan-out call held the control task
/// (the broadcast, or the naive loop), over every call made.
fn report_call_times(times: &[(&'static str, Duration)]) {
    for mode in ["shared", "naive", "ordered", "redis"] {
        let mut calls: Vec<Duration> = times
            .iter()
            .filter(|(m, _)| *m == mode)
            .map(|(_, t)| *t)
            .collect();
        if calls.is_empty() {
            continue;
        }
        calls.sort();
        let total: Duration = calls.iter().sum();
        eprintln!(
            "server: {mode}: fan-out call p50 {:.2} ms, p99 {:.2} ms, mean {:.2} ms over {} calls",
            percentile(&calls, 0.5).as_secs_f64() * 1e3,
            percentile(&calls, 0.99).as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3 / calls.len() as f64,
            calls.len()
        );
    }
}

/// With `--redis`: both applications get a Redis broker, and the control
/// route moves to the second one, which has no receivers.
#[cfg(feature = "redis")]
fn with_redis(
    receivers: Application,
    opts: &Opts,
    registry: &Registry,
    times: &CallTimes,
) -> (Application, Option<Application>) {
    let Some(url) = &opts.redis else {
        return (receivers, None);
    };
    let broker = || squall::RedisBroker::new(url).expect("redis url");
    let (registry, size, times) = (registry.clone(), opts.size, times.clone());
    let control = Application::new()
        .broker(broker())
        .websocket("/ctl", move || Control {
            registry: registry.clone(),
            size,
            times: times.clone(),
        });
    (receivers.broker(broker()), Some(control))
}

#[cfg(not(feature = "redis"))]
fn with_redis(
    receivers: Application,
    opts: &Opts,
    _registry: &Registry,
    _times: &CallTimes,
) -> (Application, Option<Application>) {
    assert!(opts.redis.is_none(), "--redis needs --features redis");
    (receivers, None)
}

// ---------------------------------------------------------------------------
// Client process
// ---------------------------------------------------------------------------

/// Arrival bookkeeping shared by the receiver tasks (one thread).
struct Arrivals {
    n: usize,
    ready: usize,
    /// Per sequence number: how many receivers have it, and when the last did.
    count: Vec<usize>,
    last: Vec<Option<Instant>>,
    /// Wake the main task when all N receivers have this sequence number.
    watch: usize,
    notify: Rc<Notify>,
}

impl Arrivals {
    fn ready(&mut self) {
        self.ready += 1;
        if self.ready == self.n {
            self.notify.notify_one();
        }
    }

    fn arrived(&mut self, seq: usize) {
        if seq >= self.count.len() {
            return;
        }
        self.count[seq] += 1;
        self.last[seq] = Some(Instant::now());
        if seq == self.watch && self.count[seq] == self.n {
            self.notify.notify_one();
        }
    }
}

async fn handshake(port: u16, path: &str, deflate: bool) -> std::io::Result<(TcpStream, Vec<u8>)> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let offer = if deflate {
        "Sec-WebSocket-Extensions: permessage-deflate\r\n"
    } else {
        ""
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if !buf.starts_with(b"HTTP/1.1 101") {
                return Err(std::io::Error::other("upgrade refused"));
            }
            let rest = buf.split_off(end + 4);
            return Ok((tcp, rest));
        }
    }
}

/// Reads server frames (unmasked), calling `on_text` with each text payload
/// (inflated first when it is compressed: one frame per message here).
async fn read_frames(
    mut tcp: TcpStream,
    mut buf: Vec<u8>,
    mut on_text: impl FnMut(&[u8]),
) -> std::io::Result<()> {
    let mut chunk = vec![0u8; 16 * 1024];
    let mut inflater: Option<(Decompress, Vec<u8>)> = None;
    loop {
        // Parse every complete frame in buf.
        let mut at = 0;
        loop {
            let frame = &buf[at..];
            if frame.len() < 2 {
                break;
            }
            let opcode = frame[0] & 0x0f;
            let (len, header) = match frame[1] & 0x7f {
                126 if frame.len() >= 4 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
                127 if frame.len() >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&frame[2..10]);
                    (u64::from_be_bytes(b) as usize, 10)
                }
                126 | 127 => break,
                small => (small as usize, 2),
            };
            if frame.len() < header + len {
                break;
            }
            let compressed = frame[0] & 0x40 != 0;
            match opcode {
                0x1 if compressed => {
                    let (decompress, out) = inflater.get_or_insert_with(|| {
                        (Decompress::new(false), Vec::with_capacity(64 * 1024))
                    });
                    let mut input = frame[header..header + len].to_vec();
                    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
                    out.clear();
                    decompress
                        .decompress_vec(&input, out, FlushDecompress::Sync)
                        .map_err(std::io::Error::other)?;
                    on_text(out);
                }
                0x1 => on_text(&frame[header..header + len]),
                0x8 => return Ok(()),
                _ => {}
            }
            at += header + len;
        }
        buf.drain(..at);
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn parse_seq(text: &[u8]) -> Option<usize> {
    let rest = text.strip_prefix(b"{\"seq\":")?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// A masked client text frame.
fn client_frame(text: &str) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let data = text.as_bytes();
    assert!(data.len() < 126);
    let mut frame = vec![0x81, 0x80 | data.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

struct ModeResult {
    mode: &'static str,
    rounds: Vec<Duration>,
    bursts: Vec<Duration>,
    /// Server CPU seconds per delivery over the rounds and bursts.
    cpu_per_delivery: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("server") {
        return server(parse(&args[1..]));
    }
    let opts = parse(&args);
    let nofile = raise_nofile();
    assert!(
        nofile as usize > opts.n + 64,
        "open files limit {nofile} too low for -n {}",
        opts.n
    );

    let mut child_args = vec![
        "server".to_owned(),
        "--size".to_owned(),
        opts.size.to_string(),
        "--deflate".to_owned(),
        opts.deflate.to_owned(),
        "--mem-level".to_owned(),
        opts.mem_level.to_string(),
    ];
    if opts.words {
        child_args.push("--words".to_owned());
    }
    if let Some(url) = &opts.redis {
        child_args.extend(["--redis".to_owned(), url.clone()]);
    }
    let mut child = Command::new(std::env::current_exe()?)
        .args(&child_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line)?;
    let ports: Vec<u16> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(ports.len(), 2, "server said {line:?}");
    let (rx_port, ctl_port) = (ports[0], ports[1]);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let pid = child.id();
    let results = LocalSet::new().block_on(&runtime, run_client(&opts, rx_port, ctl_port, pid));
    let (results, cpu) = results?;
    // Resident memory after the runs: with compression, what the receivers'
    // compressors still hold (none without context takeover).
    let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .unwrap_or(0);
    println!(
        "server RSS after the runs (deflate {}): {} KiB, {:.1} KiB per receiver",
        opts.deflate,
        rss_kib,
        rss_kib as f64 / opts.n as f64
    );
    let modes = if opts.redis.is_some() {
        1
    } else {
        opts.modes.len()
    };
    // Timed and untimed rounds and bursts (warm-up commands left out).
    let deliveries = opts.n * modes * (opts.k + opts.burst * (opts.bursts + 1));
    println!(
        "server CPU once every receiver is connected (deflate {}): {:.2} s for about {} deliveries, {:.2} us per delivery",
        opts.deflate,
        cpu,
        deliveries,
        cpu * 1e6 / deliveries.max(1) as f64
    );
    drop(child.stdin.take()); // the server exits on EOF
    let _ = child.wait();
    report(&opts, &results);
    Ok(())
}

/// Runs the modes; returns their results and the server's CPU seconds from
/// the moment every receiver was connected.
async fn run_client(
    opts: &Opts,
    rx_port: u16,
    ctl_port: u16,
    server_pid: u32,
) -> std::io::Result<(Vec<ModeResult>, f64)> {
    let modes: Vec<&'static str> = if opts.redis.is_some() {
        vec!["redis"]
    } else {
        opts.modes.clone()
    };
    let seqs = modes.len() * (opts.k + opts.burst * (opts.bursts + 1) + 1) + 1;
    let notify = Rc::new(Notify::new());
    let arrivals = Rc::new(RefCell::new(Arrivals {
        n: opts.n,
        ready: 0,
        count: vec![0; seqs],
        last: vec![None; seqs],
        watch: 0,
        notify: notify.clone(),
    }));

    // Open N receivers, at most 128 handshakes at a time.
    let started = Instant::now();
    let deflate = opts.deflate != "off";
    let gate = Rc::new(tokio::sync::Semaphore::new(128));
    for _ in 0..opts.n {
        let arrivals = arrivals.clone();
        let gate = gate.clone();
        tokio::task::spawn_local(async move {
            let permit = gate.acquire().await;
            let (tcp, rest) = match handshake(rx_port, "/rx", deflate).await {
                Ok(ok) => ok,
                Err(error) => {
                    eprintln!("receiver failed to connect: {error}");
                    return;
                }
            };
            drop(permit);
            let _ = read_frames(tcp, rest, |text| {
                let mut a = arrivals.borrow_mut();
                if text == b"r" {
                    a.ready();
                } else if let Some(seq) = parse_seq(text) {
                    a.arrived(seq);
                }
            })
            .await;
        });
    }
    let deadline = Instant::now() + ROUND_TIMEOUT;
    while arrivals.borrow().ready < opts.n {
        if tokio::time::timeout_at(deadline.into(), notify.notified())
            .await
            .is_err()
        {
            return Err(std::io::Error::other(format!(
                "only {} of {} receivers ready",
                arrivals.borrow().ready,
                opts.n
            )));
        }
    }
    eprintln!("{} receivers ready in {:.2?}", opts.n, started.elapsed());
    let cpu_before = process_cpu(server_pid);

    let (mut ctl, _) = handshake(ctl_port, "/ctl", false).await?;
    let mut seq = 1usize;
    let mut results = Vec::new();
    for mode in modes {
        // Warm-up: repeat the command until someone has it (through Redis,
        // the receivers' subscription may not be up yet).
        arrivals.borrow_mut().watch = seq;
        let warm_deadline = Instant::now() + ROUND_TIMEOUT;
        while arrivals.borrow().count[seq] == 0 {
            assert!(Instant::now() < warm_deadline, "{mode}: no delivery at all");
            ctl.write_all(&client_frame(&format!("{mode} {seq}")))
                .await?;
            let _ = tokio::time::timeout(Duration::from_millis(200), notify.notified()).await;
        }
        wait_until(&arrivals, &notify, seq, opts.n).await?;
        seq += 1;
        // K timed rounds, one at a time.
        let mode_cpu_before = process_cpu(server_pid);
        let mut rounds = Vec::with_capacity(opts.k);
        for _ in 0..opts.k {
            let t0 = Instant::now();
            let command = client_frame(&format!("{mode} {seq}"));
            arrivals.borrow_mut().watch = seq;
            ctl.write_all(&command).await?;
            wait_until(&arrivals, &notify, seq, opts.n).await?;
            let last = arrivals.borrow().last[seq].expect("arrived");
            rounds.push(last - t0);
            seq += 1;
        }
        // Bursts: B commands back to back, R timed times after one untimed.
        // The first burst of the process is much slower than the next ones
        // (every connection's queue and write buffer grow, the heap grows):
        // untimed, it would count against whichever mode runs first.
        let mut bursts = Vec::with_capacity(opts.bursts);
        for round in 0..=opts.bursts {
            let first = seq;
            let end = first + opts.burst - 1;
            let mut commands = Vec::new();
            for s in first..=end {
                commands.extend(client_frame(&format!("{mode} {s}")));
            }
            arrivals.borrow_mut().watch = end;
            let t0 = Instant::now();
            ctl.write_all(&commands).await?;
            wait_until(&arrivals, &notify, end, opts.n).await?;
            // Each connection's messages arrive in order: whoever has the
            // last one has them all.
            let last = (first..=end)
                .filter_map(|s| arrivals.borrow().last[s])
                .max()
                .expect("arrived");
            seq = end + 1;
            let missing: usize = (first..=end)
                .map(|s| opts.n - arrivals.borrow().count[s])
                .sum();
            if missing > 0 {
                eprintln!("{mode}: {missing} deliveries missing in the burst");
            }
            if round > 0 {
                bursts.push(last - t0);
            }
        }
        // The server's CPU over the rounds and every burst (the untimed one
        // too: its deliveries are counted).
        let cpu = process_cpu(server_pid) - mode_cpu_before;
        let deliveries = opts.n * (opts.k + opts.burst * (opts.bursts + 1));
        results.push(ModeResult {
            mode,
            rounds,
            bursts,
            cpu_per_delivery: cpu / deliveries as f64,
        });
    }
    Ok((results, process_cpu(server_pid) - cpu_before))
}

async fn wait_until(
    arrivals: &Rc<RefCell<Arrivals>>,
    notify: &Rc<Notify>,
    until: usize,
    n: usize,
) -> std::io::Result<()> {
    let deadline = Instant::now() + ROUND_TIMEOUT;
    loop {
        if arrivals.borrow().count[until] >= n {
            return Ok(());
        }
        if tokio::time::timeout_at(deadline.into(), notify.notified())
            .await
            .is_err()
        {
            return Err(std::io::Error::other(format!(
                "message {until}: {} of {n} receivers after {ROUND_TIMEOUT:?}",
                arrivals.borrow().count[until]
            )));
        }
    }
}

fn report(opts: &Opts, results: &[ModeResult]) {
    println!(
        "fan-out to N={} receivers, message {} B, K={} rounds, burst B={} x R={}",
        opts.n, opts.size, opts.k, opts.burst, opts.bursts
    );
    println!(
        "| mode | last receiver p50 | p99 | deliveries/s (rounds) | deliveries/s (burst, median) | burst min-max | server CPU µs/delivery |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut rates = Vec::new();
    for result in results {
        let mut sorted = result.rounds.clone();
        sorted.sort();
        let total: Duration = sorted.iter().sum();
        let round_rate = (opts.n * sorted.len()) as f64 / total.as_secs_f64();
        let mut burst_rates: Vec<f64> = result
            .bursts
            .iter()
            .map(|b| (opts.n * opts.burst) as f64 / b.as_secs_f64())
            .collect();
        burst_rates.sort_by(f64::total_cmp);
        let burst_rate = burst_rates[(burst_rates.len() - 1) / 2..=burst_rates.len() / 2]
            .iter()
            .sum::<f64>()
            / if burst_rates.len() % 2 == 0 { 2.0 } else { 1.0 };
        rates.push((
            result.mode,
            percentile(&sorted, 0.5),
            round_rate,
            burst_rate,
        ));
        println!(
            "| {} | {:.2} ms | {:.2} ms | {:.0} | {:.0} | {:.0}-{:.0} | {:.3} |",
            result.mode,
            percentile(&sorted, 0.5).as_secs_f64() * 1e3,
            percentile(&sorted, 0.99).as_secs_f64() * 1e3,
            round_rate,
            burst_rate,
            burst_rates[0],
            burst_rates[burst_rates.len() - 1],
            result.cpu_per_delivery * 1e6,
        );
        println!(
            "  {} bursts in order (deliveries/s): {}",
            result.mode,
            result
                .bursts
                .iter()
                .map(|b| format!("{:.0}", (opts.n * opts.burst) as f64 / b.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if let (Some(shared), Some(naive)) = (
        rates.iter().find(|r| r.0 == "shared"),
        rates.iter().find(|r| r.0 == "naive"),
    ) {
        println!(
            "shared / naive: p50 time-to-last {:.2}x faster, round throughput {:.2}x, burst throughput (medians) {:.2}x",
            naive.1.as_secs_f64() / shared.1.as_secs_f64(),
            shared.2 / naive.2,
            shared.3 / naive.3
        );
    }
}
