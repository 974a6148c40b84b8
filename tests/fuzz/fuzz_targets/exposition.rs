#![no_main]
//! `exposition`: see `telltale_tests::decoders::exposition`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| telltale_tests::decoders::exposition(data));
