#![no_main]
//! `logs`: see `telltale_tests::decoders::logs`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| telltale_tests::decoders::logs(data));
