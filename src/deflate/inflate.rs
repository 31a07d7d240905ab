//! Inflating compressed messages, one at a time and bounded: the part of
//! permessage-deflate's receiving side that the frame reader
//! (`engine/reader.rs`) uses, on a server's connections and a client's.
//!
//! A message is inflated at most one byte past `max_message_size`, so a
//! small frame that would inflate to gigabytes costs no more than a message
//! at the limit and ends the connection with 1009. Corrupt deflate data
//! ends it with 1007.

use flate2::{Decompress, FlushDecompress, Status};

use super::pool;
use super::Side;
use crate::message::close_code;

/// The most inflated bytes produced in one step.
pub(crate) const CHUNK: usize = 16 * 1024;

/// Why inflating failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InflateError {
    /// The close code: 1009 (too big) or 1007 (corrupt data).
    pub code: u16,
}

impl InflateError {
    const TOO_BIG: Self = InflateError {
        code: close_code::TOO_BIG,
    };
    const CORRUPT: Self = InflateError {
        code: close_code::INVALID_PAYLOAD,
    };

    /// The close reason.
    pub fn reason(&self) -> &'static str {
        if self.code == close_code::TOO_BIG {
            "message too big"
        } else {
            "invalid compressed data"
        }
    }
}

/// What a reader inflates for: the peer's side of the agreement and the
/// message size bound.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InflateConfig {
    pub peer: Side,
    pub max_message_size: usize,
}

/// The decompressor of one connection's incoming messages.
pub(crate) struct Inflater {
    config: InflateConfig,
    /// Built on the first compressed message, given back to the thread's
    /// pool after each one when the peer uses no context takeover.
    decompress: Option<Box<Decompress>>,
    /// Inflated bytes of the current message.
    produced: usize,
    /// One chunk of output, allocated on the first compressed message (an
    /// idle connection that never sent one holds none) and reused.
    chunk: Vec<u8>,
}

impl Inflater {
    pub fn new(config: InflateConfig) -> Self {
        Inflater {
            config,
            decompress: None,
            produced: 0,
            chunk: Vec::new(),
        }
    }

    /// Inflates what it can of `input`: at most one chunk of output, never
    /// more than one byte past the message bound in all. Returns the bytes
    /// consumed and the output, valid until the next call.
    pub fn inflate(&mut self, input: &[u8]) -> Result<(usize, &[u8]), InflateError> {
        if self.chunk.is_empty() {
            self.chunk = vec![0; CHUNK];
        }
        let bits = self.config.peer.max_window_bits.max(9);
        let no_context_takeover = self.config.peer.no_context_takeover;
        let decompress = self.decompress.get_or_insert_with(|| {
            if no_context_takeover {
                pool::decompressor(bits)
            } else {
                Box::new(Decompress::new_with_window_bits(false, bits))
            }
        });
        let room = CHUNK.min(
            self.config
                .max_message_size
                .saturating_add(1)
                .saturating_sub(self.produced),
        );
        let (in_before, out_before) = (decompress.total_in(), decompress.total_out());
        let status = decompress.decompress(input, &mut self.chunk[..room], FlushDecompress::None);
        let consumed = (decompress.total_in() - in_before) as usize;
        let produced = (decompress.total_out() - out_before) as usize;
        match status {
            // The peer ended the deflate stream (BFINAL): the next data
            // starts a fresh one.
            Ok(Status::StreamEnd) => decompress.reset(false),
            Ok(_) => {}
            Err(_) => return Err(InflateError::CORRUPT),
        }
        self.produced += produced;
        if self.produced > self.config.max_message_size {
            return Err(InflateError::TOO_BIG);
        }
        Ok((consumed, &self.chunk[..produced]))
    }

    /// The current message is whole: the next starts from nothing, and
    /// without context takeover the decompressor goes back to the pool.
    pub fn end_message(&mut self) {
        self.produced = 0;
        if self.config.peer.no_context_takeover {
            if let Some(decompress) = self.decompress.take() {
                let bits = self.config.peer.max_window_bits.max(9);
                pool::give_back_decompressor(bits, decompress);
            }
        }
    }
}
