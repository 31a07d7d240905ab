//! Replays the fuzz corpus (fuzz/corpus/<target>/*) through the same entry
//! points the cargo-fuzz targets call, on the stable toolchain. No fuzzing
//! here: every stored input must still run without a panic or a hang.

#![cfg(feature = "fuzzing")]

use std::path::Path;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_file())
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(entry.path()).unwrap())
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "empty corpus for {target}");
    inputs
}

#[test]
fn request_head_corpus() {
    for (name, input) in corpus("request_head") {
        let response = squall::fuzzing::request_head(&input);
        assert!(
            response.is_empty() || response.starts_with(b"HTTP/1.1 "),
            "{name}: {:?}",
            String::from_utf8_lossy(&response)
        );
    }
}

#[test]
fn frame_input_corpus() {
    for (name, input) in corpus("frame_input") {
        eprintln!("frame_input {name}");
        squall::fuzzing::frame_input(&input);
    }
}

#[test]
fn frame_reader_corpus() {
    for (name, input) in corpus("frame_reader") {
        eprintln!("frame_reader {name}");
        squall::fuzzing::frame_reader(&input);
        squall::fuzzing::frame_reader_client(&input);
    }
}

/// A small deterministic generator (xorshift), so the run is the same
/// every time.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, in_n: u64) -> bool {
        self.below(in_n) == 0
    }
}

/// One frame (a client's, or a server's), mostly well formed: every
/// opcode, fragmentation, text cut inside a UTF-8 sequence, now and then a
/// reserved bit, a mask missing or one too many, an oversized control
/// frame, a length at the 4096-byte limit, a close code (1014 among them),
/// or a truncated end.
fn frame(rng: &mut Rng, out: &mut Vec<u8>, from_client: bool) {
    const OPCODES: [u8; 8] = [0x1, 0x2, 0x0, 0x0, 0x9, 0xa, 0x8, 0x3];
    let opcode = if rng.chance(40) {
        rng.below(16) as u8
    } else {
        OPCODES[rng.below(OPCODES.len() as u64) as usize]
    };
    let fin = !rng.chance(3);
    let rsv = if rng.chance(30) {
        (rng.below(7) as u8 + 1) << 4
    } else {
        0
    };
    let mut payload: Vec<u8> = match rng.below(6) {
        0 => Vec::new(),
        1 => "héllo wörld ✓ 🎉".as_bytes().to_vec(),
        2 => (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
        3 => vec![b'x'; [125, 126, 127, 4095, 4096, 4097][rng.below(6) as usize]],
        4 => {
            let code: u16 = [1000, 1001, 1014, 1005, 999, 3000, 4999, 5000][rng.below(8) as usize];
            let mut p = code.to_be_bytes().to_vec();
            p.extend_from_slice(b"bye");
            p
        }
        _ => {
            // A multi-byte character cut at a random byte.
            let text = "añ€😀".repeat(3).into_bytes();
            let cut = rng.below(text.len() as u64) as usize;
            text[..cut].to_vec()
        }
    };
    if rng.chance(4) && !payload.is_empty() {
        let keep = rng.below(payload.len() as u64) as usize;
        payload.truncate(keep);
    }
    out.push(u8::from(fin) << 7 | rsv | opcode);
    // A client masks its frames, a server does not: now and then one that
    // breaks the rule.
    let masked = rng.chance(40) != from_client;
    let mask_bit = if masked { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len < 65536 && !rng.chance(10) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = (rng.next() as u32).to_be_bytes();
    if masked {
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        out.extend_from_slice(&payload);
    }
}

/// 20 000 generated inputs (`SQUALL_FRAME_READER_CASES` and
/// `SQUALL_FRAME_READER_SEED` run more, or others).
#[test]
fn frame_reader_agrees_with_tungstenite_on_generated_frames() {
    generated(true, squall::fuzzing::frame_reader);
}

/// The same, as the client reads a server's frames.
#[test]
fn the_clients_frame_reader_agrees_with_tungstenite_on_generated_frames() {
    generated(false, squall::fuzzing::frame_reader_client);
}

fn generated(from_client: bool, check: fn(&[u8])) {
    let number = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let mut rng = Rng(number("SQUALL_FRAME_READER_SEED", 0x5eed_5eed_1234_5678) | 1);
    for _ in 0..number("SQUALL_FRAME_READER_CASES", 20_000) {
        let mut input = Vec::new();
        for _ in 0..1 + rng.below(8) {
            frame(&mut rng, &mut input, from_client);
        }
        if rng.chance(5) {
            let keep = rng.below(input.len() as u64 + 1) as usize;
            input.truncate(keep);
        }
        check(&input);
    }
}
