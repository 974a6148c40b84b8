#![no_main]
//! `wire`: see `telltale_tests::decoders::wire`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| telltale_tests::decoders::wire(data));
