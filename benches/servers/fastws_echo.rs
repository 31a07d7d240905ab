//! Baseline: fastwebsockets echo server (hyper 1 handles the HTTP upgrade).
//!
//! Each frame is written back with `write_frame`, which writes it to the
//! socket straight away (fastwebsockets has no write buffer to combine into).
//! `FragmentCollector` reassembles fragmented messages and answers ping/close.
//!
//! Runtime: tokio current_thread (the benchmark pins the server to one core),
//! same as every other server of the benchmark matrix.
//!
//! Usage: bench_fastws HOST:PORT

use fastwebsockets::{upgrade, FragmentCollector, OpCode, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};

#[path = "common.rs"]
mod common;

async fn echo(pending: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = FragmentCollector::new(pending.await?);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            OpCode::Close => return Ok(()),
            _ => {}
        }
    }
}

async fn on_request(mut req: Request<Incoming>) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (resp, pending) = upgrade::upgrade(&mut req)?;
    tokio::spawn(async move {
        let _ = echo(pending).await;
    });
    Ok(resp)
}

fn main() {
    common::serve_forever("bench_fastws", |stream| async move {
        let io = hyper_util::rt::TokioIo::new(stream);
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, hyper::service::service_fn(on_request))
            .with_upgrades()
            .await;
    });
}
