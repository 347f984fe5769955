//! `cargo fuzz run push_request --features libfuzzer`: see fuzz/README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quiver_fuzz::push_request(data));
