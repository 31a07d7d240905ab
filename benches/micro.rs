//! criterion micro-benchmarks of the steps that end-to-end echo numbers
//! cannot separate. Internal functions are reached through the hidden
//! `squall::bench_support` module (feature `fuzzing`), so each benchmark runs
//! squall's own code, not a copy of it.
//!
//! ```text
//! cargo bench --bench micro --features fuzzing -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! What each group measures:
//!
//! - `route/*`: one request path looked up in squall's `Router` holding 20
//!   routes (static paths, `/chat/{room}`, other parameters, and the
//!   catch-all `/{*rest}`), including collecting the percent-decoded path
//!   parameters into `PathParams` (what the server does once per request).
//!   `static` hits a fixed path, `param` hits `/chat/{room}`, `param_pct`
//!   the same with a percent-encoded room name, `catch_all` falls through to
//!   `/{*rest}`.
//! - `handshake/browser_101`: a typical browser upgrade head (Chrome-like
//!   headers, 500 bytes) copied into a read buffer, parsed
//!   (`http1::parse_head`), checked (`handshake::negotiate`, same-origin
//!   request, default handler) and answered (`switching_protocols`) as bytes.
//!   No socket, no routing.
//! - `json/*`: building a message from a value: `Message::json(&struct)`
//!   (serde derive, 5 fields) and `Message::from(serde_json::json!(...))`
//!   (building the `Value` tree is part of what is measured, as in a handler
//!   that writes `json!` inline).
//! - `broadcast/*/N`: preparing one message for N receivers. `shared` converts
//!   the message to the wire form once and clones it N times (what
//!   `Groups::deliver` does: each clone is a reference-count increment);
//!   `per_receiver` builds N messages from the same `&str` (a copy and an
//!   allocation each), as a loop of `sender.send(text.as_str())` would. The
//!   N wire messages are collected into a pre-sized `Vec` in both cases and
//!   dropped outside the timing.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use serde::Serialize;
use squall::bench_support::{handshake_response, to_wire, BenchRouter};
use squall::Message;

const ROUTES: [&str; 20] = [
    "/",
    "/socket/",
    "/chat/{room}",
    "/chat/{room}/history",
    "/users/{id}",
    "/users/{id}/events",
    "/feed",
    "/feed/live",
    "/ticker/{symbol}",
    "/game/{id}/spectate",
    "/notifications",
    "/metrics/ws",
    "/admin/console",
    "/api/v1/stream",
    "/api/v1/stream/{topic}",
    "/api/v2/stream/{topic}",
    "/echo",
    "/health",
    "/static/{*file}",
    "/{*rest}",
];

fn routing(c: &mut Criterion) {
    let router = BenchRouter::new(&ROUTES);
    let mut group = c.benchmark_group("route");
    for (name, path) in [
        ("static", "/api/v1/stream"),
        ("param", "/chat/lobby"),
        ("param_pct", "/chat/caf%C3%A9%20corner"),
        ("catch_all", "/some/unknown/path"),
    ] {
        assert!(router.at(path).is_some(), "{path} must match");
        group.bench_function(name, |b| b.iter(|| router.at(black_box(path))));
    }
    group.finish();
}

/// What Chrome sends to open `ws://127.0.0.1:8888/chat/lobby` from a page on
/// the same origin.
const BROWSER_HEAD: &[u8] = b"GET /chat/lobby HTTP/1.1\r\n\
Host: 127.0.0.1:8888\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: http://127.0.0.1:8888\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Cookie: session=2f1c9a7e5b3d4e6f8a0b1c2d3e4f5a6b\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
\r\n";

fn handshake(c: &mut Criterion) {
    let response = handshake_response(BROWSER_HEAD).expect("the head is accepted");
    assert!(response.starts_with(b"HTTP/1.1 101 "));
    c.bench_function("handshake/browser_101", |b| {
        b.iter(|| handshake_response(black_box(BROWSER_HEAD)))
    });
}

#[derive(Serialize)]
struct ChatLine<'a> {
    kind: &'a str,
    room: &'a str,
    user: &'a str,
    text: &'a str,
    seq: u64,
}

fn json(c: &mut Criterion) {
    let line = ChatLine {
        kind: "message",
        room: "lobby",
        user: "alice",
        text: "hello, world",
        seq: 42,
    };
    let mut group = c.benchmark_group("json");
    group.bench_function("message_json_struct", |b| {
        b.iter(|| Message::json(black_box(&line)).expect("serialises"))
    });
    group.bench_function("message_from_json_macro", |b| {
        b.iter(|| {
            Message::from(serde_json::json!({
                "kind": "message",
                "room": black_box("lobby"),
                "user": "alice",
                "text": "hello, world",
                "seq": black_box(42u64),
            }))
        })
    });
    group.finish();
}

fn broadcast(c: &mut Criterion) {
    let text = serde_json::json!({
        "kind": "message",
        "room": "lobby",
        "user": "alice",
        "text": "hello, everyone in the room",
        "seq": 42,
    })
    .to_string();
    let mut group = c.benchmark_group("broadcast");
    for n in [10usize, 1000] {
        group.bench_with_input(BenchmarkId::new("shared", n), &n, |b, &n| {
            b.iter_batched_ref(
                || Vec::with_capacity(n),
                |out| {
                    let wire = to_wire(Message::from(black_box(text.as_str())));
                    for _ in 0..n {
                        out.push(wire.clone());
                    }
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_with_input(BenchmarkId::new("per_receiver", n), &n, |b, &n| {
            b.iter_batched_ref(
                || Vec::with_capacity(n),
                |out| {
                    for _ in 0..n {
                        out.push(to_wire(Message::from(black_box(text.as_str()))));
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, routing, handshake, json, broadcast);
criterion_main!(benches);
