//! `[otlp]`: the OTLP receiver ([`crate::sources::otlp`]); off unless `enabled = true`.

use std::path::Path;

use serde::Deserialize;
use telltale_common::config::ConfigError;

use crate::sources::otlp::OtlpConfig;

/// `[otlp]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSection {
    /// Default false: an agent runs no receiver unless asked.
    pub enabled: Option<bool>,
    /// Default `127.0.0.1:4318` (OTLP/HTTP's default port).
    pub http_listen: Option<String>,
    /// Default `127.0.0.1:4317` (OTLP/gRPC's default port).
    pub grpc_listen: Option<String>,
    /// Most RED metric label sets (service, span name, kind, status); default 1000. Each is
    /// 18 series (calls, 15 buckets, sum, count): 1000 stay under the default
    /// `[limits] max_series_per_source` of 20000.
    pub max_series: Option<usize>,
    /// Most spans a second one service may ship (default 10000; 0: no limit). Spans past it
    /// are dropped after they were counted into the RED metrics, and counted
    /// (`telltale_agent_otlp_spans_dropped_total`): the agent's only safety valve, since every
    /// sampling decision is the aggregator's.
    pub max_spans_per_second: Option<u64>,
}

/// Validates the section: `None` when the receiver is off.
pub fn validate(src: &Path, s: Option<OtlpSection>) -> Result<Option<OtlpConfig>, ConfigError> {
    let Some(s) = s else {
        return Ok(None);
    };
    if !s.enabled.unwrap_or(false) {
        return Ok(None);
    }
    let addr = |key: &str, v: Option<&str>, default: &str| {
        let v = v.unwrap_or(default);
        v.parse().map_err(|_| {
            ConfigError::invalid(src, &format!("otlp.{key}"), format!("{v:?} is not IP:PORT"))
        })
    };
    let http_listen = addr("http_listen", s.http_listen.as_deref(), "127.0.0.1:4318")?;
    let grpc_listen = addr("grpc_listen", s.grpc_listen.as_deref(), "127.0.0.1:4317")?;
    let max_series = s.max_series.unwrap_or(1_000);
    if max_series == 0 {
        return Err(ConfigError::invalid(
            src,
            "otlp.max_series",
            "must be at least 1",
        ));
    }
    Ok(Some(OtlpConfig {
        http_listen,
        grpc_listen,
        max_series,
        max_spans_per_second: s.max_spans_per_second.unwrap_or(10_000),
    }))
}
