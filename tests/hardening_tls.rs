//! wss:// through the `tls` feature, with a certificate made at test time.

#![cfg(feature = "tls")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{send_until_full, Upgrade};
use squall::testing::{assert_closed_with, next_text, within};
use squall::{Application, ConnectOptions, Message, OverflowPolicy, WebSocket, WebSocketHandler};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_rustls::rustls;

struct Echo {
    closed: mpsc::UnboundedSender<()>,
    senders: mpsc::UnboundedSender<squall::WebSocketSender>,
}

impl WebSocketHandler for Echo {
    async fn open(&mut self, ws: &WebSocket) {
        let _ = self.senders.send(ws.sender());
    }
    async fn on_message(&mut self, ws: &WebSocket, msg: Message) {
        ws.write_message(msg).await.ok();
    }
    async fn on_close(&mut self, _ws: &WebSocket) {
        let _ = self.closed.send(());
    }
}

struct Fixture {
    port: u16,
    handle: squall::Handle,
    running: tokio::task::JoinHandle<std::io::Result<()>>,
    cert_der: rustls::pki_types::CertificateDer<'static>,
    closed: mpsc::UnboundedReceiver<()>,
    senders: mpsc::UnboundedReceiver<squall::WebSocketSender>,
}

async fn start(app: Application) -> Fixture {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("certificate");
    let config = squall::tls_config_from_pem(
        cert.cert.pem().as_bytes(),
        cert.signing_key.serialize_pem().as_bytes(),
    )
    .expect("server TLS config");
    let (closed_tx, closed) = mpsc::unbounded_channel();
    let (senders_tx, senders) = mpsc::unbounded_channel();
    let app = app.websocket("/ws", move || Echo {
        closed: closed_tx.clone(),
        senders: senders_tx.clone(),
    });
    let handle = app.handle();
    let server = app.bind("127.0.0.1:0").await.unwrap();
    let port = server.local_addr().unwrap().port();
    let running = tokio::spawn(server.run_tls(config));
    Fixture {
        port,
        handle,
        running,
        cert_der: cert.cert.der().clone(),
        closed,
        senders,
    }
}

fn client_config(cert: &rustls::pki_types::CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[tokio::test]
async fn wss_echo_with_a_generated_certificate() {
    let mut fx = start(Application::new()).await;
    let mut client = within(
        "wss connect",
        ConnectOptions::new()
            .tls_config(client_config(&fx.cert_der))
            .connect(&format!("wss://localhost:{}/ws", fx.port)),
    )
    .await
    .expect("wss connect");
    client.send("over tls").await.unwrap();
    assert_eq!(next_text(&mut client).await, "over tls");
    client.send(vec![1u8, 2, 3]).await.unwrap();
    assert_eq!(
        squall::testing::next_message(&mut client).await,
        Message::Binary(vec![1u8, 2, 3].into())
    );

    // Graceful shutdown works over TLS too.
    fx.handle.shutdown();
    assert_closed_with(&mut client, 1001).await;
    within("on_close", fx.closed.recv()).await.unwrap();
    within("the server", fx.running).await.unwrap().unwrap();
}

/// A client that does not trust the certificate cannot connect, and a plain
/// ws:// client on the TLS port is refused; the server keeps serving.
#[tokio::test]
async fn untrusted_and_plaintext_clients_are_refused() {
    let fx = start(Application::new().request_head_timeout(Duration::from_millis(500))).await;
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let untrusted = ConnectOptions::new()
        .tls_config(client_config(other.cert.der()))
        .connect(&format!("wss://localhost:{}/ws", fx.port))
        .await;
    assert!(untrusted.is_err());
    let plain = squall::connect(&format!("ws://127.0.0.1:{}/ws", fx.port)).await;
    assert!(plain.is_err());
    let mut client = ConnectOptions::new()
        .tls_config(client_config(&fx.cert_der))
        .connect(&format!("wss://localhost:{}/ws", fx.port))
        .await
        .unwrap();
    client.send("still serving").await.unwrap();
    assert_eq!(next_text(&mut client).await, "still serving");
    client.close(1000, "").await;
    fx.handle.shutdown();
    within("the server", fx.running).await.unwrap().unwrap();
}

/// A wss:// client that completes the handshake and then never reads: the
/// overflow policy closes it, and the server drops it after the close
/// timeout even though TLS's close_notify cannot be written either.
#[tokio::test]
async fn never_reading_tls_client_is_dropped() {
    let mut fx = start(
        Application::new()
            .websocket_overflow(OverflowPolicy::Close(1008))
            .websocket_close_timeout(Duration::from_millis(300)),
    )
    .await;
    let connector = tokio_rustls::TlsConnector::from(client_config(&fx.cert_der));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", fx.port))
        .await
        .unwrap();
    let mut tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], fx.port));
    tls.write_all(&Upgrade::new(addr, "/ws").to_bytes())
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let sender = within("open", fx.senders.recv()).await.unwrap();
    // Never read from `tls` again.
    send_until_full(&sender).await;
    within("on_close", fx.closed.recv()).await.unwrap();
    fx.handle.shutdown();
    within("the server", fx.running).await.unwrap().unwrap();
    drop(tls);
}
