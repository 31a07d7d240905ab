//! Close codes a peer sends (issue 15): 1014 (bad gateway, registered with
//! IANA after RFC 6455) is valid: the handler sees 1014 and the peer gets a
//! clean close back (1000). Codes Autobahn's cases 7.9.x call invalid, and
//! 1015 (which RFC 6455 forbids in a close frame), are still answered with
//! 1002.

mod common;

use common::{raw_websocket, read_close, read_to_eof, Frame, CLOSE};
use squall::testing::{within, TestServer};
use squall::{Application, Message, WebSocket, WebSocketHandler};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Reports the close code `on_close` sees.
struct Report(mpsc::UnboundedSender<Option<u16>>);

impl WebSocketHandler for Report {
    async fn on_message(&mut self, _ws: &WebSocket, _msg: Message) {}
    async fn on_close(&mut self, ws: &WebSocket) {
        let _ = self.0.send(ws.close_code());
    }
}

/// Sends a close frame with `code` and returns the code the server answers
/// with and the one its handler saw.
async fn close_with(code: u16) -> (u16, Option<u16>) {
    let (tx, mut seen) = mpsc::unbounded_channel();
    let server =
        TestServer::start(Application::new().websocket("/ws", move || Report(tx.clone()))).await;
    let mut raw = raw_websocket(server.addr(), "/ws").await;
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(b"upstream failed");
    raw.get_mut()
        .write_all(&Frame::new(CLOSE).with(&payload))
        .await
        .unwrap();
    let (answer, _) = read_close(&mut raw).await;
    read_to_eof(&mut raw).await;
    let handler_saw = within("on_close", seen.recv()).await.unwrap();
    (answer, handler_saw)
}

#[tokio::test]
async fn close_1014_is_valid_the_handler_sees_it_and_the_peer_gets_1000() {
    assert_eq!(close_with(1014).await, (1000, Some(1014)));
}

#[tokio::test]
async fn registered_codes_1012_and_1013_are_echoed() {
    assert_eq!(close_with(1012).await, (1012, Some(1012)));
    assert_eq!(close_with(1013).await, (1013, Some(1013)));
}

#[tokio::test]
async fn codes_autobahn_calls_invalid_are_1002() {
    for code in [999, 1004, 1005, 1006, 1015, 1016, 2999] {
        let (answer, _) = close_with(code).await;
        assert_eq!(answer, 1002, "close code {code}");
    }
}
