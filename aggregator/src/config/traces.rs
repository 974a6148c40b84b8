//! `[traces]`: the trace store's retention and tail sampling.
//!
//! ```toml
//! [traces]
//! retention = "7d"            # whole blocks go, oldest first
//! max_bytes = "10GiB"
//! graph_interval = "15s"      # service graph series (traces_service_graph_*)
//!
//! [traces.sampling]
//! ratio = 0.1                 # share of traces neither failed nor slow that is kept (default 1)
//! decision_wait = "10s"       # from a trace's first span to its decision
//! max_pending_spans = 500000  # past it the oldest traces are decided early
//! slow_threshold = "2s"       # a span this long keeps its trace (where no rule is narrower)
//!
//! # [traces.pool]: several aggregators sampling traces together (forward/pool/options.rs)
//!
//! [[traces.sampling.slow]]
//! service = "checkout"        # optional
//! operation = "POST /pay"     # optional
//! threshold = "300ms"
//! ```

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use telltale_common::config::ConfigError;

use super::opt_bytes;
use crate::traces::engine::TraceOptions;
use crate::traces::sample::{SamplingOptions, SlowRule};
use telltale_common::config::{humantime_duration, humantime_duration_opt};

/// `[traces]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracesSection {
    /// How long traces are kept (default `7d`, at least `1h`).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub retention: Option<Duration>,
    /// Most bytes the trace blocks may take (default `10GiB`).
    #[serde(default, deserialize_with = "opt_bytes")]
    pub max_bytes: Option<u64>,
    /// How often the service graph series are written (default `15s`, at least `1s`).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub graph_interval: Option<Duration>,
    /// Tail sampling.
    #[serde(default)]
    pub sampling: SamplingSection,
    /// The aggregators that sample traces together (see [`crate::forward::pool::options`]).
    pub pool: Option<crate::forward::pool::PoolSection>,
}

/// `[traces.sampling]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingSection {
    /// Default 1 (keep every trace).
    pub ratio: Option<f64>,
    /// Default `10s`.
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub decision_wait: Option<Duration>,
    /// Default 500000.
    pub max_pending_spans: Option<usize>,
    /// No default: without it only `slow` rules make a trace slow.
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub slow_threshold: Option<Duration>,
    /// Narrower thresholds.
    #[serde(default)]
    pub slow: Vec<SlowSection>,
}

/// `[[traces.sampling.slow]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowSection {
    /// The service (any when absent).
    pub service: Option<String>,
    /// The span name (any when absent).
    pub operation: Option<String>,
    /// Spans at least this long keep their trace.
    #[serde(deserialize_with = "humantime_duration")]
    pub threshold: Duration,
}

/// Validates the section.
pub fn validate(src: &Path, s: &TracesSection) -> Result<TraceOptions, ConfigError> {
    let d = TraceOptions::default();
    let sd = SamplingOptions::default();
    let retention = s.retention.unwrap_or(d.retention);
    if retention < Duration::from_secs(3600) {
        return Err(ConfigError::invalid(
            src,
            "traces.retention",
            "must be at least 1h",
        ));
    }
    let sp = &s.sampling;
    let ratio = sp.ratio.unwrap_or(sd.ratio);
    if !(0.0..=1.0).contains(&ratio) {
        return Err(ConfigError::invalid(
            src,
            "traces.sampling.ratio",
            format!("{ratio} is not between 0 and 1"),
        ));
    }
    let decision_wait = sp.decision_wait.unwrap_or(sd.decision_wait);
    if decision_wait > Duration::from_secs(600) {
        return Err(ConfigError::invalid(
            src,
            "traces.sampling.decision_wait",
            "must be at most 10m (spans wait in memory)",
        ));
    }
    let max_pending_spans = sp.max_pending_spans.unwrap_or(sd.max_pending_spans);
    if max_pending_spans == 0 {
        return Err(ConfigError::invalid(
            src,
            "traces.sampling.max_pending_spans",
            "must be at least 1",
        ));
    }
    let graph_interval = s.graph_interval.unwrap_or(d.graph_interval);
    if graph_interval < Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            src,
            "traces.graph_interval",
            "must be at least 1s",
        ));
    }
    Ok(TraceOptions {
        retention,
        graph_interval,
        max_bytes: s.max_bytes.unwrap_or(d.max_bytes),
        sampling: SamplingOptions {
            ratio,
            decision_wait,
            max_pending_spans,
            slow_threshold: sp.slow_threshold,
            slow: sp
                .slow
                .iter()
                .map(|r| SlowRule {
                    service: r.service.clone(),
                    operation: r.operation.clone(),
                    threshold: r.threshold,
                })
                .collect(),
            ..sd
        },
        ..d
    })
}
