#![no_main]
//! `promql`: see `telltale_tests::decoders::promql`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| telltale_tests::decoders::promql(data));
