//! What the engine puts into tungstenite's write buffer besides pongs: the
//! send queue's messages, the close frame once the queue has drained, and
//! the close frame after a protocol error. Shared by the server's
//! connections (`connection.rs`) and the client's (`client/driver.rs`),
//! whose sockets differ only in their stream type.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Sink;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tungstenite::error::Error as WsError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;

use super::close::Phase;
use crate::deflate::read::Inflating;
use crate::deflate::write::compress_message;
use crate::send_queue::{Outbound, Popped, SendQueue};

/// Moves queued messages into the write buffer (no syscall yet, unless the
/// buffer passes its size); while draining, queues the close frame once the
/// queue is empty, and moves the phase on. `Ok(true)` if anything was
/// queued for the socket (a flush is due), `Err` if the socket failed.
/// `sent` hears the payload length of each message fed (for metrics).
/// With permessage-deflate agreed, data messages are compressed on the way
/// (those a broadcast compressed already come as frames and pass as they are).
pub(crate) fn poll_feed<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<Inflating<S>>,
    queue: &SendQueue,
    phase: &mut Phase,
    close_timeout: Duration,
    cx: &mut Context<'_>,
    mut sent: impl FnMut(usize),
) -> Result<bool, ()> {
    let mut fed = false;
    loop {
        match Pin::new(&mut *ws).poll_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return Err(()),
            Poll::Pending => return Ok(fed),
        }
        match queue.pop() {
            Popped::Message(Outbound { message, .. }) => {
                let len = message.len();
                let message = match ws.get_mut().deflater() {
                    Some(deflater) => compress_message(deflater, message),
                    None => message,
                };
                match Pin::new(&mut *ws).start_send(message) {
                    Ok(()) => {
                        fed = true;
                        sent(len);
                    }
                    Err(WsError::Capacity(error)) => {
                        // A message over the size limit is refused at the
                        // door: drop it and say so, keep the connection.
                        tracing::warn!(%error, "dropped an outgoing message over the size limit");
                    }
                    Err(_) => return Err(()),
                }
            }
            Popped::Finished => {
                // The queue is closed and empty: only while draining.
                if let Some((code, reason)) = phase.close_frame_queued(close_timeout) {
                    let frame = CloseFrame {
                        code: CloseCode::from(code),
                        reason: reason.into_inner(),
                    };
                    Pin::new(&mut *ws)
                        .start_send(tungstenite::Message::Close(Some(frame)))
                        .map_err(|_| ())?;
                    fed = true;
                }
                return Ok(fed);
            }
            Popped::Empty => return Ok(fed),
        }
    }
}

/// The peer broke the protocol: refuses further writes, queues a close
/// frame with `code` at once, and moves the phase to failing (or closed, if
/// the frame could not be queued). Returns whether the frame was queued.
pub(crate) fn fail<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    queue: &SendQueue,
    phase: &mut Phase,
    close_timeout: Duration,
    code: u16,
    reason: &'static str,
) -> bool {
    tracing::debug!(code, reason, "closing a WebSocket after a protocol error");
    queue.close();
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let queued = Pin::new(ws)
        .start_send(tungstenite::Message::Close(Some(frame)))
        .is_ok();
    phase.fail(queued, close_timeout);
    queued
}
