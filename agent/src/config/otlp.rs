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
    /// Most RED metric label sets (service, span name, kind, status); default 10000.
    pub max_series: Option<usize>,
}

/// Validates the section: `None` when the receiver is off.
pub fn validate(src: &Path, s: Option<OtlpSection>) -> Result<Option<OtlpConfig>, ConfigError> {
    let Some(s) = s else {
        return Ok(None);
    };
    if !s.enabled.unwrap_or(false) {
        return Ok(None);
    }
    let listen = s.http_listen.as_deref().unwrap_or("127.0.0.1:4318");
    let http_listen = listen.parse().map_err(|_| {
        ConfigError::invalid(
            src,
            "otlp.http_listen",
            format!("{listen:?} is not IP:PORT"),
        )
    })?;
    let max_series = s.max_series.unwrap_or(10_000);
    if max_series == 0 {
        return Err(ConfigError::invalid(
            src,
            "otlp.max_series",
            "must be at least 1",
        ));
    }
    Ok(Some(OtlpConfig {
        http_listen,
        max_series,
    }))
}
