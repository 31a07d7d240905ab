//! Per-thread pools of compressors and decompressors for the sides without
//! context takeover.
//!
//! Without context takeover a message's compression starts from an empty
//! window, so nothing ties a compressor to one connection between messages.
//! Dropping it after each message does not give the memory back either: the
//! allocator keeps the freed blocks resident, and each connection's
//! long-lived allocations land inside them (measured: about 300 KiB per
//! connection stayed resident). So such connections borrow a compressor from
//! a small pool kept by their thread, reset it, and give it back after the
//! message: a connection holds one only while a message is in flight, and
//! the process holds a few per thread and window size.

use std::cell::RefCell;

use flate2::Decompress;
use zlib_rs::Deflate;

use super::tuning::Tuning;

/// The most compressors (and, separately, decompressors) one thread keeps.
const KEEP: usize = 4;

struct Pool {
    compressors: Vec<(Tuning, Box<Deflate>)>,
    decompressors: Vec<(u8, Box<Decompress>)>,
}

thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool {
            compressors: Vec::new(),
            decompressors: Vec::new(),
        })
    };
}

/// A raw-deflate compressor built with `tuning`, from this thread's pool if
/// one with the same tuning is there.
pub(crate) fn compressor(tuning: Tuning) -> Box<Deflate> {
    let pooled = POOL
        .try_with(|pool| {
            let mut pool = pool.borrow_mut();
            let at = pool.compressors.iter().position(|(t, _)| *t == tuning)?;
            Some(pool.compressors.swap_remove(at).1)
        })
        .ok()
        .flatten();
    pooled.unwrap_or_else(|| tuning.build())
}

/// Gives a compressor back after a message, reset.
pub(crate) fn give_back_compressor(tuning: Tuning, mut compress: Box<Deflate>) {
    compress.reset();
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.compressors.len() < KEEP {
            pool.compressors.push((tuning, compress));
        }
    });
}

/// A raw-deflate decompressor with a window of `bits` (9..=15), from this
/// thread's pool if one is there.
pub(crate) fn decompressor(bits: u8) -> Box<Decompress> {
    let pooled = POOL
        .try_with(|pool| {
            let mut pool = pool.borrow_mut();
            let at = pool.decompressors.iter().position(|(b, _)| *b == bits)?;
            Some(pool.decompressors.swap_remove(at).1)
        })
        .ok()
        .flatten();
    pooled.unwrap_or_else(|| Box::new(Decompress::new_with_window_bits(false, bits)))
}

/// Gives a decompressor back after a message, reset.
pub(crate) fn give_back_decompressor(bits: u8, mut decompress: Box<Decompress>) {
    decompress.reset(false);
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.decompressors.len() < KEEP {
            pool.decompressors.push((bits, decompress));
        }
    });
}
