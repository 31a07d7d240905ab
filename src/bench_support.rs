//! Entry points for the micro-benchmarks in `benches/micro.rs` (feature
//! `fuzzing`). Not a public API: nothing here is stable.
//!
//! Each function is a thin wrapper that reaches one internal step of the
//! per-connection or per-message path, so that a benchmark measures squall's
//! own code (router, head parser, handshake checks, wire conversion) rather
//! than a re-implementation of it.

use bytes::BytesMut;

use crate::front::http1::parse_head;
use crate::handler::WebSocketHandler;
use crate::handshake::{negotiate, switching_protocols, Via};
use crate::message::Message;
use crate::request::PathParams;
use crate::router::{Route, Router};
use crate::websocket::WebSocket;

/// A handler with every default (origin check, no subprotocol).
struct Plain;

impl WebSocketHandler for Plain {
    async fn on_message(&mut self, _ws: &WebSocket, _msg: Message) {}
}

/// squall's route table, filled with WebSocket routes.
pub struct BenchRouter(Router);

impl BenchRouter {
    /// A router with one WebSocket route per path (matchit syntax:
    /// `/chat/{room}`, `/{*rest}`). Panics on a conflicting path.
    pub fn new(paths: &[&str]) -> Self {
        let mut router = Router::default();
        for path in paths {
            router.insert(path, Route::websocket(path, || Plain));
        }
        BenchRouter(router)
    }

    /// What the server does with a request path: match it and collect the
    /// percent-decoded parameters. `None` if nothing matches (404).
    pub fn at(&self, path: &str) -> Option<PathParams> {
        self.0.at(path).map(|(_route, params)| params)
    }
}

/// One request head, as the server reads it into its buffer: parse it
/// (`front/http1.rs`'s `parse_head`), run the upgrade checks (`handshake::negotiate`,
/// default handler) and build the 101 response bytes
/// (`handshake::switching_protocols`). `None` if the head is incomplete or
/// refused.
pub fn handshake_response(head: &[u8]) -> Option<Vec<u8>> {
    let mut buf = BytesMut::from(head);
    let request = parse_head(&mut buf, 64 * 1024).ok()??;
    let accepted = negotiate(&request, &Plain, Via::Http1).ok()?;
    Some(switching_protocols(&accepted))
}

/// A message converted to the form the connection's send queue holds, as a
/// broadcast does once before cloning it for every receiver.
pub fn to_wire(message: Message) -> tungstenite::Message {
    message.into_tungstenite()
}
