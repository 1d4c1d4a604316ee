#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cm_fuzz::monitor_steps(data));
