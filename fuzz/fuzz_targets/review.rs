#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gracegate_fuzz::review(data));
