//! The differential targets for squall's frame reader (`engine/reader.rs`):
//! the same bytes read by the reader with tungstenite above it (as a
//! connection reads them), and by tungstenite alone (the reference). Both
//! must see the same messages, pings, pongs and close frame, and end the
//! same way (the same close code). [`frame_reader`] reads them as a server
//! reads a client's frames, [`frame_reader_client`] as the client reads a
//! server's.
//!
//! One difference is expected and mapped: a close frame with code 1014,
//! which the reader lets through (tungstenite 0.30 reports and answers 1002
//! in its place).

use std::io::{self, Read, Write};

use tokio::io::AsyncWriteExt;
use tungstenite::protocol::{Role, WebSocketConfig};

use crate::engine::close::close_for;
use crate::engine::protocol::{Frame, Protocol};
use crate::engine::reader::FrameReader;
use crate::message::{close_code, Message};
use crate::stream::Stream;

/// What a reader made of the input, in order.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>),
    /// The connection fails with this close code.
    Fail(u16),
    /// The input ended where a connection may end.
    End,
}

/// The message size limit both readers use: small, so that inputs reach it.
const MAX_MESSAGE: usize = 4096;

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// Reads `data` as a client's frames with squall's reader and with
/// tungstenite alone, and checks that both saw the same.
///
/// # Panics
///
/// If the two disagree, or either hangs or panics.
pub fn frame_reader(data: &[u8]) {
    check(data, Role::Server);
}

/// Reads `data` as a server's frames, the client's way, with squall's
/// reader and with tungstenite alone, and checks that both saw the same.
///
/// # Panics
///
/// If the two disagree, or either hangs or panics.
pub fn frame_reader_client(data: &[u8]) {
    check(data, Role::Client);
}

fn check(data: &[u8], role: Role) {
    let reference = reference(data, role);
    // The reader's input arrives in pieces of a size picked from the input,
    // so that frames and headers are cut at every place.
    let piece = 1 + data.first().map_or(0, |b| usize::from(*b) % 97);
    let ours = ours(data, piece, role);
    let expected: Vec<Seen> = reference.into_iter().take(ours.len()).collect();
    let mapped: Vec<Seen> = ours
        .into_iter()
        .map(|seen| match seen {
            // The reader passes 1014; tungstenite alone reports (and
            // answers) 1002 in its place.
            Seen::Close(Some(close_code::BAD_GATEWAY)) => {
                Seen::Close(Some(close_code::PROTOCOL_ERROR))
            }
            other => other,
        })
        .collect();
    assert_eq!(
        mapped,
        expected,
        "{role:?} reading {} bytes, {piece} at a time: {:02x?}",
        data.len(),
        &data[..data.len().min(64)]
    );
}

/// Bytes in, writes discarded.
struct Input<'a>(&'a [u8]);

impl Read for Input<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Input<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn reference(data: &[u8], role: Role) -> Vec<Seen> {
    let mut ws = tungstenite::WebSocket::from_raw_socket(Input(data), role, Some(config()));
    let mut seen = Vec::new();
    loop {
        match ws.read() {
            Ok(message) => {
                let close = matches!(message, tungstenite::Message::Close(_));
                seen.push(from_tungstenite(message));
                if close {
                    return seen;
                }
            }
            Err(error) => {
                seen.push(ending(&error));
                return seen;
            }
        }
    }
}

fn ours(data: &[u8], piece: usize, role: Role) -> Vec<Seen> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(piece);
        let reader = FrameReader::new(
            Stream::duplex(server),
            role,
            bytes::BytesMut::new(),
            16,
            MAX_MESSAGE,
            None,
        );
        let mut ws = Protocol::new(reader, role, config().read_buffer_size(0));
        let write = async move {
            for chunk in data.chunks(piece) {
                if client.write_all(chunk).await.is_err() {
                    return;
                }
            }
            let _ = client.shutdown().await;
            // Keep the other half open until the reader is done.
            std::future::pending::<()>().await;
        };
        let read = async {
            let mut seen = Vec::new();
            loop {
                match std::future::poll_fn(|cx| ws.poll_frame(cx)).await {
                    Frame::Data(Message::Text(text)) => {
                        seen.push(Seen::Text(text.as_str().to_owned()));
                    }
                    Frame::Data(Message::Binary(data)) => {
                        seen.push(Seen::Binary(data.to_vec()));
                    }
                    Frame::Control(tungstenite::Message::Close(frame)) => {
                        seen.push(Seen::Close(ws.get_ref().peer_close_code(frame.as_ref())));
                        return seen;
                    }
                    Frame::Control(message) => seen.push(from_tungstenite(message)),
                    Frame::Broken(code, _) => {
                        seen.push(Seen::Fail(code));
                        return seen;
                    }
                    Frame::Over => {
                        seen.push(Seen::End);
                        return seen;
                    }
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            tokio::select! {
                seen = read => seen,
                () = write => unreachable!("the writer never ends"),
            }
        })
        .await
        .expect("the reader did not finish after the input ended")
    })
}

fn from_tungstenite(message: tungstenite::Message) -> Seen {
    match message {
        tungstenite::Message::Text(text) => Seen::Text(text.as_str().to_owned()),
        tungstenite::Message::Binary(data) => Seen::Binary(data.to_vec()),
        tungstenite::Message::Ping(data) => Seen::Ping(data.to_vec()),
        tungstenite::Message::Pong(data) => Seen::Pong(data.to_vec()),
        tungstenite::Message::Close(frame) => Seen::Close(frame.map(|f| u16::from(f.code))),
        tungstenite::Message::Frame(_) => unreachable!("a reader never returns raw frames"),
    }
}

fn ending(error: &tungstenite::Error) -> Seen {
    close_for(error).map_or(Seen::End, |(code, _)| Seen::Fail(code))
}
