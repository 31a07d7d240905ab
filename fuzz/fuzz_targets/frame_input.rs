//! Bytes from the client on an open WebSocket, through the connection task.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    squall::fuzzing::frame_input(data);
});
