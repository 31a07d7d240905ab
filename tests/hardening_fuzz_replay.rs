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
