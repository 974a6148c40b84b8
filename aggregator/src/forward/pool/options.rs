//! `[traces.pool]` in `aggregator.toml`: the aggregators that sample traces together, and how
//! this one reaches the others. Validated at start (a bad key exits with status 2).
//!
//! ```toml
//! [traces.pool]
//! # Every member's HTTP base URL — the same list on every member (any order).
//! members = ["http://agg-a.example:9470", "http://agg-b.example:9470"]
//! this = "http://agg-a.example:9470"      # which of them this aggregator is
//! # The members' api_token (they share one: forwarded spans are a state-changing call).
//! bearer_token_file = "/etc/telltale/api.token"
//! timeout = "30s"
//! max_spans_per_request = 2000
//! batch_send_deadline = "200ms"           # a partial batch waits at most this long
//! min_backoff = "100ms"                   # failed sends are retried, doubling, without end
//! max_backoff = "10s"
//! max_wal_bytes = "1GiB"                  # traces WAL kept only for the forwarder
//! # [traces.pool.tls] ca_file / cert_file / key_file, as [remote_write.tls] (https members)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use telltale_common::config::{ConfigError, humantime_duration_opt};

use crate::forward::options::{HttpParts, TlsSection, http_client};
use crate::traces::pool::Owners;

/// `[traces.pool]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct PoolSection {
    pub members: Vec<String>,
    pub this: String,
    pub bearer_token: Option<String>,
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub timeout: Option<Duration>,
    pub tls: Option<TlsSection>,
    pub max_spans_per_request: Option<usize>,
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub batch_send_deadline: Option<Duration>,
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub min_backoff: Option<Duration>,
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub max_backoff: Option<Duration>,
    #[serde(default, deserialize_with = "crate::forward::options::opt_bytes")]
    pub max_wal_bytes: Option<u64>,
}

/// `[traces.pool]`, checked.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct PoolOptions {
    pub owners: Arc<Owners>,
    /// Per member, where its spans go (`<member>/api/v1/pool/spans`).
    pub urls: Vec<reqwest::Url>,
    pub client: reqwest::Client,
    pub authorization: Option<String>,
    pub max_spans_per_request: usize,
    pub batch_send_deadline: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub max_wal_bytes: u64,
}

/// The path members receive forwarded spans on.
pub const SPANS_PATH: &str = "/api/v1/pool/spans";

/// Checks the section.
pub fn validate(file: &Path, s: &PoolSection) -> Result<PoolOptions, ConfigError> {
    let bad = |k: &str, m: String| ConfigError::invalid(file, &format!("traces.pool.{k}"), m);
    if s.members.len() < 2 {
        return Err(bad("members", "list at least two aggregators".into()));
    }
    let norm = |u: &str| u.trim_end_matches('/').to_string();
    let members: Vec<String> = s.members.iter().map(|m| norm(m)).collect();
    for (i, m) in members.iter().enumerate() {
        if members[..i].contains(m) {
            return Err(bad("members", format!("{m:?} is listed twice")));
        }
    }
    let this = members
        .iter()
        .position(|m| *m == norm(&s.this))
        .ok_or_else(|| {
            bad(
                "this",
                format!("{:?} is not one of members {:?}", s.this, s.members),
            )
        })?;
    let no_basic = None;
    let no_headers = BTreeMap::new();
    let mut urls = Vec::new();
    let mut client = None;
    for m in &members {
        let (url, c, authorization) = http_client(
            &|k: &str, msg: String| bad(if k == "url" { "members" } else { k }, msg),
            &HttpParts {
                url: &format!("{m}{SPANS_PATH}"),
                bearer_token: &s.bearer_token,
                bearer_token_file: &s.bearer_token_file,
                basic_auth: &no_basic,
                headers: &no_headers,
                timeout: s.timeout,
                tls: s.tls.as_ref(),
            },
        )?;
        urls.push(url);
        client.get_or_insert((c, authorization));
    }
    let Some((client, authorization)) = client else {
        return Err(bad("members", "list at least two aggregators".into()));
    };
    let max_spans_per_request = s.max_spans_per_request.unwrap_or(2000);
    if !(1..=100_000).contains(&max_spans_per_request) {
        return Err(bad(
            "max_spans_per_request",
            format!("{max_spans_per_request}: use 1 to 100000"),
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
    let batch_send_deadline = s.batch_send_deadline.unwrap_or(Duration::from_millis(200));
    if batch_send_deadline < Duration::from_millis(10) {
        return Err(bad("batch_send_deadline", "must be at least 10ms".into()));
    }
    Ok(PoolOptions {
        owners: Arc::new(Owners::new(members, this)),
        urls,
        client,
        authorization,
        max_spans_per_request,
        batch_send_deadline,
        min_backoff,
        max_backoff,
        max_wal_bytes: s.max_wal_bytes.unwrap_or(1 << 30),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PoolOptions, String> {
        let s: PoolSection = toml::from_str(text).map_err(|e| e.to_string())?;
        validate(Path::new("aggregator.toml"), &s).map_err(|e| e.to_string())
    }

    #[test]
    fn the_pool_is_checked_and_errors_name_the_key() {
        let o = parse(
            "members = [\"http://a:1/\", \"http://b:1\"]\nthis = \"http://b:1/\"\nbearer_token = \"t\"",
        )
        .expect("valid");
        assert_eq!(o.owners.this(), 1);
        assert_eq!(o.urls[0].as_str(), "http://a:1/api/v1/pool/spans");
        assert_eq!(o.authorization.as_deref(), Some("Bearer t"));
        assert_eq!(o.max_spans_per_request, 2000);
        for (text, key) in [
            (
                "members = [\"http://a:1\"]\nthis = \"http://a:1\"",
                "traces.pool.members",
            ),
            (
                "members = [\"http://a:1\", \"http://a:1/\"]\nthis = \"http://a:1\"",
                "traces.pool.members",
            ),
            (
                "members = [\"http://a:1\", \"http://b:1\"]\nthis = \"http://c:1\"",
                "traces.pool.this",
            ),
            (
                "members = [\"a:1\", \"http://b:1\"]\nthis = \"a:1\"",
                "traces.pool.members",
            ),
            (
                "members = [\"http://a:1\", \"http://b:1\"]\nthis = \"http://a:1\"\nbearer_token_file = \"/nonexistent\"",
                "traces.pool.bearer_token_file",
            ),
            (
                "members = [\"http://a:1\", \"http://b:1\"]\nthis = \"http://a:1\"\nmax_spans_per_request = 0",
                "traces.pool.max_spans_per_request",
            ),
        ] {
            let e = parse(text).err().unwrap_or_default();
            assert!(e.contains(key), "{text}: {e}");
        }
    }
}
