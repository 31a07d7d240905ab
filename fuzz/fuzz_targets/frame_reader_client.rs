//! Server frames read by squall's frame reader the client's way and by
//! tungstenite's client alone: both must see the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    squall::fuzzing::frame_reader_client(data);
});
