//! Entry points for the fuzz targets in `fuzz/` and their corpus replay
//! (feature `fuzzing`). Not a public API: nothing here is stable.
//!
//! - [`request_head`]: bytes → request head parser → router → handshake
//!   checks → the response bytes the server would write.
//! - [`frame_input`]: bytes as the client's side of an open WebSocket,
//!   through the real connection engine (`engine::run`) over an in-memory
//!   duplex stream, with an echoing handler. Every input must end the
//!   connection (the input ends with EOF) within a bound: a hang panics.
//!   Each input runs twice: on a plain connection, and on one with
//!   permessage-deflate agreed (parameters picked from the input's length),
//!   so the inflating reader below tungstenite sees every input too.
//! - [`frame_reader()`]: bytes as a client's frames, read by squall's frame
//!   reader and by tungstenite alone; both must see the same
//!   (`fuzzing/frame_reader.rs`). [`frame_reader_client()`]: the same for a
//!   server's frames read the client's way.

mod frame_reader;

pub use frame_reader::{frame_reader, frame_reader_client};

use std::sync::OnceLock;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::application::Application;
use crate::deflate::{Agreed, Side};
use crate::engine::{self, Agreements};
use crate::front::head_rules::check_head;
use crate::front::http1::{encode_response, parse_head, HeadError};
use crate::handler::WebSocketHandler;
use crate::handshake::{negotiate, switching_protocols, Via};
use crate::message::Message;
use crate::request::TrustedOrigins;
use crate::response::text_response;
use crate::router::Route;
use crate::runtime::Runtime;
use crate::stream::Stream;
use crate::websocket::WebSocket;

/// Echoes messages, picks the first subprotocol offered, trusts one origin.
struct FuzzHandler;

impl WebSocketHandler for FuzzHandler {
    async fn on_message(&mut self, ws: &WebSocket, msg: Message) {
        if msg.as_text() == Some("close") {
            ws.close(1000, "asked");
            return;
        }
        ws.write_message(msg).await.ok();
    }

    fn select_subprotocol(&self, offered: &[&str]) -> Option<String> {
        offered.first().map(|p| p.to_string())
    }
}

const MAX_HEAD: usize = 4096;
const MAX_MESSAGE: usize = 64 * 1024;

fn app() -> &'static Runtime {
    static APP: OnceLock<Runtime> = OnceLock::new();
    APP.get_or_init(|| {
        Application::new()
            .websocket("/socket/", || FuzzHandler)
            .websocket("/chat/{room}", || FuzzHandler)
            .page("/", "<h1>page</h1>")
            .trusted_origins(["https://trusted.example"])
            .websocket_max_message_size(MAX_MESSAGE)
            .websocket_close_timeout(Duration::from_millis(50))
            .into_runtime()
    })
}

/// Parses `data` as a request head, routes it and answers as the server
/// would; returns the response bytes (empty when more bytes are needed).
pub fn request_head(data: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::from(data);
    let mut request = match parse_head(&mut buf, MAX_HEAD) {
        Ok(Some(request)) => request,
        Ok(None) | Err(HeadError::Gone) => return Vec::new(),
        Err(HeadError::TooLarge) => {
            return encode_response(
                text_response(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, ""),
                false,
                false,
            )
        }
        Err(HeadError::Malformed) => {
            return encode_response(text_response(StatusCode::BAD_REQUEST, ""), false, false)
        }
    };
    if let Err(rule) = check_head(&request) {
        return encode_response(rule.response(), false, false);
    }
    let app = app();
    let Some((route, params)) = app.router().at(request.uri().path()) else {
        return encode_response(text_response(StatusCode::NOT_FOUND, ""), false, false);
    };
    params.store_in(&mut request);
    TrustedOrigins::store_in(&app.settings().trusted_origins, &mut request);
    match route {
        Route::Page(_) => encode_response(
            text_response(StatusCode::OK, Bytes::new()),
            request.method() == http::Method::HEAD,
            true,
        ),
        Route::WebSocket(_) => match negotiate(&request, &FuzzHandler, Via::Http1) {
            Ok(accepted) => switching_protocols(&accepted),
            Err(error) => encode_response(error.response(), false, false),
        },
    }
}

/// Runs `data` as everything a client sends on an open WebSocket, then EOF,
/// through the connection task; reads and discards what the server writes.
///
/// # Panics
///
/// If the connection does not finish within a few seconds (a hang), or the
/// library panics.
pub fn frame_input(data: &[u8]) {
    run_frames(data, None);
    let side = |no_context_takeover, max_window_bits| Side {
        no_context_takeover,
        max_window_bits,
    };
    let agreed = match data.len() % 4 {
        0 => Agreed {
            ours: side(false, 15),
            theirs: side(false, 15),
            level: 6,
            mem_level: 8,
        },
        1 => Agreed {
            ours: side(true, 9),
            theirs: side(true, 9),
            level: 1,
            mem_level: 1,
        },
        2 => Agreed {
            ours: side(false, 8),
            theirs: side(true, 15),
            level: 9,
            mem_level: 4,
        },
        _ => Agreed {
            ours: side(true, 15),
            theirs: side(false, 10),
            level: 0,
            mem_level: 9,
        },
    };
    run_frames(data, Some(agreed));
}

fn run_frames(data: &[u8], deflate: Option<Agreed>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let app = app().clone();
        let (client, server) = tokio::io::duplex(16 * 1024);
        let request = http::Request::get("/socket/").body(()).expect("request");
        let route = crate::telemetry::RouteTelemetry::new("/socket/");
        let agreements = Agreements {
            subprotocol: None,
            deflate,
        };
        let (context, io) = engine::establish(
            Stream::duplex(server),
            BytesMut::new(),
            request,
            agreements,
            app.env(),
            &route,
        );
        let connection = engine::run(FuzzHandler, context, io, "/socket/");

        let (mut from_server, mut to_server) = tokio::io::split(client);
        let peer = async move {
            let write = async {
                let _ = to_server.write_all(data).await;
                let _ = to_server.shutdown().await;
            };
            let read = async {
                let mut sink = vec![0u8; 16 * 1024];
                while let Ok(n) = from_server.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            };
            tokio::join!(write, read);
        };
        tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(connection, peer);
        })
        .await
        .expect("the connection did not finish after the input ended");
    });
}
