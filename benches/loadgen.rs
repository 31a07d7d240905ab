//! WebSocket load generator for the squall benchmark matrix.
//!
//! Modes (see benches/README.md for the full story):
//!
//! ```text
//! loadgen echo    --url ws://127.0.0.1:PORT/ -c C -w W -s S [--binary] -d SECS --warmup SECS
//! loadgen connect --url ws://127.0.0.1:PORT/ --workers N -d SECS [--warmup SECS]
//! loadgen idle    --url ws://127.0.0.1:PORT/ -n N [--server-pid PID] [--hold SECS]
//! ```
//!
//! Common options: `--server-pid PID` (sample the server's CPU time / RSS,
//! and in echo mode its user and system time and I/O system calls per
//! message from /proc), `--meta KEY=VALUE` (repeatable, copied into the JSON
//! result line), `--callgrind` (the server runs under callgrind: zero its
//! counters as the measured window opens, dump them as it closes).
//!
//! The client speaks the WebSocket protocol by hand on a raw `TcpStream`
//! instead of using a WebSocket library: frames are built from pre-masked
//! payload templates and replies are parsed in place, so the generator spends
//! as little CPU per message as possible and the server stays the bottleneck.
//! Everything runs on one tokio current_thread runtime (the harness pins the
//! generator to a single core, where one thread without cross-thread wake-ups
//! is the cheapest setup).
//!
//! Output: human-readable lines, then exactly one line `RESULT {json}`.
//! Only loopback targets are accepted.

#[path = "procfs.rs"]
#[allow(dead_code)] // each benchmark uses a part of it
mod procfs;
use procfs::{proc_cpu_us, raise_nofile, ProcCounters};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::LocalSet;

const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Number of client connections per source address before moving on to the
/// next 127.0.0.x address (keeps well clear of the ephemeral port range).
const CONNS_PER_SOURCE_IP: usize = 20_000;

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Echo,
    Connect,
    Idle,
}

#[derive(Debug)]
struct Args {
    mode: Mode,
    url: String,
    conns: usize,
    window: usize,
    size: usize,
    binary: bool,
    duration: f64,
    warmup: f64,
    workers: usize,
    idle_n: usize,
    hold: f64,
    parallel: usize,
    server_pid: Option<u32>,
    callgrind: bool,
    meta: Vec<(String, String)>,
}

const USAGE: &str = "\
usage:
  loadgen echo    --url URL [-c CONNS] [-w WINDOW] [-s SIZE] [--binary] [-d SECS] [--warmup SECS]
  loadgen connect --url URL [--workers N] [-d SECS] [--warmup SECS]
  loadgen idle    --url URL -n N [--hold SECS] [--parallel K]
common: [--server-pid PID] [--meta KEY=VALUE]... [--callgrind]
defaults: -c 64 -w 1 -s 32 -d 10 --warmup 2 --workers 16 -n 1000 --hold 0 --parallel 128";

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = match it.next().as_deref() {
        Some("echo") => Mode::Echo,
        Some("connect") => Mode::Connect,
        Some("idle") => Mode::Idle,
        Some("-h") | Some("--help") | None => return Err(String::new()),
        Some(other) => return Err(format!("unknown mode {other:?}")),
    };
    let mut a = Args {
        mode,
        url: String::new(),
        conns: 64,
        window: 1,
        size: 32,
        binary: false,
        duration: 10.0,
        warmup: 2.0,
        workers: 16,
        idle_n: 1000,
        hold: 0.0,
        parallel: 128,
        server_pid: None,
        callgrind: false,
        meta: Vec::new(),
    };
    fn val<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String> {
        let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
        v.parse().map_err(|_| format!("bad value {v:?} for {flag}"))
    }
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--url" | "-u" => a.url = val(&flag, it.next())?,
            "-c" | "--conns" => a.conns = val(&flag, it.next())?,
            "-w" | "--window" => a.window = val(&flag, it.next())?,
            "-s" | "--size" => a.size = val(&flag, it.next())?,
            "--binary" => a.binary = true,
            "--text" => a.binary = false,
            "-d" | "--duration" => a.duration = val(&flag, it.next())?,
            "--warmup" => a.warmup = val(&flag, it.next())?,
            "--workers" => a.workers = val(&flag, it.next())?,
            "-n" => a.idle_n = val(&flag, it.next())?,
            "--hold" => a.hold = val(&flag, it.next())?,
            "--parallel" => a.parallel = val(&flag, it.next())?,
            "--server-pid" => a.server_pid = Some(val(&flag, it.next())?),
            "--callgrind" => a.callgrind = true,
            "--meta" => {
                let kv: String = val(&flag, it.next())?;
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("--meta wants KEY=VALUE, got {kv:?}"))?;
                a.meta.push((k.to_string(), v.to_string()));
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if a.url.is_empty() {
        return Err("--url is required".into());
    }
    if a.conns == 0 || a.window == 0 || a.workers == 0 || a.parallel == 0 {
        return Err("-c, -w, --workers and --parallel must be at least 1".into());
    }
    if !(a.duration > 0.0 && a.duration <= 3600.0 && a.warmup >= 0.0 && a.warmup <= 600.0) {
        return Err("-d must be in (0, 3600] and --warmup in [0, 600] seconds".into());
    }
    if !(0.0..=3600.0).contains(&a.hold) {
        return Err("--hold must be in [0, 3600] seconds".into());
    }
    Ok(a)
}

/// Target parsed from a `ws://host:port/path` URL.
struct Target {
    addr: SocketAddr,
    host_header: String,
    path: String,
}

fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("only ws:// URLs are supported, got {url:?}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority:?} resolves to nothing"))?;
    // The benchmark only ever targets this machine.
    if !addr.ip().is_loopback() {
        return Err(format!("refusing non-loopback target {addr}"));
    }
    Ok(Target {
        addr,
        host_header: authority.to_string(),
        path: path.to_string(),
    })
}

// ---------------------------------------------------------------------------
// Process accounting
// ---------------------------------------------------------------------------

/// CPU time (user + system) of this process, in microseconds.
fn self_cpu_us() -> u64 {
    // SAFETY: getrusage fills the zeroed struct.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
}

/// Resident set size of a process in KiB, from /proc/PID/status (VmRSS).
fn proc_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A point in time for rate and CPU accounting.
struct Snapshot {
    at: Instant,
    self_cpu: u64,
    server_cpu: Option<u64>,
    server_counters: Option<ProcCounters>,
}

impl Snapshot {
    fn take(server_pid: Option<u32>) -> Self {
        Snapshot {
            at: Instant::now(),
            self_cpu: self_cpu_us(),
            server_cpu: server_pid.and_then(proc_cpu_us),
            server_counters: server_pid.and_then(ProcCounters::read),
        }
    }
}

/// `--callgrind`: a server running under valgrind's callgrind has its
/// counters zeroed as the measured window opens and dumped as it closes, so
/// the profile covers exactly the messages counted.
fn callgrind_control(pid: Option<u32>, arg: &str) {
    if let Some(pid) = pid {
        let _ = std::process::Command::new("callgrind_control")
            .args([arg, &pid.to_string()])
            .stdout(std::process::Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------------------
// WebSocket wire format (client side)
// ---------------------------------------------------------------------------

/// Small deterministic generator for payload templates and mask keys.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Append a frame header (FIN set, masked) for a payload of `len` bytes.
fn put_header(out: &mut Vec<u8>, opcode: u8, len: usize, mask: [u8; 4]) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
}

/// Append a complete masked frame carrying `payload`.
fn put_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    put_header(out, opcode, payload.len(), mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

/// A parsed server frame header.
struct FrameHead {
    fin: bool,
    opcode: u8,
    header_len: usize,
    payload_len: usize,
}

/// Parse a frame header at the start of `buf`; `Ok(None)` means "need more bytes".
fn parse_head(buf: &[u8]) -> Result<Option<FrameHead>, &'static str> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    if buf[0] & 0x70 != 0 {
        return Err("reserved bits set");
    }
    let opcode = buf[0] & 0x0F;
    if buf[1] & 0x80 != 0 {
        return Err("masked frame from server");
    }
    let (header_len, payload_len) = match buf[1] & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (4, u16::from_be_bytes([buf[2], buf[3]]) as usize)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (10, u64::from_be_bytes(b) as usize)
        }
        n => (2, n as usize),
    };
    if payload_len > (1 << 30) {
        return Err("absurd frame length");
    }
    Ok(Some(FrameHead {
        fin,
        opcode,
        header_len,
        payload_len,
    }))
}

/// Read buffer with a consumed-prefix cursor, so parsing never shifts bytes
/// per frame (only when the buffer is compacted before a read).
struct ReadBuf {
    data: Vec<u8>,
    start: usize,
}

impl ReadBuf {
    fn new(cap: usize) -> Self {
        ReadBuf {
            data: Vec::with_capacity(cap),
            start: 0,
        }
    }
    fn pending(&self) -> &[u8] {
        &self.data[self.start..]
    }
    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.data.len() {
            self.data.clear();
            self.start = 0;
        }
    }
    /// Read at least one more byte from `s`; Ok(0) is EOF.
    async fn fill(&mut self, s: &mut TcpStream, min_room: usize) -> io::Result<usize> {
        if self.start > 0
            && (self.start > self.data.capacity() / 2
                || self.data.capacity() - self.data.len() < min_room)
        {
            self.data.drain(..self.start);
            self.start = 0;
        }
        if self.data.capacity() - self.data.len() < min_room {
            self.data.reserve(min_room);
        }
        s.read_buf(&mut self.data).await
    }
}

/// Result of pulling one complete message out of the read buffer.
enum Pulled {
    /// Need more bytes.
    Partial,
    /// A data message (text or binary) was handed to the callback.
    Data,
    /// A control frame that the caller should know about.
    Control { opcode: u8 },
}

/// Extract the next complete message. An unfragmented data frame is handed to
/// `on_data(opcode, payload)` straight from the read buffer (no copy);
/// fragmented messages are reassembled in `frag_buf` first.
fn pull_message<F: FnMut(u8, &[u8])>(
    rb: &mut ReadBuf,
    frag_buf: &mut Vec<u8>,
    frag_op: &mut Option<u8>,
    mut on_data: F,
) -> Result<Pulled, &'static str> {
    loop {
        let Some(h) = parse_head(rb.pending())? else {
            return Ok(Pulled::Partial);
        };
        let total = h.header_len + h.payload_len;
        if rb.pending().len() < total {
            return Ok(Pulled::Partial);
        }
        let payload = &rb.pending()[h.header_len..total];
        match h.opcode {
            OP_TEXT | OP_BINARY if frag_op.is_none() => {
                if h.fin {
                    on_data(h.opcode, payload);
                    rb.consume(total);
                    return Ok(Pulled::Data);
                }
                frag_buf.clear();
                frag_buf.extend_from_slice(payload);
                rb.consume(total);
                *frag_op = Some(h.opcode);
            }
            OP_CONT if frag_op.is_some() => {
                frag_buf.extend_from_slice(payload);
                rb.consume(total);
                if h.fin {
                    let op = frag_op.take().unwrap_or(OP_BINARY);
                    on_data(op, frag_buf);
                    return Ok(Pulled::Data);
                }
            }
            OP_CLOSE | OP_PING | OP_PONG => {
                rb.consume(total);
                return Ok(Pulled::Control { opcode: h.opcode });
            }
            _ => return Err("unexpected opcode"),
        }
    }
}

/// Connect to the target, optionally from a chosen loopback source address.
async fn tcp_connect(target: &SocketAddr, source: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let sock = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let (Some(ip), SocketAddr::V4(_)) = (source, target) {
        // Let connect() pick the port for the full 4-tuple instead of bind()
        // reserving it for every destination (IP_BIND_ADDRESS_NO_PORT).
        {
            use std::os::fd::AsRawFd;
            let one: libc::c_int = 1;
            // SAFETY: valid fd and option buffer of the right size.
            unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    &one as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        sock.bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
    }
    let stream = sock.connect(*target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Source address for the i-th connection: 127.0.0.1 for the first 20 000,
/// then 127.0.0.2, ... (None = let the kernel choose, i.e. 127.0.0.1).
fn source_for(i: usize) -> Option<Ipv4Addr> {
    if i < CONNS_PER_SOURCE_IP {
        None
    } else {
        Some(Ipv4Addr::new(
            127,
            0,
            0,
            (1 + i / CONNS_PER_SOURCE_IP).min(254) as u8,
        ))
    }
}

fn err(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Client side of the opening handshake. Leaves any bytes that follow the
/// response head in `rb`.
async fn ws_handshake(
    s: &mut TcpStream,
    t: &Target,
    key_seed: u64,
    rb: &mut ReadBuf,
) -> io::Result<()> {
    // Sec-WebSocket-Key: 16 bytes, base64 encoded (24 chars). The server only
    // hashes it, so any 16-byte value in base64 is valid; vary it per connection.
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = XorShift(key_seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut key = String::with_capacity(24);
    for _ in 0..21 {
        key.push(B64[(rng.next() % 64) as usize] as char);
    }
    key.push(B64[((rng.next() % 4) * 16) as usize] as char); // last 2 bits must be 0
    key.push_str("==");
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        t.path, t.host_header, key
    );
    s.write_all(req.as_bytes()).await?;
    loop {
        if let Some(end) = rb.pending().windows(4).position(|w| w == b"\r\n\r\n") {
            let head = &rb.pending()[..end];
            let ok = head.starts_with(b"HTTP/1.1 101") || head.starts_with(b"HTTP/1.0 101");
            if !ok {
                let line =
                    String::from_utf8_lossy(head.split(|&b| b == b'\r').next().unwrap_or(b""));
                return Err(err(&format!("handshake refused: {line}")));
            }
            rb.consume(end + 4);
            return Ok(());
        }
        if rb.pending().len() > 16 * 1024 {
            return Err(err("handshake response too large"));
        }
        if rb.fill(s, 4096).await? == 0 {
            return Err(err("EOF during handshake"));
        }
    }
}

/// Send a close frame (code 1000) and wait for the server's close and EOF.
async fn ws_close(s: &mut TcpStream, rb: &mut ReadBuf, mask: [u8; 4]) -> io::Result<()> {
    let mut out = Vec::with_capacity(16);
    put_frame(&mut out, OP_CLOSE, &1000u16.to_be_bytes(), mask);
    s.write_all(&out).await?;
    let mut msg = Vec::new();
    let mut frag = None;
    let mut got_close = false;
    loop {
        loop {
            match pull_message(rb, &mut msg, &mut frag, |_, _| {}).map_err(err)? {
                Pulled::Partial => break,
                Pulled::Control { opcode: OP_CLOSE } => got_close = true,
                _ => {} // late echoes or pings during shutdown: ignore
            }
        }
        if rb.fill(s, 4096).await? == 0 {
            return if got_close {
                Ok(())
            } else {
                Err(err("EOF before close frame"))
            };
        }
    }
}

// ---------------------------------------------------------------------------
// Payloads
// ---------------------------------------------------------------------------

/// Per-connection payload generator. Message `seq` is the 16 hex digits of
/// `seq` (truncated to the payload size) followed by a connection-specific
/// body, so every message differs from the previous one and from other
/// connections' messages; verification compares the whole payload.
struct Payloads {
    size: usize,
    tag_len: usize,
    opcode: u8,
    mask: [u8; 4],
    /// Unmasked body (bytes after the tag) for verification.
    body: Vec<u8>,
    /// The same body pre-masked at its position in the frame.
    body_masked: Vec<u8>,
}

impl Payloads {
    fn new(conn: usize, size: usize, binary: bool) -> Self {
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D ^ ((conn as u64 + 1) * 0x9E37_79B9));
        let m = rng.next().to_le_bytes();
        let mask = [m[0] | 1, m[1], m[2], m[3]]; // never the all-zero key
        let tag_len = size.min(16);
        let body: Vec<u8> = (0..size - tag_len)
            .map(|_| {
                let r = rng.next();
                if binary {
                    r as u8
                } else {
                    b'a' + (r % 26) as u8
                }
            })
            .collect();
        let body_masked = body
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[(tag_len + i) & 3])
            .collect();
        Payloads {
            size,
            tag_len,
            opcode: if binary { OP_BINARY } else { OP_TEXT },
            mask,
            body,
            body_masked,
        }
    }

    fn tag(&self, seq: u64) -> [u8; 16] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut t = [0u8; 16];
        for (i, b) in t.iter_mut().enumerate() {
            *b = HEX[((seq >> (60 - 4 * i)) & 0xF) as usize];
        }
        t
    }

    /// Append the frame for message `seq` to `out`.
    fn put(&self, out: &mut Vec<u8>, seq: u64) {
        put_header(out, self.opcode, self.size, self.mask);
        let tag = self.tag(seq);
        let tag = &tag[16 - self.tag_len..];
        out.extend(tag.iter().enumerate().map(|(i, b)| b ^ self.mask[i & 3]));
        out.extend_from_slice(&self.body_masked);
    }

    /// Does `got` (with opcode `op`) equal message `seq`?
    fn verify(&self, op: u8, got: &[u8], seq: u64) -> bool {
        let tag = self.tag(seq);
        op == self.opcode
            && got.len() == self.size
            && got[..self.tag_len] == tag[16 - self.tag_len..]
            && got[self.tag_len..] == self.body[..]
    }
}

// ---------------------------------------------------------------------------
// Shared run state
// ---------------------------------------------------------------------------

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// Counters for one run; only the main task and connection tasks on the same
/// thread touch them (current_thread runtime + LocalSet), hence Rc/RefCell.
struct Stats {
    ops: u64,
    bytes: u64,
    /// Round trip (echo) or full connect+handshake+close cycle, nanoseconds.
    hist: Histogram<u64>,
    connect_errors: u64,
    verify_errors: u64,
    protocol_errors: u64,
    /// Connections that were up and exchanging messages.
    live_conns: u64,
}

impl Stats {
    fn new() -> Self {
        Stats {
            ops: 0,
            bytes: 0,
            hist: Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("histogram bounds"),
            connect_errors: 0,
            verify_errors: 0,
            protocol_errors: 0,
            live_conns: 0,
        }
    }
    fn errors(&self) -> u64 {
        self.connect_errors + self.verify_errors + self.protocol_errors
    }
}

struct Shared {
    phase: Cell<u8>,
    stats: RefCell<Stats>,
}

// ---------------------------------------------------------------------------
// echo mode
// ---------------------------------------------------------------------------

async fn echo_conn(id: usize, a: Rc<Args>, t: Rc<Target>, sh: Rc<Shared>) {
    let pl = Payloads::new(id, a.size, a.binary);
    let mut rb = ReadBuf::new((a.size + 16) * a.window.max(4) + 4096);
    let mut s = match tcp_connect(&t.addr, source_for(id)).await {
        Ok(s) => s,
        Err(_) => {
            sh.stats.borrow_mut().connect_errors += 1;
            return;
        }
    };
    if ws_handshake(&mut s, &t, id as u64, &mut rb).await.is_err() {
        sh.stats.borrow_mut().connect_errors += 1;
        return;
    }
    sh.stats.borrow_mut().live_conns += 1;

    let mut out: Vec<u8> = Vec::with_capacity((a.size + 14) * a.window);
    let mut msg: Vec<u8> = Vec::with_capacity(a.size);
    let mut frag = None;
    let mut sent_at: VecDeque<Instant> = VecDeque::with_capacity(a.window);
    let mut next_seq = 0u64;
    let mut expect_seq = 0u64;

    let now = Instant::now();
    for _ in 0..a.window {
        pl.put(&mut out, next_seq);
        next_seq += 1;
        sent_at.push_back(now);
    }
    if s.write_all(&out).await.is_err() {
        sh.stats.borrow_mut().protocol_errors += 1;
        return;
    }
    out.clear();

    'run: while sh.phase.get() != STOP {
        match rb.fill(&mut s, a.size + 4096).await {
            Ok(0) | Err(_) => {
                sh.stats.borrow_mut().protocol_errors += 1;
                return;
            }
            Ok(_) => {}
        }
        // One clock read per read batch: stamps both the replies just read and
        // the requests that answer them.
        let now = Instant::now();
        let phase = sh.phase.get();
        loop {
            let mut ok = false;
            let pulled = pull_message(&mut rb, &mut msg, &mut frag, |op, got| {
                ok = pl.verify(op, got, expect_seq);
            });
            match pulled {
                Ok(Pulled::Partial) => break,
                Ok(Pulled::Data) => {
                    expect_seq += 1;
                    let sent = sent_at.pop_front();
                    let mut st = sh.stats.borrow_mut();
                    if !ok || sent.is_none() {
                        st.verify_errors += 1;
                    } else if phase == MEASURE {
                        st.ops += 1;
                        st.bytes += a.size as u64;
                        let rtt = now.duration_since(sent.unwrap_or(now)).as_nanos() as u64;
                        st.hist.saturating_record(rtt.max(1));
                    }
                    drop(st);
                    if phase != STOP {
                        pl.put(&mut out, next_seq);
                        next_seq += 1;
                        sent_at.push_back(now);
                    }
                }
                Ok(Pulled::Control { opcode: OP_CLOSE }) => {
                    sh.stats.borrow_mut().protocol_errors += 1;
                    return;
                }
                Ok(Pulled::Control { .. }) => {} // ping/pong: not expected, harmless
                Err(_) => {
                    sh.stats.borrow_mut().protocol_errors += 1;
                    return;
                }
            }
        }
        if !out.is_empty() {
            if s.write_all(&out).await.is_err() {
                sh.stats.borrow_mut().protocol_errors += 1;
                break 'run;
            }
            out.clear();
        }
    }
    // Orderly close; outstanding echoes are drained and ignored.
    let _ = tokio::time::timeout(Duration::from_secs(2), ws_close(&mut s, &mut rb, pl.mask)).await;
}

// ---------------------------------------------------------------------------
// connect mode
// ---------------------------------------------------------------------------

async fn connect_worker(w: usize, t: Rc<Target>, sh: Rc<Shared>) {
    let mut rb = ReadBuf::new(4096);
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut n = 0u64;
    while sh.phase.get() != STOP {
        let started = Instant::now();
        rb.data.clear();
        rb.start = 0;
        let cycle = async {
            let mut s = tcp_connect(&t.addr, None).await.map_err(|_| true)?;
            ws_handshake(&mut s, &t, (w as u64) << 40 | n, &mut rb)
                .await
                .map_err(|_| true)?;
            ws_close(&mut s, &mut rb, mask).await.map_err(|_| false)?;
            Ok::<(), bool>(())
        };
        let res = tokio::time::timeout(Duration::from_secs(5), cycle).await;
        n += 1;
        let failed = {
            let mut st = sh.stats.borrow_mut();
            match res {
                Ok(Ok(())) => {
                    // Count the cycles that complete inside the measured window.
                    if sh.phase.get() == MEASURE {
                        st.ops += 1;
                        let ns = started.elapsed().as_nanos() as u64;
                        st.hist.saturating_record(ns.max(1));
                    }
                    false
                }
                Ok(Err(true)) => {
                    st.connect_errors += 1;
                    true
                }
                Ok(Err(false)) | Err(_) => {
                    st.protocol_errors += 1;
                    true
                }
            }
        };
        if failed {
            // Back off a little on failure so a dead server is not hammered.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

// ---------------------------------------------------------------------------
// idle mode
// ---------------------------------------------------------------------------

/// Open one connection, prove it alive with one echoed message, return it.
async fn idle_open(i: usize, t: Rc<Target>) -> Result<TcpStream, bool> {
    let mut rb = ReadBuf::new(256);
    let mut s = tcp_connect(&t.addr, source_for(i))
        .await
        .map_err(|_| true)?;
    ws_handshake(&mut s, &t, i as u64, &mut rb)
        .await
        .map_err(|_| true)?;
    let pl = Payloads::new(i, 32, false);
    let mut out = Vec::with_capacity(64);
    pl.put(&mut out, i as u64);
    s.write_all(&out).await.map_err(|_| false)?;
    let mut msg = Vec::new();
    let mut frag = None;
    loop {
        let mut ok = false;
        let pulled = pull_message(&mut rb, &mut msg, &mut frag, |op, got| {
            ok = pl.verify(op, got, i as u64)
        });
        match pulled.map_err(|_| false)? {
            Pulled::Data => return if ok { Ok(s) } else { Err(false) },
            Pulled::Control { opcode: OP_CLOSE } => return Err(false),
            Pulled::Control { .. } => continue,
            Pulled::Partial => {}
        }
        if rb.fill(&mut s, 256).await.map_err(|_| false)? == 0 {
            return Err(false);
        }
    }
}

// ---------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("loadgen: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let t = match parse_url(&a.url) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    let nofile = raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = LocalSet::new();
    let mut result = Map::new();
    for (k, v) in &a.meta {
        result.insert(k.clone(), Value::String(v.clone()));
    }
    result.insert("url".into(), json!(a.url));
    result.insert("nofile".into(), json!(nofile));
    let a = Rc::new(a);
    let t = Rc::new(t);
    let ok = local.block_on(&rt, async {
        match a.mode {
            Mode::Echo | Mode::Connect => run_timed(a.clone(), t.clone(), &mut result).await,
            Mode::Idle => run_idle(a.clone(), t.clone(), &mut result).await,
        }
    });
    println!("RESULT {}", Value::Object(result));
    std::process::exit(if ok { 0 } else { 1 });
}

/// echo and connect: warm-up, then a measured window of `-d` seconds.
async fn run_timed(a: Rc<Args>, t: Rc<Target>, result: &mut Map<String, Value>) -> bool {
    let sh = Rc::new(Shared {
        phase: Cell::new(WARMUP),
        stats: RefCell::new(Stats::new()),
    });
    let mut tasks = Vec::new();
    match a.mode {
        Mode::Echo => {
            println!(
                "echo: {} conns x {} in flight, {} B {} payloads, {}s after {}s warm-up -> {}",
                a.conns,
                a.window,
                a.size,
                if a.binary { "binary" } else { "text" },
                a.duration,
                a.warmup,
                a.url
            );
            for id in 0..a.conns {
                tasks.push(tokio::task::spawn_local(echo_conn(
                    id,
                    a.clone(),
                    t.clone(),
                    sh.clone(),
                )));
            }
        }
        _ => {
            println!(
                "connect: {} workers, handshake+close cycles, {}s after {}s warm-up -> {}",
                a.workers, a.duration, a.warmup, a.url
            );
            for w in 0..a.workers {
                tasks.push(tokio::task::spawn_local(connect_worker(
                    w,
                    t.clone(),
                    sh.clone(),
                )));
            }
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(a.warmup)).await;
    if a.callgrind {
        callgrind_control(a.server_pid, "-z");
    }
    let s0 = Snapshot::take(a.server_pid);
    sh.phase.set(MEASURE);
    tokio::time::sleep(Duration::from_secs_f64(a.duration)).await;
    sh.phase.set(STOP);
    let s1 = Snapshot::take(a.server_pid);
    if a.callgrind {
        callgrind_control(a.server_pid, "-d");
    }
    // Let connections close cleanly, but never wait for long.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        for h in tasks.iter_mut() {
            let _ = h.await;
        }
    })
    .await;
    for h in &tasks {
        h.abort();
    }

    let st = sh.stats.borrow();
    let secs = s1.at.duration_since(s0.at).as_secs_f64();
    let rate = st.ops as f64 / secs;
    let per_op = |cpu: u64| {
        if st.ops > 0 {
            cpu as f64 / st.ops as f64
        } else {
            f64::NAN
        }
    };
    let lg_cpu = s1.self_cpu.saturating_sub(s0.self_cpu);
    let srv_cpu = match (s0.server_cpu, s1.server_cpu) {
        (Some(x), Some(y)) => Some(y.saturating_sub(x)),
        _ => None,
    };
    let (p50, p99, p999, max) = if !st.hist.is_empty() {
        (
            us(st.hist.value_at_quantile(0.50)),
            us(st.hist.value_at_quantile(0.99)),
            us(st.hist.value_at_quantile(0.999)),
            us(st.hist.max()),
        )
    } else {
        (f64::NAN, f64::NAN, f64::NAN, f64::NAN)
    };
    let mode = if a.mode == Mode::Echo {
        "echo"
    } else {
        "connect"
    };
    result.insert("mode".into(), json!(mode));
    result.insert("duration_s".into(), json!(secs));
    result.insert("warmup_s".into(), json!(a.warmup));
    result.insert("errors".into(), json!(st.errors()));
    result.insert("connect_errors".into(), json!(st.connect_errors));
    result.insert("verify_errors".into(), json!(st.verify_errors));
    result.insert("protocol_errors".into(), json!(st.protocol_errors));
    result.insert("loadgen_cpu_s".into(), json!(lg_cpu as f64 / 1e6));
    result.insert("loadgen_cpu_util".into(), json!(lg_cpu as f64 / 1e6 / secs));
    result.insert(
        "server_cpu_s".into(),
        json!(srv_cpu.map(|c| c as f64 / 1e6)),
    );
    result.insert(
        "server_cpu_util".into(),
        json!(srv_cpu.map(|c| c as f64 / 1e6 / secs)),
    );
    let f = |x: f64| if x.is_finite() { json!(x) } else { Value::Null };
    if a.mode == Mode::Echo {
        let mbps = st.bytes as f64 / secs / 1e6;
        result.insert("conns".into(), json!(a.conns));
        result.insert("live_conns".into(), json!(st.live_conns));
        result.insert("window".into(), json!(a.window));
        result.insert("size".into(), json!(a.size));
        result.insert("binary".into(), json!(a.binary));
        result.insert("messages".into(), json!(st.ops));
        result.insert("msgs_per_s".into(), json!(rate));
        result.insert("mb_per_s".into(), json!(mbps));
        result.insert("rtt_p50_us".into(), f(p50));
        result.insert("rtt_p99_us".into(), f(p99));
        result.insert("rtt_p999_us".into(), f(p999));
        result.insert("rtt_max_us".into(), f(max));
        result.insert("loadgen_cpu_us_per_msg".into(), f(per_op(lg_cpu)));
        result.insert(
            "server_cpu_us_per_msg".into(),
            json!(srv_cpu.map(&per_op).filter(|x| x.is_finite())),
        );
        if let (Some(c0), Some(c1)) = (s0.server_counters, s1.server_counters) {
            let c = c1.since(c0);
            let per = |x: u64| f(per_op(x));
            result.insert("server_user_us_per_msg".into(), per(c.user_us));
            result.insert("server_sys_us_per_msg".into(), per(c.sys_us));
            result.insert("server_read_calls_per_msg".into(), per(c.syscr));
            result.insert("server_write_calls_per_msg".into(), per(c.syscw));
            result.insert("server_read_bytes_per_msg".into(), per(c.rchar));
            result.insert("server_write_bytes_per_msg".into(), per(c.wchar));
            println!(
                "  server per message: user {:.2} us, system {:.2} us, {:.3} read calls, {:.3} write calls",
                per_op(c.user_us),
                per_op(c.sys_us),
                per_op(c.syscr),
                per_op(c.syscw)
            );
        }
        println!(
            "  {:.0} msg/s  {:.2} MB/s (payload, one direction)  messages {}  live conns {}/{}",
            rate, mbps, st.ops, st.live_conns, a.conns
        );
        println!("  RTT p50 {p50:.1} us  p99 {p99:.1} us  p99.9 {p999:.1} us  max {max:.1} us");
    } else {
        result.insert("workers".into(), json!(a.workers));
        result.insert("handshakes".into(), json!(st.ops));
        result.insert("handshakes_per_s".into(), json!(rate));
        result.insert("cycle_p50_us".into(), f(p50));
        result.insert("cycle_p99_us".into(), f(p99));
        result.insert("loadgen_cpu_us_per_handshake".into(), f(per_op(lg_cpu)));
        result.insert(
            "server_cpu_us_per_handshake".into(),
            json!(srv_cpu.map(&per_op).filter(|x| x.is_finite())),
        );
        // User space and kernel apart: the handshake cycle is mostly system
        // calls, so the split says where a difference in CPU comes from.
        if let (Some(c0), Some(c1)) = (s0.server_counters, s1.server_counters) {
            let c = c1.since(c0);
            let per = |x: u64| f(per_op(x));
            result.insert("server_user_us_per_handshake".into(), per(c.user_us));
            result.insert("server_sys_us_per_handshake".into(), per(c.sys_us));
        }
        println!("  {:.0} handshakes/s  ({} completed)", rate, st.ops);
        println!("  cycle (connect+handshake+close) p50 {p50:.1} us  p99 {p99:.1} us");
    }
    println!(
        "  errors {} (connect {}, verify {}, protocol {})",
        st.errors(),
        st.connect_errors,
        st.verify_errors,
        st.protocol_errors
    );
    println!(
        "  loadgen CPU {:.2} s ({:.0}% of a core, {:.3} us/op)",
        lg_cpu as f64 / 1e6,
        100.0 * lg_cpu as f64 / 1e6 / secs,
        per_op(lg_cpu)
    );
    if let Some(c) = srv_cpu {
        println!(
            "  server CPU {:.2} s ({:.0}% of a core, {:.3} us/op)",
            c as f64 / 1e6,
            100.0 * c as f64 / 1e6 / secs,
            per_op(c)
        );
    }
    st.ops > 0 && st.errors() == 0
}

/// idle: open N connections, prove each alive, measure server RSS per connection.
async fn run_idle(a: Rc<Args>, t: Rc<Target>, result: &mut Map<String, Value>) -> bool {
    println!(
        "idle: opening {} connections ({} at a time) -> {}",
        a.idle_n, a.parallel, a.url
    );
    // Let the server settle before the baseline RSS sample.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss0 = a.server_pid.and_then(proc_rss_kib);
    let s0 = Snapshot::take(a.server_pid);
    let mut held: Vec<TcpStream> = Vec::with_capacity(a.idle_n);
    let (mut connect_errors, mut echo_errors) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut next = 0usize;
    while next < a.idle_n && Instant::now() < deadline {
        let end = (next + a.parallel).min(a.idle_n);
        let batch: Vec<_> = (next..end)
            .map(|i| tokio::task::spawn_local(idle_open(i, t.clone())))
            .collect();
        for h in batch {
            match tokio::time::timeout(Duration::from_secs(10), h).await {
                Ok(Ok(Ok(s))) => held.push(s),
                Ok(Ok(Err(true))) => connect_errors += 1,
                _ => echo_errors += 1,
            }
        }
        next = end;
    }
    let s1 = Snapshot::take(a.server_pid);
    let open_secs = s1.at.duration_since(s0.at).as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = a.server_pid.and_then(proc_rss_kib);
    let n = held.len();
    let per_conn = match (rss0, rss1) {
        (Some(x), Some(y)) if n > 0 => Some((y as f64 - x as f64) / n as f64),
        _ => None,
    };
    if a.hold > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(a.hold)).await;
    }
    // Are they all still there? A server that dropped idle sockets shows EOF.
    let mut lost = 0u64;
    for s in &held {
        let mut b = [0u8; 1];
        match s.try_read(&mut b) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            _ => lost += 1,
        }
    }
    drop(held);
    let srv_cpu = match (s0.server_cpu, s1.server_cpu) {
        (Some(x), Some(y)) => Some(y.saturating_sub(x)),
        _ => None,
    };
    let errors = connect_errors + echo_errors + lost;
    result.insert("mode".into(), json!("idle"));
    result.insert("requested".into(), json!(a.idle_n));
    result.insert("established".into(), json!(n));
    result.insert("errors".into(), json!(errors));
    result.insert("connect_errors".into(), json!(connect_errors));
    result.insert("verify_errors".into(), json!(echo_errors));
    result.insert("lost".into(), json!(lost));
    result.insert("open_s".into(), json!(open_secs));
    result.insert("server_rss_before_kib".into(), json!(rss0));
    result.insert("server_rss_after_kib".into(), json!(rss1));
    result.insert("rss_kib_per_conn".into(), json!(per_conn));
    result.insert(
        "server_cpu_us_per_conn".into(),
        json!(srv_cpu.filter(|_| n > 0).map(|c| c as f64 / n as f64)),
    );
    println!(
        "  established {n}/{} in {open_secs:.2} s; errors {errors} (connect {connect_errors}, echo {echo_errors}, lost {lost})",
        a.idle_n
    );
    match (rss0, rss1, per_conn) {
        (Some(x), Some(y), Some(p)) => {
            println!("  server RSS {x} KiB -> {y} KiB: {p:.2} KiB per connection")
        }
        _ => println!("  server RSS not measured (give --server-pid)"),
    }
    n > 0 && errors == 0
}
