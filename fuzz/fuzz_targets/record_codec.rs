//! `cargo fuzz run record_codec --features libfuzzer`: see fuzz/README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quiver_fuzz::record_codec(data));
