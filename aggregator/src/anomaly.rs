//! Anomaly detection (issue 22), built in slices. What exists: [`nab`], a scorer that follows
//! the Numenta Anomaly Benchmark's rules, proven by re-scoring the published detectors'
//! results, and [`detect`], a first streaming detector scored by it (a baseline; the live
//! path over the aggregator's series comes next).

pub mod detect;
pub mod nab;
