//! `[clickhouse]` in `aggregator.toml`: where the exporters write log lines and spans, how they
//! authenticates, and how it batches. Validated at start (a bad key exits with status 2).
//!
//! ```toml
//! [clickhouse]
//! url = "http://clickhouse:8123"          # ClickHouse's HTTP interface
//! database = "telltale"                   # created with its tables unless create_tables = false
//! basic_auth = { username = "telltale", password_file = "/etc/telltale/ch.pass" }
//! timeout = "30s"
//! logs = true                             # export every stored log line (default true)
//! spans = true                            # export the spans of kept traces (default true)
//! incidents = true                        # archive incidents for long-range reports (default
//!                                         # true); incidents_interval = "10s" between syncs
//! max_rows_per_insert = 10000
//! batch_send_deadline = "1s"              # a partial batch waits at most this long
//! min_backoff = "100ms"                   # failed inserts are retried, doubling, without end
//! max_backoff = "10s"
//! max_wal_bytes = "1GiB"                  # logs WAL kept only for the exporter; beyond it the
//!                                         # oldest segments are dropped and their lines counted
//! # [clickhouse.tls] ca_file / cert_file / key_file, as [remote_write.tls]
//! ```
//!
//! Alert and incident events go to ClickHouse through the routing file
//! (`clickhouse_configs` in a receiver), so routes choose which.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use telltale_common::config::{ConfigError, humantime_duration_opt};

use crate::forward::options::{BasicAuthSection, HttpParts, TlsSection, http_client};

/// `[clickhouse]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseSection {
    /// ClickHouse's HTTP interface (`http://host:8123`).
    pub url: String,
    /// The database (default `telltale`).
    pub database: Option<String>,
    /// Basic authentication (ClickHouse's user and password).
    pub basic_auth: Option<BasicAuthSection>,
    /// Extra headers on every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Per request (default `30s`).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub timeout: Option<Duration>,
    /// TLS for `https` URLs.
    pub tls: Option<TlsSection>,
    /// Export log lines (default true).
    pub logs: Option<bool>,
    /// Export the spans of kept traces (default true).
    pub spans: Option<bool>,
    /// Archive incidents into `<database>.incidents` (default true).
    pub incidents: Option<bool>,
    /// How often new and changed incidents are archived (default 10s).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub incidents_interval: Option<Duration>,
    /// Create the database and tables at start (default true).
    pub create_tables: Option<bool>,
    /// Rows per insert (default 10000, 1 to 1 000 000).
    pub max_rows_per_insert: Option<usize>,
    /// Longest a partial batch waits (default `1s`).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub batch_send_deadline: Option<Duration>,
    /// First retry delay (default `100ms`).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub min_backoff: Option<Duration>,
    /// Longest retry delay (default `10s`).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub max_backoff: Option<Duration>,
    /// Logs WAL bytes kept for the exporter beyond what storage keeps anyway (default `1GiB`).
    #[serde(default, deserialize_with = "crate::forward::options::opt_bytes")]
    pub max_wal_bytes: Option<u64>,
}

/// A validated `[clickhouse]`.
#[derive(Debug, Clone)]
pub struct ClickHouseOptions {
    /// The HTTP interface's URL.
    pub url: reqwest::Url,
    /// The client (TLS, timeout and headers set).
    pub client: reqwest::Client,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The database.
    pub database: String,
    /// Whether log lines are exported.
    pub logs: bool,
    /// Whether the spans of kept traces are exported.
    pub spans: bool,
    /// Whether incidents are archived.
    pub incidents: bool,
    /// How often the incident archive syncs.
    pub incidents_interval: Duration,
    /// Whether the database and tables are created at start.
    pub create_tables: bool,
    /// Rows per insert.
    pub max_rows_per_insert: usize,
    /// Longest a partial batch waits.
    pub batch_send_deadline: Duration,
    /// Retry delays.
    pub min_backoff: Duration,
    /// See `min_backoff`.
    pub max_backoff: Duration,
    /// WAL bytes kept for the exporter.
    pub max_wal_bytes: u64,
}

/// Validates `[clickhouse]`.
pub fn validate(file: &Path, s: &ClickHouseSection) -> Result<ClickHouseOptions, ConfigError> {
    let bad = |k: &str, m: String| ConfigError::invalid(file, &format!("clickhouse.{k}"), m);
    let none = None;
    let (url, client, authorization) = http_client(
        &bad,
        &HttpParts {
            url: &s.url,
            bearer_token: &none,
            bearer_token_file: &None,
            basic_auth: &s.basic_auth,
            headers: &s.headers,
            timeout: s.timeout,
            tls: s.tls.as_ref(),
        },
    )?;
    let database = s.database.clone().unwrap_or_else(|| "telltale".into());
    if !crate::clickhouse::valid_database(&database) {
        return Err(bad(
            "database",
            format!("{database:?}: use letters, digits and `_`, not starting with a digit"),
        ));
    }
    let max_rows_per_insert = s.max_rows_per_insert.unwrap_or(10_000);
    if !(1..=1_000_000).contains(&max_rows_per_insert) {
        return Err(bad(
            "max_rows_per_insert",
            format!("{max_rows_per_insert}: use 1 to 1000000"),
        ));
    }
    let min_backoff = s.min_backoff.unwrap_or(Duration::from_millis(100));
    let max_backoff = s.max_backoff.unwrap_or(Duration::from_secs(10));
    if min_backoff.is_zero() || max_backoff < min_backoff {
        return Err(bad(
            "max_backoff",
            "min_backoff must be above 0 and max_backoff at least min_backoff".into(),
        ));
    }
    let batch_send_deadline = s.batch_send_deadline.unwrap_or(Duration::from_secs(1));
    if batch_send_deadline < Duration::from_millis(10) {
        return Err(bad("batch_send_deadline", "must be at least 10ms".into()));
    }
    let incidents_interval = s.incidents_interval.unwrap_or(Duration::from_secs(10));
    if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&incidents_interval) {
        return Err(bad(
            "incidents_interval",
            "use 100ms to 1h (resolved incidents stay 7 days on the aggregator)".into(),
        ));
    }
    Ok(ClickHouseOptions {
        url,
        client,
        authorization,
        database,
        logs: s.logs.unwrap_or(true),
        spans: s.spans.unwrap_or(true),
        incidents: s.incidents.unwrap_or(true),
        incidents_interval,
        create_tables: s.create_tables.unwrap_or(true),
        max_rows_per_insert,
        batch_send_deadline,
        min_backoff,
        max_backoff,
        max_wal_bytes: s.max_wal_bytes.unwrap_or(1 << 30),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<ClickHouseOptions, String> {
        let s: ClickHouseSection = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        validate(Path::new("aggregator.toml"), &s).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_errors_name_the_key() {
        let o = parse("url = \"http://127.0.0.1:8123\"").expect("valid");
        assert_eq!(o.database, "telltale");
        assert!(o.logs && o.spans && o.create_tables);
        assert_eq!(o.max_rows_per_insert, 10_000);
        assert_eq!(o.max_wal_bytes, 1 << 30);
        assert!(o.authorization.is_none());
        for (text, key) in [
            ("url = \"ftp://x\"", "clickhouse.url"),
            (
                "url = \"http://x:8123\"\ndatabase = \"a;DROP\"",
                "clickhouse.database",
            ),
            (
                "url = \"http://x:8123\"\nmax_rows_per_insert = 0",
                "clickhouse.max_rows_per_insert",
            ),
            (
                "url = \"http://x:8123\"\nmin_backoff = \"2s\"\nmax_backoff = \"1s\"",
                "clickhouse.max_backoff",
            ),
            (
                "url = \"http://x:8123\"\n[tls]\nca_file = \"/nonexistent\"",
                "clickhouse.tls",
            ),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.contains(key), "{text}: {e}");
        }
        assert!(parse("url = \"http://x:8123\"\nsurprise = 1").is_err());
        let o =
            parse("url = \"http://x:8123\"\nbasic_auth = { username = \"u\", password = \"p\" }")
                .expect("valid");
        assert_eq!(o.authorization.as_deref(), Some("Basic dTpw"));
    }
}
