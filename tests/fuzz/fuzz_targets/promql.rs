#![no_main]
//! `promql`: see `telltale_tests::decoders::promql`.
//!
//! The PromQL parser panics on some out-of-range numbers (`m offset +18446744073709551615`
//! overflows a `Duration`), and the product catches those panics by design
//! (`limits::parse_guarded` turns them into a bad-data error). libFuzzer's panic hook aborts
//! on every panic, caught or not, so the default hook is put back here: a panic the product
//! catches is an error, as in production, and one that leaves the target still ends the run
//! (libfuzzer-sys aborts when the target panics).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| drop(std::panic::take_hook()));
    telltale_tests::decoders::promql(data)
});
