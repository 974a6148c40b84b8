#![no_main]
//! `data_dir`: see `telltale_tests::decoders::data_dir`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| telltale_tests::decoders::data_dir(data));
