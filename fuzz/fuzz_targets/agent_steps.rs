#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cm_fuzz::agent_steps(data));
