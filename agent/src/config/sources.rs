//! The sections of `agent.toml` for sources beyond the host collectors (scrape targets,
//! StatsD, the textfile directory, health checks) and for what the pipeline does to every
//! series (static labels, host metadata, caps, sampling), with their validation. Every error
//! names the key, as `scrape[0].targets[1]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use regex_lite::Regex;
use serde::Deserialize;
use telltale_common::config::{ConfigError, humantime_duration_opt};

use crate::pipeline::relabel::{self, Rule, RuleConfig};
use crate::pipeline::{Adaptive, Aggregate, PipelineConfig, SamplingRule, Strategy, window_ms};
use crate::sources::checks::{Check, Probe};
use crate::sources::scrape::ScrapeJob;
use crate::sources::statsd::StatsdConfig;

/// `[enrich]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrichSection {
    /// Host metadata added as labels to every series: any of os, os_version, kernel, arch,
    /// container, cloud (default none; all of them are in `telltale_host_info` anyway).
    #[serde(default)]
    pub host_labels: Vec<String>,
}

/// `[limits]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Series held in total (default 200000).
    pub max_series: Option<usize>,
    /// Series per source (default 20000).
    pub max_series_per_source: Option<usize>,
}

/// `[[scrape]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeSection {
    /// The `job` label.
    pub job: String,
    /// `HOST:PORT` of each target.
    pub targets: Vec<String>,
    /// `http` (default) or `https`.
    pub scheme: Option<String>,
    /// Default `/metrics`.
    pub path: Option<String>,
    /// Default: the agent's interval.
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub interval: Option<Duration>,
    /// Default: the interval, at most 10s.
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub timeout: Option<Duration>,
    /// Default false.
    pub honor_labels: Option<bool>,
    /// Default true.
    pub honor_timestamps: Option<bool>,
    /// Largest body read (default 10MiB; 0: no limit); a larger one fails the scrape.
    #[serde(default, deserialize_with = "super::opt_bytes")]
    pub body_size_limit: Option<u64>,
    /// Most samples one scrape may return (default 20000; 0: no limit); more fail the scrape.
    pub sample_limit: Option<usize>,
    /// Most labels on one sample (default 64; 0: no limit).
    pub label_limit: Option<usize>,
    /// Longest label name in bytes (default 256; 0: no limit).
    pub label_name_length_limit: Option<usize>,
    /// Longest label value in bytes (default 4096; 0: no limit).
    pub label_value_length_limit: Option<usize>,
    /// CA for https targets (default: the system's bundle).
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) presented to https targets, with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's key (PEM).
    pub key_file: Option<PathBuf>,
    /// HTTP basic authentication: `{ username = "...", password_file = "..." }`.
    pub basic_auth: Option<BasicAuthSection>,
    /// A file holding a bearer token (`Authorization: Bearer`), read at every scrape.
    pub bearer_token_file: Option<PathBuf>,
    /// Relabel rules for the scraped series.
    #[serde(default)]
    pub relabel: Vec<RuleConfig>,
}

/// `[scrape.basic_auth]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthSection {
    /// The user name.
    pub username: String,
    /// A file holding the password, read at every scrape.
    pub password_file: PathBuf,
}

/// `[statsd]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsdSection {
    /// Default true.
    pub enabled: Option<bool>,
    /// Default `127.0.0.1:8125`.
    pub listen: Option<String>,
    /// Default `10s`.
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub flush_interval: Option<Duration>,
    /// Default `[0.5, 0.9, 0.99]`.
    pub percentiles: Option<Vec<f64>>,
    /// Default 10000.
    pub max_series: Option<usize>,
    /// Default `10m`.
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub expire: Option<Duration>,
    /// Relabel rules.
    #[serde(default)]
    pub relabel: Vec<RuleConfig>,
}

/// `[textfile]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextfileSection {
    /// The directory of `*.prom` files (no default: the collector is off without it).
    pub directory: Option<PathBuf>,
    /// Largest file read (default 10MiB; 0: no limit); a larger file is skipped.
    #[serde(default, deserialize_with = "super::opt_bytes")]
    pub body_size_limit: Option<u64>,
    /// Most samples in one file (default 20000; 0: no limit).
    pub sample_limit: Option<usize>,
    /// Most labels on one sample (default 64; 0: no limit).
    pub label_limit: Option<usize>,
    /// Longest label name in bytes (default 256; 0: no limit).
    pub label_name_length_limit: Option<usize>,
    /// Longest label value in bytes (default 4096; 0: no limit).
    pub label_value_length_limit: Option<usize>,
    /// Relabel rules.
    #[serde(default)]
    pub relabel: Vec<RuleConfig>,
}

/// `[[check]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSection {
    /// The `check` label.
    pub name: String,
    /// `http`, `tcp`, `dns` or `exec`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Default: the agent's interval.
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub interval: Option<Duration>,
    /// Default: the interval, at most 10s.
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub timeout: Option<Duration>,
    /// Extra labels on the check's series (service, team...).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// http: the URL.
    pub url: Option<String>,
    /// http: accepted statuses (default 200-299).
    #[serde(default)]
    pub expect_status: Vec<u16>,
    /// http: a regex the body must match.
    pub body_pattern: Option<String>,
    /// http: CA for https (default: the system's bundle).
    pub ca_file: Option<PathBuf>,
    /// http: WARNING when the certificate expires sooner (default 14 days).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub cert_expiry_warning: Option<Duration>,
    /// tcp: `HOST:PORT`.
    pub address: Option<String>,
    /// dns: the name to resolve.
    pub host: Option<String>,
    /// dns: an address that must be among the answers.
    pub expect_address: Option<String>,
    /// exec: argv (never run through a shell).
    pub command: Option<Vec<String>>,
    /// Relabel rules.
    #[serde(default)]
    pub relabel: Vec<RuleConfig>,
}

/// `[[sampling]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingSection {
    /// Regex on the metric name (anchored).
    pub metrics: String,
    /// `all` (default), `downsample` or `deadband`.
    pub strategy: Option<String>,
    /// downsample: the window.
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub window: Option<Duration>,
    /// downsample: min, max, avg, last (default), sum.
    pub aggregate: Option<String>,
    /// deadband: the change worth sending.
    pub threshold: Option<f64>,
    /// deadband: longest silence (default 5m).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub heartbeat: Option<Duration>,
    /// Never downsampled by adaptive sampling.
    #[serde(default)]
    pub critical: bool,
}

/// `[adaptive]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveSection {
    /// Default true.
    pub enabled: Option<bool>,
    /// Buffered batches above which non-critical metrics are downsampled (default 360).
    pub backlog_batches: Option<u64>,
    /// The window they are downsampled to (default 1m).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub window: Option<Duration>,
}

/// The validated sources.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Relabel rules of the host collectors.
    pub host_relabel: Arc<[Rule]>,
    /// Scrape jobs.
    pub scrape: Vec<Arc<ScrapeJob>>,
    /// The StatsD listener and its rules.
    pub statsd: Option<(StatsdConfig, Arc<[Rule]>)>,
    /// The textfile directory, its rules and its limits.
    pub textfile: Option<(PathBuf, Arc<[Rule]>, crate::sources::textfile::Limits)>,
    /// Health checks.
    pub checks: Vec<Arc<Check>>,
}

/// The parse limits of a scrape job or the textfile collector: `[sample_limit, label_limit,
/// label_name_length_limit, label_value_length_limit]`, each defaulting to
/// [`crate::sources::expfmt::Limits::DEFAULT`]'s.
fn parse_limits(keys: [Option<usize>; 4]) -> crate::sources::expfmt::Limits {
    let d = crate::sources::expfmt::Limits::DEFAULT;
    crate::sources::expfmt::Limits {
        sample_limit: keys[0].unwrap_or(d.sample_limit),
        label_limit: keys[1].unwrap_or(d.label_limit),
        label_name_length_limit: keys[2].unwrap_or(d.label_name_length_limit),
        label_value_length_limit: keys[3].unwrap_or(d.label_value_length_limit),
    }
}

fn rules(src: &Path, key: &str, r: &[RuleConfig]) -> Result<Arc<[Rule]>, ConfigError> {
    relabel::compile(r)
        .map(Arc::from)
        .map_err(|e| ConfigError::invalid(src, &format!("{key}.relabel"), e))
}

/// A scrape job's credentials; their files must be readable now (a typo fails at start, not
/// at the first scrape), and are read again at every scrape.
fn scrape_auth(
    src: &Path,
    key: &str,
    s: &ScrapeSection,
) -> Result<Option<crate::sources::scrape::ScrapeAuth>, ConfigError> {
    use crate::sources::scrape::ScrapeAuth;
    let readable = |k: &str, p: &Path| {
        std::fs::read(p).map(|_| ()).map_err(|e| {
            ConfigError::invalid(src, &format!("{key}.{k}"), format!("{}: {e}", p.display()))
        })
    };
    match (&s.basic_auth, &s.bearer_token_file) {
        (Some(_), Some(_)) => Err(ConfigError::invalid(
            src,
            &format!("{key}.bearer_token_file"),
            "use basic_auth or bearer_token_file, not both",
        )),
        (Some(b), None) => {
            readable("basic_auth.password_file", &b.password_file)?;
            Ok(Some(ScrapeAuth::Basic {
                username: b.username.clone(),
                password_file: b.password_file.clone(),
            }))
        }
        (None, Some(f)) => {
            readable("bearer_token_file", f)?;
            Ok(Some(ScrapeAuth::Bearer {
                token_file: f.clone(),
            }))
        }
        (None, None) => Ok(None),
    }
}

fn anchored(src: &Path, key: &str, pattern: &str) -> Result<Regex, ConfigError> {
    Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| ConfigError::invalid(src, key, format!("invalid regex: {e}")))
}

fn tls(src: &Path, key: &str, ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, ConfigError> {
    crate::sources::httpc::tls_config(ca).map_err(|e| ConfigError::invalid(src, key, e))
}

/// Validates the pipeline sections.
#[allow(clippy::too_many_arguments)]
pub fn pipeline(
    src: &Path,
    agent: &str,
    labels: Option<BTreeMap<String, String>>,
    enrich: Option<EnrichSection>,
    limits: Option<LimitsSection>,
    sampling: Vec<SamplingSection>,
    adaptive: Option<AdaptiveSection>,
) -> Result<PipelineConfig, ConfigError> {
    let mut p = PipelineConfig::plain(agent);
    for (k, v) in labels.unwrap_or_default() {
        if !telltale_common::model::valid_label_name(&k) || k.starts_with("__") || k == "instance" {
            return Err(ConfigError::invalid(
                src,
                &format!("labels.{k}"),
                "not a label name you can set (instance comes from the certificate)",
            ));
        }
        p.static_labels.push((k, v));
    }
    for f in enrich.unwrap_or_default().host_labels {
        if !crate::pipeline::hostinfo::HostInfo::FIELDS.contains(&f.as_str()) {
            return Err(ConfigError::invalid(
                src,
                "enrich.host_labels",
                format!(
                    "{f:?} is not one of {}",
                    crate::pipeline::hostinfo::HostInfo::FIELDS.join(", ")
                ),
            ));
        }
        p.host_labels.push(f);
    }
    let limits = limits.unwrap_or_default();
    p.max_series = limits.max_series.unwrap_or(p.max_series);
    p.max_series_per_source = limits
        .max_series_per_source
        .unwrap_or(p.max_series_per_source);
    if p.max_series == 0 || p.max_series_per_source == 0 {
        return Err(ConfigError::invalid(src, "limits", "caps must be above 0"));
    }
    for (i, s) in sampling.into_iter().enumerate() {
        let key = format!("sampling[{i}]");
        let metrics = anchored(src, &format!("{key}.metrics"), &s.metrics)?;
        let strategy = match s.strategy.as_deref().unwrap_or("all") {
            "all" => Strategy::All,
            "downsample" => {
                let w = s.window.ok_or_else(|| {
                    ConfigError::invalid(src, &format!("{key}.window"), "downsample needs a window")
                })?;
                let agg = s.aggregate.as_deref().unwrap_or("last");
                Strategy::Downsample {
                    window_ms: window_ms(w),
                    aggregate: Aggregate::parse(agg).ok_or_else(|| {
                        ConfigError::invalid(
                            src,
                            &format!("{key}.aggregate"),
                            format!("{agg:?} is not one of min, max, avg, last, sum"),
                        )
                    })?,
                }
            }
            "deadband" => Strategy::Deadband {
                threshold: s.threshold.filter(|t| *t >= 0.0).ok_or_else(|| {
                    ConfigError::invalid(
                        src,
                        &format!("{key}.threshold"),
                        "deadband needs a threshold of 0 or more",
                    )
                })?,
                heartbeat_ms: window_ms(s.heartbeat.unwrap_or(Duration::from_secs(300))),
            },
            other => {
                return Err(ConfigError::invalid(
                    src,
                    &format!("{key}.strategy"),
                    format!("{other:?} is not one of all, downsample, deadband"),
                ));
            }
        };
        if s.critical && strategy != Strategy::All {
            return Err(ConfigError::invalid(
                src,
                &format!("{key}.critical"),
                "a critical metric is never sampled: use strategy \"all\"",
            ));
        }
        p.sampling.push(SamplingRule {
            metrics,
            strategy,
            critical: s.critical,
        });
    }
    let a = adaptive.unwrap_or_default();
    if a.enabled.unwrap_or(true) {
        p.adaptive = Some(Adaptive {
            backlog_batches: a.backlog_batches.unwrap_or(360).max(1),
            window_ms: window_ms(a.window.unwrap_or(Duration::from_secs(60))),
        });
    }
    Ok(p)
}

/// Shortest interval a source may run at: a zero interval would spin (and tokio refuses it).
const MIN_INTERVAL: Duration = Duration::from_millis(100);

fn at_least_min(src: &Path, key: &str, d: Duration) -> Result<Duration, ConfigError> {
    if d < MIN_INTERVAL {
        return Err(ConfigError::invalid(
            src,
            key,
            format!(
                "{} is too short: use 100ms or more",
                humantime::format_duration(d)
            ),
        ));
    }
    Ok(d)
}

fn default_timeout(interval: Duration, t: Option<Duration>) -> Duration {
    t.unwrap_or(interval.min(Duration::from_secs(10)))
}

/// Validates the source sections.
pub fn sources(
    src: &Path,
    interval: Duration,
    host_relabel: &[RuleConfig],
    scrape: Vec<ScrapeSection>,
    statsd: Option<StatsdSection>,
    textfile: Option<TextfileSection>,
    checks: Vec<CheckSection>,
) -> Result<Sources, ConfigError> {
    let mut out = Sources {
        host_relabel: rules(src, "collectors", host_relabel)?,
        ..Default::default()
    };
    let mut jobs = std::collections::HashSet::new();
    for (i, s) in scrape.into_iter().enumerate() {
        let key = format!("scrape[{i}]");
        if s.job.is_empty() || !jobs.insert(s.job.clone()) {
            return Err(ConfigError::invalid(
                src,
                &format!("{key}.job"),
                "each scrape job needs a unique, non-empty name",
            ));
        }
        let scheme = s.scheme.as_deref().unwrap_or("http");
        if scheme != "http" && scheme != "https" {
            return Err(ConfigError::invalid(
                src,
                &format!("{key}.scheme"),
                "use http or https",
            ));
        }
        let path = s.path.as_deref().unwrap_or("/metrics");
        let mut targets = Vec::new();
        for (j, t) in s.targets.iter().enumerate() {
            let uri = crate::sources::httpc::parse_url(&format!("{scheme}://{t}{path}"))
                .map_err(|e| ConfigError::invalid(src, &format!("{key}.targets[{j}]"), e))?;
            targets.push((t.clone(), uri));
        }
        let iv = at_least_min(
            src,
            &format!("{key}.interval"),
            s.interval.unwrap_or(interval),
        )?;
        let timeout = default_timeout(iv, s.timeout);
        if timeout > iv || timeout.is_zero() {
            return Err(ConfigError::invalid(
                src,
                &format!("{key}.timeout"),
                "must be above 0 and at most the interval",
            ));
        }
        let auth = scrape_auth(src, &key, &s)?;
        let client = match (&s.cert_file, &s.key_file) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    src,
                    &format!("{key}.key_file"),
                    "missing: cert_file needs its key",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    src,
                    &format!("{key}.cert_file"),
                    "missing: key_file needs its certificate",
                ));
            }
        };
        if client.is_some() && scheme != "https" {
            return Err(ConfigError::invalid(
                src,
                &format!("{key}.cert_file"),
                "a client certificate needs scheme = \"https\"",
            ));
        }
        out.scrape.push(Arc::new(ScrapeJob {
            job: s.job,
            targets,
            interval: iv,
            timeout,
            honor_labels: s.honor_labels.unwrap_or(false),
            honor_timestamps: s.honor_timestamps.unwrap_or(true),
            body_limit: match s.body_size_limit.unwrap_or(10 << 20) {
                0 => usize::MAX,
                n => usize::try_from(n).unwrap_or(usize::MAX),
            },
            limits: parse_limits([
                s.sample_limit,
                s.label_limit,
                s.label_name_length_limit,
                s.label_value_length_limit,
            ]),
            tls: if scheme == "https" {
                Some(
                    crate::sources::httpc::tls_client_config(s.ca_file.as_deref(), client)
                        .map_err(|e| ConfigError::invalid(src, &format!("{key}.ca_file"), e))?,
                )
            } else {
                None
            },
            auth,
            relabel: rules(src, &key, &s.relabel)?,
        }));
    }
    let st = statsd.unwrap_or_default();
    if st.enabled.unwrap_or(true) {
        let listen = st.listen.as_deref().unwrap_or("127.0.0.1:8125");
        let listen = listen.parse().map_err(|_| {
            ConfigError::invalid(src, "statsd.listen", format!("{listen:?} is not IP:PORT"))
        })?;
        let percentiles = st.percentiles.unwrap_or_else(|| vec![0.5, 0.9, 0.99]);
        if percentiles.iter().any(|q| !(0.0..=1.0).contains(q)) {
            return Err(ConfigError::invalid(
                src,
                "statsd.percentiles",
                "each must be between 0 and 1",
            ));
        }
        out.statsd = Some((
            StatsdConfig {
                listen,
                flush_interval: at_least_min(
                    src,
                    "statsd.flush_interval",
                    st.flush_interval.unwrap_or(Duration::from_secs(10)),
                )?,
                percentiles,
                max_series: st.max_series.unwrap_or(10_000),
                expire: st.expire.unwrap_or(Duration::from_secs(600)),
            },
            rules(src, "statsd", &st.relabel)?,
        ));
    }
    if let Some(t) = textfile
        && let Some(d) = t.directory
    {
        let d_limits = crate::sources::textfile::Limits::default();
        let limits = crate::sources::textfile::Limits {
            max_bytes: t.body_size_limit.unwrap_or(d_limits.max_bytes),
            parse: parse_limits([
                t.sample_limit,
                t.label_limit,
                t.label_name_length_limit,
                t.label_value_length_limit,
            ]),
        };
        out.textfile = Some((d, rules(src, "textfile", &t.relabel)?, limits));
    }
    let mut names = std::collections::HashSet::new();
    for (i, c) in checks.into_iter().enumerate() {
        let key = format!("check[{i}]");
        if c.name.is_empty() || !names.insert(c.name.clone()) {
            return Err(ConfigError::invalid(
                src,
                &format!("{key}.name"),
                "each check needs a unique, non-empty name",
            ));
        }
        let need = |v: Option<String>, k: &str| {
            v.filter(|s| !s.is_empty()).ok_or_else(|| {
                ConfigError::invalid(
                    src,
                    &format!("{key}.{k}"),
                    format!("a {} check needs {k}", c.kind),
                )
            })
        };
        let probe = match c.kind.as_str() {
            "http" => {
                let url_text = need(c.url.clone(), "url")?;
                let url = crate::sources::httpc::parse_url(&url_text)
                    .map_err(|e| ConfigError::invalid(src, &format!("{key}.url"), e))?;
                let https = url.scheme_str() == Some("https");
                Probe::Http {
                    url,
                    expect_status: c.expect_status.clone(),
                    body_pattern: match &c.body_pattern {
                        Some(p) => Some(Regex::new(p).map_err(|e| {
                            ConfigError::invalid(
                                src,
                                &format!("{key}.body_pattern"),
                                format!("invalid regex: {e}"),
                            )
                        })?),
                        None => None,
                    },
                    tls: if https {
                        Some(tls(src, &format!("{key}.ca_file"), c.ca_file.as_deref())?)
                    } else {
                        None
                    },
                    cert_expiry_warning: c
                        .cert_expiry_warning
                        .unwrap_or(Duration::from_secs(14 * 86_400)),
                }
            }
            "tcp" => Probe::Tcp {
                address: need(c.address.clone(), "address")?,
            },
            "dns" => Probe::Dns {
                host: need(c.host.clone(), "host")?,
                expect_address: match &c.expect_address {
                    Some(a) => Some(a.parse().map_err(|_| {
                        ConfigError::invalid(
                            src,
                            &format!("{key}.expect_address"),
                            format!("{a:?} is not an IP address"),
                        )
                    })?),
                    None => None,
                },
            },
            "exec" => {
                let command = c.command.clone().unwrap_or_default();
                if command.is_empty() || command[0].is_empty() {
                    return Err(ConfigError::invalid(
                        src,
                        &format!("{key}.command"),
                        "an exec check needs command = [\"/path/to/plugin\", \"arg\", ...] (run without a shell)",
                    ));
                }
                Probe::Exec { command }
            }
            other => {
                return Err(ConfigError::invalid(
                    src,
                    &format!("{key}.type"),
                    format!("{other:?} is not one of http, tcp, dns, exec"),
                ));
            }
        };
        for k in c.labels.keys() {
            if !telltale_common::model::valid_label_name(k) || k == "check" || k == "instance" {
                return Err(ConfigError::invalid(
                    src,
                    &format!("{key}.labels.{k}"),
                    "not a label name you can set",
                ));
            }
        }
        let iv = at_least_min(
            src,
            &format!("{key}.interval"),
            c.interval.unwrap_or(interval),
        )?;
        let timeout = default_timeout(iv, c.timeout);
        if timeout.is_zero() {
            return Err(ConfigError::invalid(
                src,
                &format!("{key}.timeout"),
                "must be above 0",
            ));
        }
        out.checks.push(Arc::new(Check {
            name: c.name,
            labels: c.labels.into_iter().collect(),
            interval: iv,
            timeout,
            probe,
            relabel: rules(src, &key, &c.relabel)?,
        }));
    }
    Ok(out)
}
