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
use tokio::net::TcpListener;

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
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_string());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await.expect("bind");
        eprintln!("bench_fastws listening on {addr}");
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, hyper::service::service_fn(on_request))
                    .with_upgrades()
                    .await;
            });
        }
    });
}
