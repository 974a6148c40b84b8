#![no_main]
//! `traces`: see `telltale_tests::decoders::traces`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| telltale_tests::decoders::traces(data));
