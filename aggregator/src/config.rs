//! The aggregator's configuration file (`aggregator.toml`) and its validation into [`Config`].
//! Every command-line flag overrides the matching key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use telltale_common::config::{ConfigError, byte_size, humantime_duration_opt, load_toml};

mod traces;

/// `aggregator.toml` as written by the operator; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where the aggregator keeps its data (default `/var/lib/telltale/aggregator`).
    pub data_dir: Option<PathBuf>,
    /// Directory holding `ca.crt`, `server.crt` and `server.key` (default `/etc/telltale/tls`).
    pub tls_dir: Option<PathBuf>,
    /// HTTP API address (default `127.0.0.1:9470`).
    pub http_listen: Option<SocketAddr>,
    /// QUIC ingest address (default `0.0.0.0:9471`, UDP).
    pub quic_listen: Option<SocketAddr>,
    /// PEM certificate chain for HTTPS on `http_listen` (with `http_tls_key`). Unset: plain
    /// HTTP.
    pub http_tls_cert: Option<PathBuf>,
    /// PEM private key of `http_tls_cert`.
    pub http_tls_key: Option<PathBuf>,
    /// PEM CA certificates: with it, HTTPS clients must present a certificate it signed.
    pub http_client_ca: Option<PathBuf>,
    /// How long an HTTP client may take to send a request's head, and a kept-alive
    /// connection may stay idle (default `2m`: past the 90 s Go clients keep idle connections,
    /// so they close first and never race the server's close).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub http_header_timeout: Option<Duration>,
    /// Most HTTP connections served at once (default 4096, and at most a quarter of the
    /// open-files limit, so storage keeps the rest); past it, new ones wait to be accepted.
    pub http_max_connections: Option<usize>,
    /// Largest frame an agent may send (default `16MiB`); bigger frames close the connection.
    #[serde(default, deserialize_with = "opt_bytes")]
    pub max_frame_bytes: Option<u64>,
    /// How far back an instant query looks for a sample (default `5m`, like Prometheus).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub lookback_delta: Option<Duration>,
    /// Most samples one query may load (default 50 000 000, like Prometheus).
    pub query_max_samples: Option<usize>,
    /// Longest a query may run before it fails with a `timeout` error (default `2m`).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub query_timeout: Option<Duration>,
    /// How often `up` is written for every known agent (default `15s`).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub up_interval: Option<Duration>,
    /// Bearer token required by state-changing HTTP calls (remote_write, ...). Unset: they are
    /// accepted from loopback only. `--api-token` and `TELLTALE_API_TOKEN` override it.
    pub api_token: Option<String>,
    /// Bearer token required by every read (queries, labels, logs, alerts, `/metrics`; not
    /// the `/-/healthy` and `/-/ready` probes). Unset: reads are open. `--read-token` and
    /// `TELLTALE_READ_TOKEN` override it.
    pub read_token: Option<String>,
    /// The storage engine (`[storage]`).
    #[serde(default)]
    pub storage: StorageSection,
    /// Rules (`[rules]`).
    #[serde(default)]
    pub rules: RulesSection,
    /// Alerting (`[alerting]`).
    #[serde(default)]
    pub alerting: AlertingSection,
    /// Remediation (`[remediation]`).
    #[serde(default)]
    pub remediation: RemediationSection,
    /// The log store (`[logs]`).
    #[serde(default)]
    pub logs: LogsSection,
    /// The trace store (`[traces]`).
    #[serde(default)]
    pub traces: traces::TracesSection,
    /// Anomaly detectors (`[anomaly]`).
    #[serde(default)]
    pub anomaly: AnomalySection,
    /// SLO files (`[slo]`).
    #[serde(default)]
    pub slo: SloSection,
    /// remote_write queues (`[[remote_write]]`, see [`crate::forward::options`]).
    #[serde(default)]
    pub remote_write: Vec<crate::forward::RemoteWriteSection>,
    /// The ClickHouse exporter (`[clickhouse]`, see [`crate::forward::clickhouse::options`]).
    pub clickhouse: Option<crate::forward::clickhouse::ClickHouseSection>,
    /// Scheduled reports (`[[report]]`).
    #[serde(default)]
    pub report: Vec<crate::report::schedule::ScheduleSpec>,
    /// The web UI (`[ui]`).
    #[serde(default)]
    pub ui: UiSection,
}

/// `[ui]`: the web UI's dashboards.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiSection {
    /// A directory of dashboard JSON files (`serve --dashboards` overrides it).
    #[serde(default)]
    pub dashboards: Option<PathBuf>,
}

/// `[slo]`: SLO files (Sloth `prometheus/v1` or OpenSLO YAML, see config/slos.yml).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloSection {
    /// SLO files; the file-name part may hold `*` and `?`. `serve --slos` adds more.
    #[serde(default)]
    pub files: Vec<String>,
}

/// The default `[anomaly] max_model_bytes`: 2 GiB, room for 10 000 series of the default
/// `context` method at their largest (80 KiB each, 0.8 GiB) more than twice over, an eighth
/// of a 16 GiB server.
pub const DEFAULT_ANOMALY_MAX_MODEL_BYTES: u64 = 2 << 30;

/// `[anomaly]`: detector files (YAML, see config/detectors.yml).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalySection {
    /// Detector files; the file-name part may hold `*` and `?`. `serve --detectors` adds
    /// more.
    #[serde(default)]
    pub files: Vec<String>,
    /// The memory budget of all detectors' models together (default `2GiB`; see
    /// [`crate::anomaly::live::budget`]); read at start.
    #[serde(default, deserialize_with = "opt_bytes")]
    pub max_model_bytes: Option<u64>,
}

/// `[logs]`: the log store's retention and query bounds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsSection {
    /// How long log lines are kept (default `7d`); whole blocks go, oldest first.
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub retention: Option<Duration>,
    /// Most bytes the log blocks may take (default `10GiB`); past it the oldest go first.
    #[serde(default, deserialize_with = "opt_bytes")]
    pub max_bytes: Option<u64>,
    /// Most bytes of lines one LogQL query may read (default `1GiB`); past it the query
    /// fails with 400 and a message, never an out-of-memory.
    #[serde(default, deserialize_with = "opt_bytes")]
    pub max_query_bytes: Option<u64>,
    /// Log alerting and recording rules: Loki ruler files (Prometheus' rule-file shape with
    /// LogQL metric queries); the file-name part may hold `*` and `?`. `serve --log-rules`
    /// adds more. Never mixed with `[rules] files`: a LogQL expression can parse as PromQL.
    #[serde(default)]
    pub rule_files: Vec<String>,
    /// How often the pattern counters (`telltale_log_pattern_lines_total`) and pattern events
    /// are written (default `15s`, at least 1s).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub pattern_interval: Option<Duration>,
    /// How long after a source first appears (or the aggregator starts) before its new
    /// patterns are announced as events (default `10m`: at first every pattern is new).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub pattern_warmup: Option<Duration>,
}

/// `[remediation]`: runbooks that ask agents to run their allowlisted actions.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemediationSection {
    /// Runbook file (YAML, see config/runbooks.yml); `serve --runbooks` overrides it. Without
    /// one, no command is ever sent.
    pub runbooks: Option<PathBuf>,
}

/// `[rules]`: which Prometheus rule files to evaluate, and how.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesSection {
    /// Rule files; the file-name part may hold `*` and `?` (`/etc/telltale/rules/*.yml`).
    /// `serve --rules` adds more.
    #[serde(default)]
    pub files: Vec<String>,
    /// Interval of groups that set none (default `1m`, like Prometheus).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub evaluation_interval: Option<Duration>,
    /// Shortest time between two evaluations of a group triggered by arriving samples
    /// (default `50ms`; `0s` turns arrival-triggered evaluation off).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub eager_min_interval: Option<Duration>,
    /// Labels templates see as `$externalLabels`.
    #[serde(default)]
    pub external_labels: std::collections::BTreeMap<String, String>,
    /// Evaluate the built-in golden-signal rules (config/rules/golden.yml; default true).
    #[serde(default)]
    pub golden_signals: Option<bool>,
}

/// `[alerting]`: where alerts go.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingSection {
    /// Routing file (Alertmanager's YAML shape); `serve --routes` overrides it. Without
    /// one, notifications go to the aggregator's log.
    pub routes: Option<PathBuf>,
    /// URL the aggregator is reached at, for links in notifications (default
    /// `http://` + `http_listen`).
    pub external_url: Option<String>,
}

/// `[storage]`: retention, rollups, out-of-order window, head size and series caps.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// How long raw samples are kept (default `15d`).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub retention: Option<Duration>,
    /// How long the 5-minute and 1-hour rollups are kept (default `400d`).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub rollup_retention: Option<Duration>,
    /// How late a sample may arrive behind its series' newest one (default `1h`); older
    /// ones are refused and counted.
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub out_of_order_window: Option<Duration>,
    /// How far ahead of this host's clock a sample may be (default `10m`); further ones are
    /// refused and counted.
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub max_future: Option<Duration>,
    /// The head is cut into a block when its oldest write is this old (default `10m`).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub head_max_age: Option<Duration>,
    /// ...or when it holds this many samples per active series (default 60).
    pub head_samples_per_series: Option<u64>,
    /// Active series one agent may have (default 200000); new ones beyond are refused.
    pub max_series_per_agent: Option<u64>,
    /// Active series in total (default 10000000).
    pub max_series: Option<u64>,
    /// Active series created by remote_write senders, all together (default 200000).
    pub max_series_remote_write: Option<u64>,
    /// New series one remote_write request may create (default 20000); the rest of its new
    /// series are refused and counted, its known series are stored.
    pub max_new_series_per_remote_write: Option<u64>,
    /// Bytes of decoded chunks kept for repeated reads (default `128MiB`; `0` disables).
    #[serde(default, deserialize_with = "opt_bytes")]
    pub chunk_cache: Option<u64>,
    /// How often maintenance (cut, compaction, retention) runs (default `10s`).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub maintenance_interval: Option<Duration>,
    /// `store` (default) or `forward`: log and forward to `[[remote_write]]` only (see
    /// [`crate::forward::options::check_forward_only`]).
    pub mode: Option<crate::forward::options::StorageMode>,
}

/// See [`FileConfig::http_header_timeout`].
pub const HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(120);

fn opt_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    byte_size(d).map(Some)
}

/// Validated runtime settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory.
    pub data_dir: PathBuf,
    /// TLS directory.
    pub tls_dir: PathBuf,
    /// HTTP address.
    pub http_listen: SocketAddr,
    /// HTTPS on the HTTP address: `(certificate chain, key, client CA)`.
    pub http_tls: Option<(PathBuf, PathBuf, Option<PathBuf>)>,
    /// See [`FileConfig::http_header_timeout`].
    pub http_header_timeout: Duration,
    /// See [`FileConfig::http_max_connections`] (`None`: the default).
    pub http_max_connections: Option<usize>,
    /// QUIC address.
    pub quic_listen: SocketAddr,
    /// Largest frame payload.
    pub max_frame_bytes: u32,
    /// Query lookback.
    pub lookback_delta: Duration,
    /// Per-query sample limit.
    pub query_max_samples: usize,
    /// Per-query time limit.
    pub query_timeout: Duration,
    /// `up` write interval.
    pub up_interval: Duration,
    /// Bearer token for state-changing calls.
    pub api_token: Option<String>,
    /// Bearer token for reads (the API token is accepted too).
    pub read_token: Option<String>,
    /// Storage engine options.
    pub storage: crate::metrics::tsdb::Options,
    /// Log store options.
    pub logs: crate::logs::engine::LogOptions,
    /// Most bytes of lines one LogQL query may read.
    pub logs_max_query_bytes: u64,
    /// Trace store options.
    pub traces: crate::traces::engine::TraceOptions,
    /// Rule file patterns (config file's, then `--rules`).
    pub rule_files: Vec<String>,
    /// Detector file patterns (`[anomaly] files`, then `--detectors`).
    pub detector_files: Vec<String>,
    /// `[anomaly] max_model_bytes`.
    pub anomaly_max_model_bytes: u64,
    /// SLO file patterns (`[slo] files`, then `--slos`).
    pub slo_files: Vec<String>,
    /// `[rules] golden_signals`: evaluate the built-in golden-signal rules.
    pub golden_signals: bool,
    /// Scheduled reports (`[[report]]`).
    pub reports: Vec<crate::report::schedule::Schedule>,
    /// Dashboard files (`[ui] dashboards`, `--dashboards`).
    pub dashboards: Option<PathBuf>,
    /// LogQL rule file patterns (`[logs] rule_files`, then `--log-rules`).
    pub log_rule_files: Vec<String>,
    /// `[logs] pattern_interval`.
    pub logs_pattern_interval: Duration,
    /// `[logs] pattern_warmup`.
    pub logs_pattern_warmup: Duration,
    /// Default group interval.
    pub evaluation_interval: Duration,
    /// Minimum gap between arrival-triggered evaluations of a group (zero: off).
    pub eager_min_interval: Duration,
    /// `$externalLabels`.
    pub external_labels: telltale_common::model::Labels,
    /// Routing file.
    pub routes: Option<PathBuf>,
    /// External URL.
    pub external_url: String,
    /// Runbook file.
    pub runbooks: Option<PathBuf>,
    /// remote_write queues.
    pub remote_write: Vec<crate::forward::RemoteWriteOptions>,
    /// The ClickHouse exporter.
    pub clickhouse: Option<crate::forward::clickhouse::ClickHouseOptions>,
    /// The trace pool (`[traces.pool]`): its owners are also in `traces.pool`.
    pub trace_pool: Option<crate::forward::pool::PoolOptions>,
}

/// Command-line overrides.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
    /// `--tls-dir`
    pub tls_dir: Option<PathBuf>,
    /// `--http-listen`
    pub http_listen: Option<SocketAddr>,
    /// `--quic-listen`
    pub quic_listen: Option<SocketAddr>,
    /// `--api-token` / `TELLTALE_API_TOKEN`
    pub api_token: Option<String>,
    /// `--read-token` / `TELLTALE_READ_TOKEN`
    pub read_token: Option<String>,
    /// `--rules` (added to the file's)
    pub rules: Vec<String>,
    /// `--log-rules` (added to the file's)
    pub log_rules: Vec<String>,
    /// `--detectors` (added to the file's)
    pub detectors: Vec<String>,
    /// `--slos` (added to the file's)
    pub slos: Vec<String>,
    /// `--dashboards`
    pub dashboards: Option<PathBuf>,
    /// `--routes`
    pub routes: Option<PathBuf>,
    /// `--runbooks`
    pub runbooks: Option<PathBuf>,
}

impl Config {
    /// Loads `path` (if given), applies the overrides and validates.
    pub fn load(path: Option<&Path>, o: &Overrides) -> Result<Config, ConfigError> {
        let file: FileConfig = match path {
            Some(p) => load_toml(p)?,
            None => FileConfig::default(),
        };
        let where_ = path.unwrap_or(Path::new("(defaults)"));
        let max_frame = file.max_frame_bytes.unwrap_or(16 << 20);
        if !(1024..=(1u64 << 30)).contains(&max_frame) {
            return Err(ConfigError::invalid(
                where_,
                "max_frame_bytes",
                format!("{max_frame} is out of range: use 1KiB to 1GiB"),
            ));
        }
        let up_interval = file.up_interval.unwrap_or(Duration::from_secs(15));
        if up_interval < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                where_,
                "up_interval",
                "must be at least 1s",
            ));
        }
        let d = crate::metrics::tsdb::Options::default();
        let st = &file.storage;
        let storage = crate::metrics::tsdb::Options {
            retention: st.retention.unwrap_or(d.retention),
            rollup_retention: st.rollup_retention.unwrap_or(d.rollup_retention),
            ooo_window: st.out_of_order_window.unwrap_or(d.ooo_window),
            max_future: st.max_future.unwrap_or(d.max_future),
            head_max_age: st.head_max_age.unwrap_or(d.head_max_age),
            head_samples_per_series: st
                .head_samples_per_series
                .unwrap_or(d.head_samples_per_series),
            max_series_per_agent: st.max_series_per_agent.unwrap_or(d.max_series_per_agent),
            max_series: st.max_series.unwrap_or(d.max_series),
            max_series_remote_write: st
                .max_series_remote_write
                .unwrap_or(d.max_series_remote_write),
            max_new_series_per_remote_write: st
                .max_new_series_per_remote_write
                .unwrap_or(d.max_new_series_per_remote_write),
            maintenance_interval: st.maintenance_interval.unwrap_or(d.maintenance_interval),
            chunk_cache_bytes: st.chunk_cache.unwrap_or(d.chunk_cache_bytes),
            forward_only: st.mode == Some(crate::forward::options::StorageMode::Forward),
            ..d
        };
        for (key, v, min) in [
            (
                "storage.retention",
                storage.retention,
                Duration::from_secs(3600),
            ),
            (
                "storage.rollup_retention",
                storage.rollup_retention,
                Duration::from_secs(3600),
            ),
            (
                "storage.head_max_age",
                storage.head_max_age,
                Duration::from_secs(1),
            ),
            // Zero would spin a core (maintenance) or fail every query (timeout): no key
            // here documents 0s as "off" (eager_min_interval does, and is not in this list).
            (
                "storage.maintenance_interval",
                storage.maintenance_interval,
                Duration::from_millis(10),
            ),
            (
                "query_timeout",
                file.query_timeout.unwrap_or(Duration::from_secs(120)),
                Duration::from_millis(1),
            ),
            (
                "http_header_timeout",
                file.http_header_timeout.unwrap_or(HTTP_HEADER_TIMEOUT),
                Duration::from_secs(1),
            ),
            (
                "lookback_delta",
                file.lookback_delta.unwrap_or(Duration::from_secs(300)),
                Duration::from_millis(1),
            ),
        ] {
            if v < min {
                return Err(ConfigError::invalid(
                    where_,
                    key,
                    format!("must be at least {}", humantime::format_duration(min)),
                ));
            }
        }
        if file.http_max_connections == Some(0) {
            return Err(ConfigError::invalid(
                where_,
                "http_max_connections",
                "must be at least 1",
            ));
        }
        let ld = crate::logs::engine::LogOptions::default();
        let logs = crate::logs::engine::LogOptions {
            retention: file.logs.retention.unwrap_or(ld.retention),
            max_bytes: file.logs.max_bytes.unwrap_or(ld.max_bytes),
            ..ld
        };
        let logs_pattern_interval = file
            .logs
            .pattern_interval
            .unwrap_or(Duration::from_secs(15));
        if logs_pattern_interval < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                where_,
                "logs.pattern_interval",
                "must be at least 1s",
            ));
        }
        if logs.retention < Duration::from_secs(3600) {
            return Err(ConfigError::invalid(
                where_,
                "logs.retention",
                "must be at least 1h",
            ));
        }
        if storage.head_samples_per_series == 0 {
            return Err(ConfigError::invalid(
                where_,
                "storage.head_samples_per_series",
                "must be at least 1",
            ));
        }
        let evaluation_interval = file
            .rules
            .evaluation_interval
            .unwrap_or(Duration::from_secs(60));
        if evaluation_interval < Duration::from_millis(100) {
            return Err(ConfigError::invalid(
                where_,
                "rules.evaluation_interval",
                "must be at least 100ms",
            ));
        }
        let http_listen = o
            .http_listen
            .or(file.http_listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9470)));
        let http_tls = match (&file.http_tls_cert, &file.http_tls_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone(), file.http_client_ca.clone())),
            (None, None) if file.http_client_ca.is_some() => {
                return Err(ConfigError::invalid(
                    where_,
                    "http_client_ca",
                    "needs http_tls_cert and http_tls_key (client certificates come with HTTPS)",
                ));
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    where_,
                    "http_tls_key",
                    "missing: http_tls_cert needs its key",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    where_,
                    "http_tls_cert",
                    "missing: http_tls_key needs its certificate",
                ));
            }
        };
        let scheme = if http_tls.is_some() { "https" } else { "http" };
        let mut rule_files = file.rules.files.clone();
        rule_files.extend(o.rules.iter().cloned());
        let mut log_rule_files = file.logs.rule_files.clone();
        log_rule_files.extend(o.log_rules.iter().cloned());
        let mut detector_files = file.anomaly.files.clone();
        detector_files.extend(o.detectors.iter().cloned());
        let mut reports = Vec::new();
        for (i, r) in file.report.iter().enumerate() {
            let s = crate::report::schedule::Schedule::from_spec(r).map_err(|e| {
                let (k, m) = e.0.split_once(": ").unwrap_or(("", e.0.as_str()));
                ConfigError::invalid(where_, &format!("report[{i}].{k}"), m.to_string())
            })?;
            if reports
                .iter()
                .any(|o: &crate::report::schedule::Schedule| o.name == s.name)
            {
                return Err(ConfigError::invalid(
                    where_,
                    &format!("report[{i}].name"),
                    format!("{:?} names two reports", s.name),
                ));
            }
            reports.push(s);
        }
        let mut slo_files = file.slo.files.clone();
        slo_files.extend(o.slos.iter().cloned());
        let remote_write = crate::forward::options::validate(where_, &file.remote_write)?;
        let clickhouse = file
            .clickhouse
            .as_ref()
            .map(|c| crate::forward::clickhouse::options::validate(where_, c))
            .transpose()?;
        let trace_pool = file
            .traces
            .pool
            .as_ref()
            .map(|p| crate::forward::pool::options::validate(where_, p))
            .transpose()?;
        let mut traces = traces::validate(where_, &file.traces)?;
        traces.pool = trace_pool.as_ref().map(|p| p.owners.clone());
        if storage.forward_only {
            crate::forward::options::check_forward_only(
                where_,
                &remote_write,
                &[
                    ("rules.files (or --rules)", !rule_files.is_empty()),
                    ("anomaly.files (or --detectors)", !detector_files.is_empty()),
                    ("slo.files (or --slos)", !slo_files.is_empty()),
                    ("[[report]]", !reports.is_empty()),
                ],
            )?;
        }
        Ok(Config {
            remote_write,
            clickhouse,
            trace_pool,
            rule_files,
            detector_files,
            anomaly_max_model_bytes: file
                .anomaly
                .max_model_bytes
                .unwrap_or(DEFAULT_ANOMALY_MAX_MODEL_BYTES),
            slo_files,
            // Built in, so not refused in forward mode: there they would only record nothing.
            golden_signals: file.rules.golden_signals.unwrap_or(!storage.forward_only),
            reports,
            dashboards: o.dashboards.clone().or(file.ui.dashboards.clone()),
            log_rule_files,
            logs_pattern_interval,
            logs_pattern_warmup: file
                .logs
                .pattern_warmup
                .unwrap_or(crate::logs::patterns::DEFAULT_WARMUP),
            evaluation_interval,
            eager_min_interval: file
                .rules
                .eager_min_interval
                .unwrap_or(Duration::from_millis(50)),
            external_labels: telltale_common::model::Labels::from_pairs(
                file.rules.external_labels.clone(),
            ),
            routes: o.routes.clone().or(file.alerting.routes.clone()),
            runbooks: o.runbooks.clone().or(file.remediation.runbooks.clone()),
            external_url: file
                .alerting
                .external_url
                .clone()
                .unwrap_or_else(|| format!("{scheme}://{http_listen}")),
            storage,
            logs,
            logs_max_query_bytes: file.logs.max_query_bytes.unwrap_or(1 << 30),
            traces,
            data_dir: o
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| "/var/lib/telltale/aggregator".into()),
            tls_dir: o
                .tls_dir
                .clone()
                .or(file.tls_dir)
                .unwrap_or_else(|| "/etc/telltale/tls".into()),
            http_listen,
            http_tls,
            quic_listen: o
                .quic_listen
                .or(file.quic_listen)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 9471))),
            max_frame_bytes: max_frame as u32,
            lookback_delta: file.lookback_delta.unwrap_or(Duration::from_secs(300)),
            query_max_samples: file.query_max_samples.unwrap_or(50_000_000),
            query_timeout: file.query_timeout.unwrap_or(Duration::from_secs(120)),
            http_header_timeout: file.http_header_timeout.unwrap_or(HTTP_HEADER_TIMEOUT),
            http_max_connections: file.http_max_connections,
            up_interval,
            api_token: o
                .api_token
                .clone()
                .or(file.api_token)
                .filter(|t| !t.is_empty()),
            read_token: o
                .read_token
                .clone()
                .or(file.read_token)
                .filter(|t| !t.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_durations_that_would_spin_or_fail_everything_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.toml");
        for (text, key) in [
            (
                "[storage]\nmaintenance_interval = \"0s\"\n",
                "storage.maintenance_interval",
            ),
            ("query_timeout = \"0s\"\n", "query_timeout"),
            ("lookback_delta = \"0s\"\n", "lookback_delta"),
            ("http_header_timeout = \"0s\"\n", "http_header_timeout"),
            ("http_max_connections = 0\n", "http_max_connections"),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = Config::load(Some(&p), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains("at least"), "{e}");
        }
        // 0s where it is documented to mean "off" stays accepted.
        std::fs::write(&p, "[rules]\neager_min_interval = \"0s\"\n").unwrap();
        assert!(Config::load(Some(&p), &Overrides::default()).is_ok());
    }

    #[test]
    fn the_anomaly_budget_takes_a_size_and_names_a_bad_one() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.toml");
        std::fs::write(&p, "[anomaly]\nmax_model_bytes = \"64MiB\"\n").unwrap();
        let c = Config::load(Some(&p), &Overrides::default()).unwrap();
        assert_eq!(c.anomaly_max_model_bytes, 64 << 20);
        std::fs::write(&p, "[anomaly]\nmax_model_bytes = \"lots\"\n").unwrap();
        let e = Config::load(Some(&p), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("max_model_bytes") && e.contains("invalid size"),
            "{e}"
        );
    }

    #[test]
    fn the_example_config_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/aggregator.toml");
        let c = Config::load(Some(&p), &Overrides::default()).unwrap();
        assert_eq!(c.http_listen.port(), 9470);
        assert_eq!(c.eager_min_interval, Duration::from_millis(50));
        assert_eq!(c.external_url, "http://127.0.0.1:9470");
        assert!(c.golden_signals);
        assert_eq!(c.anomaly_max_model_bytes, DEFAULT_ANOMALY_MAX_MODEL_BYTES);
        // The commented [[report]] example, uncommented, is a valid schedule.
        let text = std::fs::read_to_string(&p).unwrap();
        let example: String = text
            .lines()
            .skip_while(|l| !l.starts_with("# [[report]]"))
            .take_while(|l| l.starts_with("# "))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("r.toml");
        std::fs::write(&q, &example).unwrap();
        let c = Config::load(Some(&q), &Overrides::default()).unwrap();
        assert_eq!(c.reports.len(), 1, "{example}");
        assert_eq!(c.reports[0].name, "weekly-slo");
        assert_eq!(c.reports[0].receivers, ["team-webhook"]);
    }

    #[test]
    fn the_example_rule_and_routing_files_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let routes = crate::alerting::config::RoutingConfig::load(&dir.join("routes.yml")).unwrap();
        // Every receiver of the example (night, ops-log, oncall, team-alertmanager, bus, olap)
        // and the kinds they show.
        assert_eq!(routes.receivers.len(), 6, "{:?}", routes.receivers.keys());
        let kinds: std::collections::BTreeSet<&str> = routes
            .receivers
            .values()
            .flatten()
            .map(|i| i.kind())
            .collect();
        assert!(
            kinds.contains("clickhouse") && kinds.contains("nats"),
            "{kinds:?}"
        );
        assert_eq!(routes.escalation_policies[0].steps.len(), 2);
        assert_eq!(routes.correlation.services.len(), 3);
        assert!(routes.warnings.is_empty(), "{:?}", routes.warnings);
        let files =
            crate::rules::file::expand_glob(&format!("{}/rules/*.yml", dir.display())).unwrap();
        assert!(!files.is_empty());
        for f in files {
            crate::rules::file::load(
                &f,
                Duration::from_secs(60),
                crate::rules::file::Lang::PromQL,
            )
            .unwrap();
        }
    }

    #[test]
    fn flags_override_the_file_and_bad_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        std::fs::write(&p, "data_dir = \"/x\"\nhttp_listen = \"127.0.0.1:1\"\n").unwrap();
        let o = Overrides {
            data_dir: Some("/y".into()),
            ..Default::default()
        };
        let c = Config::load(Some(&p), &o).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/y"));
        assert_eq!(c.http_listen.port(), 1);
        std::fs::write(&p, "http_listen = \"nowhere\"\n").unwrap();
        let e = Config::load(Some(&p), &o).unwrap_err().to_string();
        assert!(e.contains("a.toml: http_listen:"), "{e}");
        std::fs::write(&p, "[storage]\nretention = \"1m\"\n").unwrap();
        let e = Config::load(Some(&p), &o).unwrap_err().to_string();
        assert!(e.contains("storage.retention"), "{e}");
        std::fs::write(&p, "[storage]\nretention = \"30d\"\nmax_series = 5\n").unwrap();
        let c = Config::load(Some(&p), &o).unwrap();
        assert_eq!(c.storage.retention, Duration::from_secs(30 * 86_400));
        assert_eq!(c.storage.max_series, 5);
        std::fs::write(&p, "[rules]\nevaluation_interval = \"1ms\"\n").unwrap();
        let e = Config::load(Some(&p), &o).unwrap_err().to_string();
        assert!(e.contains("rules.evaluation_interval"), "{e}");
        std::fs::write(&p, "[alerting]\nroutez = \"x\"\n").unwrap();
        let e = Config::load(Some(&p), &o).unwrap_err().to_string();
        assert!(e.contains("routez"), "{e}");
        let o2 = Overrides {
            rules: vec!["/r/*.yml".into()],
            log_rules: vec!["/l/*.yml".into()],
            detectors: vec!["/d/*.yml".into()],
            routes: Some("/r.yml".into()),
            ..Default::default()
        };
        std::fs::write(
            &p,
            "[rules]\nfiles = [\"/a.yml\"]\n[logs]\nrule_files = [\"/la.yml\"]\n[alerting]\nroutes = \"/b.yml\"\n[anomaly]\nfiles = [\"/da.yml\"]\n",
        )
        .unwrap();
        let c = Config::load(Some(&p), &o2).unwrap();
        assert_eq!(c.rule_files, ["/a.yml", "/r/*.yml"]);
        assert_eq!(c.log_rule_files, ["/la.yml", "/l/*.yml"]);
        assert_eq!(c.detector_files, ["/da.yml", "/d/*.yml"]);
        assert_eq!(c.routes, Some(PathBuf::from("/r.yml")));
        std::fs::write(&p, "max_frame_bytes = \"1B\"\n").unwrap();
        let e = Config::load(Some(&p), &o).unwrap_err().to_string();
        assert!(e.contains("max_frame_bytes"), "{e}");
    }

    #[test]
    fn forward_mode_needs_a_queue_and_nothing_that_reads_samples() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        let rw = "[[remote_write]]\nurl = \"http://127.0.0.1:1/api/v1/write\"\n";
        let load = |text: &str, o: &Overrides| {
            std::fs::write(&p, text).unwrap();
            Config::load(Some(&p), o)
        };
        let o = Overrides::default();
        let c = load(&format!("[storage]\nmode = \"forward\"\n{rw}"), &o).unwrap();
        assert!(c.storage.forward_only && !c.golden_signals);
        let c = load(&format!("[storage]\nmode = \"store\"\n{rw}"), &o).unwrap();
        assert!(!c.storage.forward_only && c.golden_signals);
        let e = load("[storage]\nmode = \"forward\"\n", &o)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("storage.mode") && e.contains("[[remote_write]]"),
            "{e}"
        );
        let e = load("[storage]\nmode = \"agent\"\n", &o)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mode"), "{e}");
        let with_rules = Overrides {
            rules: vec!["/r/*.yml".into()],
            ..Default::default()
        };
        let e = load(&format!("[storage]\nmode = \"forward\"\n{rw}"), &with_rules)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("storage.mode") && e.contains("rules.files"),
            "{e}"
        );
        let e = load(
            &format!("[slo]\nfiles = [\"/s.yml\"]\n[storage]\nmode = \"forward\"\n{rw}"),
            &o,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("slo.files"), "{e}");
    }
}
