#![no_main]
//! `remote_write`: see `telltale_tests::decoders::remote_write`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| telltale_tests::decoders::remote_write(data));
