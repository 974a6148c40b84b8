#![no_main]
//! `chunks`: see `telltale_tests::decoders::chunks`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| telltale_tests::decoders::chunks(data));
