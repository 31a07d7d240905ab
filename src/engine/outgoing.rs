//! What the engine writes besides pongs: the send queue's messages, the
//! close frame once the queue has drained, and the close frame after a
//! protocol error. Shared by the server's connections (`connection.rs`) and
//! the client's (`client/driver.rs`), whose sockets differ only in their
//! stream type.
//!
//! A server's data messages skip tungstenite: their frames go to the stream
//! (`wire.rs`, `stream.rs`), which writes a payload of
//! [`DIRECT_MIN`](crate::wire::DIRECT_MIN) bytes or more from the buffer it
//! was queued in and copies smaller frames together into one buffer. That
//! is only done while tungstenite holds no unwritten bytes of its own (a
//! pong, a ping), so frames reach the socket in the order they were queued;
//! in the rare moment it does, a data message goes through tungstenite as
//! before. A client masks its frames, so its messages always go through
//! tungstenite.
//!
//! With permessage-deflate, a message is compressed here, on its own
//! connection, and its compressed payload takes the same path, RSV1 set in
//! its header. A
//! broadcast compressed once for receivers that share their settings comes
//! framed already (`group.rs`) and is written as it is.

use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tungstenite::error::Error as WsError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;

use super::close::Phase;
use super::protocol::Protocol;
use super::reader::FrameReader;
use crate::deflate::write::Deflater;
use crate::send_queue::{Outbound, Popped, SendQueue};
use crate::stream::Stream;
use crate::wire::{self, Framed, Wire, WireFrame};

/// The stream under a WebSocket, as the writer sees it.
pub(crate) trait Socket: AsyncRead + AsyncWrite + Unpin {
    /// The stream that takes whole data frames, if this one does.
    fn frames(&mut self) -> Option<&mut Stream>;
    /// The compressor for outgoing messages, when compression was agreed.
    fn deflater(&mut self) -> Option<&mut Deflater>;
}

impl Socket for FrameReader {
    fn frames(&mut self) -> Option<&mut Stream> {
        Some(self.get_mut())
    }

    fn deflater(&mut self) -> Option<&mut Deflater> {
        FrameReader::deflater(self)
    }
}

/// A queued message made ready for the wire.
enum Outgoing {
    /// As it was queued: the stream writes text and binary, tungstenite
    /// anything else.
    Message(tungstenite::Message),
    /// A payload compressed for this connection: one frame with RSV1.
    Compressed { text: bool, payload: Bytes },
    /// A whole frame built once for every receiver of a broadcast.
    Framed(Framed),
}

impl Outgoing {
    /// `wire`, compressed with `deflater` when the connection compresses
    /// (a broadcast frame compressed already for this connection's settings
    /// passes as it is; control frames are never compressed).
    fn new(wire: Wire, deflater: Option<&mut Deflater>) -> Self {
        let Some(deflater) = deflater else {
            return match wire {
                Wire::Message(message) => Outgoing::Message(message),
                Wire::Framed(framed) => Outgoing::Framed(framed),
            };
        };
        let (text, payload) = match wire {
            Wire::Message(tungstenite::Message::Text(text)) => {
                (true, deflater.compress(text.as_bytes()))
            }
            Wire::Message(tungstenite::Message::Binary(data)) => (false, deflater.compress(&data)),
            Wire::Message(message) => return Outgoing::Message(message),
            Wire::Framed(framed) if framed.is_compressed() => return Outgoing::Framed(framed),
            Wire::Framed(framed) => (framed.is_text(), deflater.compress(framed.payload())),
        };
        Outgoing::Compressed { text, payload }
    }

    /// The data frame for the stream to write, or (a control message) the
    /// message for tungstenite.
    fn into_frame(self) -> Result<WireFrame, tungstenite::Message> {
        match self {
            Outgoing::Framed(framed) => Ok(framed.into_frame()),
            Outgoing::Message(tungstenite::Message::Binary(data)) => {
                Ok(WireFrame::data(false, false, data))
            }
            Outgoing::Message(tungstenite::Message::Text(text)) => {
                Ok(WireFrame::data(true, false, text.into()))
            }
            Outgoing::Compressed { text, payload } => Ok(WireFrame::data(text, true, payload)),
            other => Err(other.into_message()),
        }
    }

    /// The message for tungstenite to write.
    fn into_message(self) -> tungstenite::Message {
        match self {
            Outgoing::Message(message) => message,
            Outgoing::Compressed { text, payload } => wire::data_frame(text, true, payload),
            Outgoing::Framed(framed) => framed.into_message(),
        }
    }
}

/// Moves queued messages toward the socket: data frames into the stream's
/// frame queue when it takes them, anything else into tungstenite's write
/// buffer (no syscall yet, unless a buffer passes `write_buffer_size`);
/// while draining, queues the close frame once the queue is empty, and moves
/// the phase on. `direct` says data frames may go to the stream now
/// (tungstenite holds no unwritten bytes).
/// `Ok(true)` if tungstenite was given anything (a flush of it is due; the
/// stream's own frames are written by the caller), `Err` if the socket
/// failed. `sent` hears the payload length of each message fed (for
/// metrics). With permessage-deflate agreed, data messages are compressed
/// on the way (those a broadcast compressed already come framed and pass as
/// they are), and a compressed payload takes the same path as a plain one.
pub(crate) fn poll_feed<S: Socket>(
    ws: &mut Protocol<S>,
    queue: &SendQueue,
    phase: &mut Phase,
    close_timeout: Duration,
    direct: bool,
    cx: &mut Context<'_>,
    mut sent: impl FnMut(usize),
) -> Result<bool, ()> {
    let mut fed = false;
    let write_buffer_size = ws.config().write_buffer_size;
    loop {
        if let Some(stream) = ws.get_mut().frames().filter(|_| direct) {
            // Frames past the buffer size are written before more are taken,
            // as tungstenite does with its own buffer.
            if stream.queued_frame_bytes() >= write_buffer_size {
                match stream.poll_write_frames(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(_)) => return Err(()),
                    Poll::Pending => return Ok(fed),
                }
            }
        }
        match ws.poll_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return Err(()),
            Poll::Pending => return Ok(fed),
        }
        match queue.pop() {
            Popped::Message(Outbound { message, .. }) => {
                let len = message.len();
                let outgoing = Outgoing::new(message, ws.get_mut().deflater());
                // Frames go to the stream only while tungstenite holds no
                // unwritten bytes: it held none when this began, and has
                // been given nothing since.
                let stream = ws.get_mut().frames().filter(|_| direct && !fed);
                let message = match stream {
                    Some(stream) => match outgoing.into_frame() {
                        Ok(frame) => {
                            stream.push_frame(frame);
                            sent(len);
                            continue;
                        }
                        Err(message) => message,
                    },
                    None => outgoing.into_message(),
                };
                match ws.start_send(cx, message) {
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
                    ws.start_send(cx, tungstenite::Message::Close(Some(frame)))
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
    ws: &mut Protocol<S>,
    queue: &SendQueue,
    phase: &mut Phase,
    close_timeout: Duration,
    code: u16,
    reason: &'static str,
    cx: &mut Context<'_>,
) -> bool {
    tracing::debug!(code, reason, "closing a WebSocket after a protocol error");
    queue.close();
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let queued = ws
        .start_send(cx, tungstenite::Message::Close(Some(frame)))
        .is_ok();
    phase.fail(queued, close_timeout);
    queued
}
