//! `cargo fuzz run config --features libfuzzer`: see fuzz/README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quiver_fuzz::config(data));
