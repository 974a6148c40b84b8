//! Anomaly detection (issue 22), built in slices. What exists: [`nab`], a scorer that follows
//! the Numenta Anomaly Benchmark's rules, proven by re-scoring the published detectors'
//! results; the detectors come next and are scored by it.

pub mod nab;
