#![no_main]
//! `config`: see `telltale_tests::decoders::config`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| telltale_tests::decoders::config(data));
