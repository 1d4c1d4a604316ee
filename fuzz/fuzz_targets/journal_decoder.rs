#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cm_fuzz::journal_decoder(data));
