//! [`Tuning`]: what a compressor is built with (level, memory level,
//! window), the key the per-thread pool lends compressors under.

use zlib_rs::{Deflate, DeflateConfig};

/// Everything a compressor is built with. A pooled compressor is lent only
/// for an equal tuning, as each part shapes its output or its memory.
///
/// flate2 (squall's inflater) sets no memory level, so the compressor is
/// zlib-rs's own `Deflate`, the backend flate2 runs on, built with a full
/// `DeflateConfig`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tuning {
    /// 0 to 9.
    level: u8,
    /// 1 to 9.
    mem_level: u8,
    /// 9 to 15: zlib-rs refuses a raw stream with an 8-bit window.
    window_bits: u8,
}

impl Tuning {
    /// Clamped to what zlib accepts, so building never fails on a value
    /// (zlib-rs panics on a configuration it rejects). A window of 8 bits
    /// becomes 9, which is safe for an 8-bit peer: zlib's matches reach back
    /// at most 2^9 - 262 bytes.
    pub fn new(level: u32, mem_level: u8, window_bits: u8) -> Self {
        Tuning {
            level: level.min(9) as u8,
            mem_level: mem_level.clamp(1, 9),
            window_bits: window_bits.clamp(9, 15),
        }
    }

    /// A fresh raw-deflate compressor (no zlib header: negative window bits).
    pub fn build(self) -> Box<Deflate> {
        Box::new(Deflate::new_with_config(DeflateConfig {
            level: i32::from(self.level),
            window_bits: -i32::from(self.window_bits),
            mem_level: i32::from(self.mem_level),
            ..DeflateConfig::default()
        }))
    }
}
