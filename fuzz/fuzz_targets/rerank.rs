#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| embedrank::fuzzing::run("rerank", data));
