//! Request head → route → handshake response.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = squall::fuzzing::request_head(data);
});
