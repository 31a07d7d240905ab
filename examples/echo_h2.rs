//! The echo demo over HTTPS with HTTP/2, through hyper and squall's tower
//! `Service` (features `hyper` and `tls`): a browser that loads the page
//! over HTTP/2 may open the socket as an RFC 8441 extended CONNECT on the
//! same connection, and the access line then ends with `HTTP/2`.
//!
//! A self-signed certificate for `localhost` and `127.0.0.1` is made at
//! start; browsers must be told to accept it (Chromium:
//! `--ignore-certificate-errors`).
//!
//! ```text
//! cargo run --example echo_h2 --features hyper,tls    # https://127.0.0.1:8443/
//! ```

use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use squall::prelude::*;

struct EchoWebSocket;

impl WebSocketHandler for EchoWebSocket {
    async fn on_message(&mut self, ws: &WebSocket, message: Message) {
        let reply = match message {
            Message::Text(text) => Message::from(format!("You said: {text}")),
            binary @ Message::Binary(_) => binary,
        };
        ws.write_message(reply).await.ok();
    }

    fn check_origin(&self, _origin: &str, _request: &squall::http::Request<()>) -> bool {
        true
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8443".to_owned());

    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .map_err(std::io::Error::other)?;
    let mut tls = (*squall::tls_config_from_pem(
        cert.cert.pem().as_bytes(),
        cert.signing_key.serialize_pem().as_bytes(),
    )?)
    .clone();
    // HTTP/2 first, so that browsers use it (and extended CONNECT) when
    // they can.
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    let service = Application::new()
        .page("/", include_str!("echo/web.html"))
        .websocket("/socket/", || EchoWebSocket)
        .into_service();
    let handle = service.handle();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("listening on https://{}/", listener.local_addr()?);
    let accept = async {
        loop {
            let (tcp, remote) = listener.accept().await?;
            let acceptor = acceptor.clone();
            let service = service.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                // Every request carries the client's address, for the access
                // line and `remote_addr()`.
                let service = hyper::service::service_fn(
                    move |mut request: hyper::Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(squall::RemoteAddr(remote));
                        tower_service::Service::call(&mut service.clone(), request)
                    },
                );
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http2().enable_connect_protocol();
                let _ = builder
                    .serve_connection_with_upgrades(TokioIo::new(tls), service)
                    .await;
            });
        }
    };
    tokio::select! {
        result = accept => result,
        () = squall::shutdown_signal() => {
            handle.shutdown();
            handle.stopped().await;
            Ok(())
        }
    }
}
