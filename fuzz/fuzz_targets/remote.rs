#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shardlog_fuzz::remote(data));
