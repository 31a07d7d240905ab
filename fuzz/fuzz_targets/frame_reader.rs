//! Client frames read by squall's frame reader and by tungstenite alone:
//! both must see the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    squall::fuzzing::frame_reader(data);
});
