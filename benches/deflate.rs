//! permessage-deflate benchmark: bytes on the wire and server CPU per echoed
//! message, compressed and not, for a JSON chat message (~300 B) and a
//! 64 KiB JSON document.
//!
//! ```text
//! cargo run --release --example bench_echo -- 127.0.0.1:9001 --deflate &
//! cargo run --release --example deflate_bench -- --url ws://127.0.0.1:9001/ \
//!     --server-pid PID [-c 16] [-w 4] [-d 5] [--rounds 3]
//! ```
//!
//! The same server answers both modes: a client that offers
//! `permessage-deflate; client_no_context_takeover` gets compression (the
//! server keeps its context), one that offers nothing does not. Each
//! connection sends distinct documents in turn (1024 chat messages, or 8
//! documents of 64 KiB). The client compresses each document once (no
//! context takeover on its side, so the same compressed frame is valid every
//! time) and does not inflate the
//! replies (only the first, to check them): the CPU measured is the
//! server's, from `/proc/PID/stat` over the timed window. Modes alternate
//! in rounds (`--rounds`), as the machine is shared; each line is one run.
//! Loopback only; output is human-readable lines.

#[path = "procfs.rs"]
#[allow(dead_code)] // each benchmark uses a part of it
mod procfs;
use procfs::process_cpu;
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::LocalSet;

struct Opts {
    addr: String,
    path: String,
    pid: Option<u32>,
    conns: usize,
    window: usize,
    secs: f64,
    rounds: usize,
}

fn parse() -> Opts {
    let mut opts = Opts {
        addr: String::new(),
        path: "/".into(),
        pid: None,
        conns: 16,
        window: 4,
        secs: 5.0,
        rounds: 3,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().expect("option needs a value").clone();
        match arg.as_str() {
            "--url" => {
                let url = value();
                let rest = url.strip_prefix("ws://").expect("ws:// URL");
                let (addr, path) = rest.split_once('/').unwrap_or((rest, ""));
                assert!(
                    addr.starts_with("127.") || addr.starts_with("localhost"),
                    "loopback only"
                );
                opts.addr = addr.to_owned();
                opts.path = format!("/{path}");
            }
            "--server-pid" => opts.pid = Some(value().parse().expect("--server-pid PID")),
            "-c" => opts.conns = value().parse().expect("-c N"),
            "-w" => opts.window = value().parse().expect("-w N"),
            "-d" => opts.secs = value().parse().expect("-d SECS"),
            "--rounds" => opts.rounds = value().parse().expect("--rounds N"),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        !opts.addr.is_empty(),
        "--url ws://127.0.0.1:PORT/ is required"
    );
    opts
}

/// A deterministic pseudo-random sequence, so the documents are the same in
/// every run and not trivially compressible.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

const WORDS: &[&str] = &[
    "hello", "world", "meeting", "tomorrow", "deploy", "release", "coffee", "lunch", "ticket",
    "review", "merge", "branch", "server", "client", "latency", "socket", "message", "update",
];

fn chat_message(rng: &mut Lcg) -> String {
    let text: Vec<&str> = (0..12)
        .map(|_| WORDS[rng.next() as usize % WORDS.len()])
        .collect();
    format!(
        r#"{{"type":"message","room":"general","id":"{:016x}","user":{{"id":{},"name":"user{}","avatar":"https://cdn.example.com/avatars/{}.png"}},"text":"{}","ts":{},"reactions":[{{"emoji":"+1","count":{}}}],"edited":false}}"#,
        rng.next(),
        rng.next() % 100_000,
        rng.next() % 1000,
        rng.next() % 100_000,
        text.join(" "),
        1_700_000_000_000u64 + rng.next() % 1_000_000,
        rng.next() % 20
    )
}

/// Per kind, distinct documents sent in turn (so the server's context
/// takeover sees related messages, not the same one again, since more
/// than a window of them): 1024 chat
/// messages, 8 documents of 64 KiB.
fn documents() -> Vec<(&'static str, Vec<String>)> {
    let mut rng = Lcg(42);
    let chats = (0..1024).map(|_| chat_message(&mut rng)).collect();
    let docs = (0..8)
        .map(|_| {
            let mut doc = String::from("[");
            while doc.len() < 64 * 1024 - 400 {
                if doc.len() > 1 {
                    doc.push(',');
                }
                doc.push_str(&chat_message(&mut rng));
            }
            doc.push(']');
            doc
        })
        .collect();
    vec![("chat", chats), ("64KiB", docs)]
}

const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

fn frame(payload: &[u8], rsv1: bool) -> Vec<u8> {
    let mut out = vec![0x81 | if rsv1 { 0x40 } else { 0 }];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut compress = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    compress
        .compress_vec(data, &mut out, FlushCompress::Sync)
        .expect("deflate");
    out.truncate(out.len() - 4);
    out
}

async fn connect(opts: &Opts, offer: bool) -> std::io::Result<(TcpStream, Vec<u8>)> {
    let mut tcp = TcpStream::connect(&opts.addr).await?;
    tcp.set_nodelay(true)?;
    let extension = if offer {
        "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n"
    } else {
        ""
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extension}\r\n",
        opts.path, opts.addr
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 101"), "refused: {head}");
            assert_eq!(
                head.contains("permessage-deflate"),
                offer,
                "negotiation: {head}"
            );
            return Ok((tcp, buf.split_off(end + 4)));
        }
    }
}

/// Per connection: keeps `window` messages in flight; counts replies and the
/// bytes both ways. Returns (messages, bytes out, bytes in).
async fn drive(
    opts: Rc<Opts>,
    offer: bool,
    requests: Rc<Vec<Vec<u8>>>,
    expected: Rc<String>,
    stop: Rc<Cell<bool>>,
) -> (u64, u64, u64) {
    let mut next = 0;
    let (mut tcp, mut buf) = connect(&opts, offer).await.expect("connect");
    let (mut messages, mut bytes_out, mut bytes_in) = (0u64, 0u64, 0u64);
    let mut outstanding = 0;
    let mut checked = false;
    let mut chunk = vec![0u8; 128 * 1024];
    loop {
        while outstanding < opts.window && !stop.get() {
            let request = &requests[next % requests.len()];
            next += 1;
            tcp.write_all(request).await.expect("write");
            bytes_out += request.len() as u64;
            outstanding += 1;
        }
        if outstanding == 0 {
            break;
        }
        // Every complete frame in buf is one reply.
        loop {
            if buf.len() < 2 {
                break;
            }
            let (len, header) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 if buf.len() >= 10 => (
                    u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")) as usize,
                    10,
                ),
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if buf.len() < header + len {
                break;
            }
            if !checked {
                let payload = &buf[header..header + len];
                let text = if buf[0] & 0x40 != 0 {
                    let mut input = payload.to_vec();
                    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
                    let mut out = Vec::with_capacity(expected.len() + 64);
                    Decompress::new(false)
                        .decompress_vec(&input, &mut out, FlushDecompress::Sync)
                        .expect("inflate");
                    out
                } else {
                    payload.to_vec()
                };
                assert_eq!(text, expected.as_bytes(), "echo mismatch");
                assert_eq!(buf[0] & 0x40 != 0, offer, "compressed reply iff agreed");
                checked = true;
            }
            bytes_in += (header + len) as u64;
            buf.drain(..header + len);
            messages += 1;
            outstanding -= 1;
        }
        if outstanding == 0 {
            continue;
        }
        let n = tcp.read(&mut chunk).await.expect("read");
        assert!(n > 0, "server closed");
        buf.extend_from_slice(&chunk[..n]);
    }
    (messages, bytes_out, bytes_in)
}

async fn run(opts: Rc<Opts>, name: &str, docs: &[String], offer: bool) {
    let requests: Vec<Vec<u8>> = docs
        .iter()
        .map(|doc| {
            let payload = if offer {
                deflate(doc.as_bytes())
            } else {
                doc.as_bytes().to_vec()
            };
            frame(&payload, offer)
        })
        .collect();
    let request = Rc::new(requests);
    let expected = Rc::new(docs[0].clone());
    let size = docs.iter().map(String::len).sum::<usize>() / docs.len();
    let stop = Rc::new(Cell::new(false));
    let cpu_before = opts.pid.map_or(0.0, process_cpu);
    let started = Instant::now();
    let tasks: Vec<_> = (0..opts.conns)
        .map(|_| {
            tokio::task::spawn_local(drive(
                opts.clone(),
                offer,
                request.clone(),
                expected.clone(),
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(opts.secs)).await;
    stop.set(true);
    let (mut messages, mut bytes_out, mut bytes_in) = (0, 0, 0);
    for task in tasks {
        let (m, o, i) = task.await.expect("connection task");
        messages += m;
        bytes_out += o;
        bytes_in += i;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = opts.pid.map_or(0.0, process_cpu) - cpu_before;
    println!(
        "{name:>6} {mode:>8}: {size:>6} B doc, {wire_out:>7.0} B/msg client->server, {wire_in:>7.0} B/msg server->client, \
         {rate:>8.0} msg/s, server CPU {cpu_us:>7.2} us/msg",
        mode = if offer { "deflate" } else { "plain" },
        size = size,
        wire_out = bytes_out as f64 / messages as f64,
        wire_in = bytes_in as f64 / messages as f64,
        rate = messages as f64 / elapsed,
        cpu_us = cpu * 1e6 / messages as f64,
    );
}

fn main() {
    let opts = Rc::new(parse());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    LocalSet::new().block_on(&runtime, async {
        for round in 0..opts.rounds {
            println!("round {}", round + 1);
            for (name, docs) in documents() {
                // Alternate which mode goes first from round to round.
                let order = if round % 2 == 0 {
                    [false, true]
                } else {
                    [true, false]
                };
                for offer in order {
                    run(opts.clone(), name, &docs, offer).await;
                }
            }
        }
    });
}
