#![no_main]
//! `rule_files`: see `telltale_tests::decoders::rule_files`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| telltale_tests::decoders::rule_files(data));
