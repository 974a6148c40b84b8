#![no_main]
//! `statsd`: see `telltale_tests::decoders::statsd`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| telltale_tests::decoders::statsd(data));
