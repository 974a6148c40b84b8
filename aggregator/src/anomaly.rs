//! Anomaly detection (issue 22), built in slices: [`nab`], a scorer that follows the Numenta
//! Anomaly Benchmark's rules, proven by re-scoring the published detectors' results;
//! [`method`], the streaming methods behind one model interface ([`detect`]: the kNN shape
//! method; [`calibrate`]: how every method's novelty becomes a score); [`live`], detectors
//! over the aggregator's own series, configured in detector files.

pub mod calibrate;
pub mod detect;
pub mod forecast;
pub mod live;
pub mod method;
pub mod nab;
pub mod params;
