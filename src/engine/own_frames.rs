//! The frames a connection writes on its own, not asked for by a handler:
//! pongs (tungstenite answers each ping as it reads it), keep-alive pings,
//! and close frames.
//!
//! They go straight into tungstenite's write buffer, past the send queue, so
//! on their own nothing bounds them: a peer that floods pings and reads
//! nothing would grow that buffer up to tungstenite's cap (the write buffer
//! size plus the largest message, about 10 MiB by default). Instead each
//! one holds room in the send queue's capacity from the moment it is
//! written until a flush has put it on the socket. Reading stops while the
//! capacity is used up (`SendQueue::is_full`), so a flood of pings meets TCP
//! backpressure at the same bound as a flood of queued messages.

use crate::send_queue::SendQueue;

/// Own frames written since the last completed flush.
#[derive(Default)]
pub(super) struct OwnFrames {
    frames: u32,
    bytes: u32,
}

/// The largest control frame on the wire: 125 bytes of payload and a
/// two-byte header.
pub(super) const MAX_CONTROL_FRAME: usize = 127;

/// The bytes on the wire of a server frame (never masked) carrying
/// `payload` bytes: a control frame payload is at most 125 bytes, so its
/// header is two bytes.
pub(super) fn control_frame_len(payload: usize) -> usize {
    2 + payload
}

impl OwnFrames {
    /// A frame of `len` bytes went into the write buffer.
    pub fn written(&mut self, queue: &SendQueue, len: usize) {
        queue.hold_own(len);
        self.frames = self.frames.saturating_add(1);
        self.bytes = self
            .bytes
            .saturating_add(u32::try_from(len).unwrap_or(u32::MAX));
    }

    /// A flush completed: everything written so far is on the socket.
    pub fn flushed(&mut self, queue: &SendQueue) {
        if self.frames > 0 {
            queue.release_own(self.frames, self.bytes);
            *self = OwnFrames::default();
        }
    }
}
