//! The agent's configuration file (`agent.toml`) and its validation into [`Config`].
//! Every command-line flag overrides the matching key.

pub mod aggregators;
pub mod logs;
pub mod otlp;
pub mod sources;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use telltale_common::config::{ConfigError, byte_size, humantime_duration_opt, load_toml};
use telltale_common::tls::{TlsPaths, valid_agent_name};

/// `agent.toml` as written by the operator.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The agent's name; must match the common name of its certificate (the aggregator takes
    /// the name from the certificate). Default: the host name.
    pub name: Option<String>,
    /// The aggregator's QUIC address, `HOST:PORT` (default `127.0.0.1:9471`).
    pub aggregator: Option<String>,
    /// Several aggregators (exclusive with `aggregator`), see [`aggregators`].
    pub aggregators: Option<Vec<String>>,
    /// How `aggregators` are used: `failover` (default) or `shard`.
    pub mode: Option<String>,
    /// The name to verify in the aggregator's certificate (default: HOST of `aggregator`).
    pub server_name: Option<String>,
    /// Where the agent keeps its buffer (default `/var/lib/telltale/agent`).
    pub data_dir: Option<PathBuf>,
    /// Collection interval (default `10s`; `1s` works).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub interval: Option<Duration>,
    /// TLS files.
    pub tls: Option<TlsSection>,
    /// Buffer settings.
    pub buffer: Option<BufferSection>,
    /// Shipping settings.
    pub shipper: Option<ShipperSection>,
    /// Optional collectors.
    pub collectors: Option<CollectorsSection>,
    /// Static labels added to every series that lacks them.
    pub labels: Option<BTreeMap<String, String>>,
    /// Host metadata as labels.
    pub enrich: Option<sources::EnrichSection>,
    /// Series caps.
    pub limits: Option<sources::LimitsSection>,
    /// Prometheus endpoints to scrape.
    #[serde(default)]
    pub scrape: Vec<sources::ScrapeSection>,
    /// The StatsD listener.
    pub statsd: Option<sources::StatsdSection>,
    /// The textfile collector.
    pub textfile: Option<sources::TextfileSection>,
    /// Health checks.
    #[serde(default)]
    pub check: Vec<sources::CheckSection>,
    /// Remediation actions the aggregator may ask for (`[[action]]`); none by default, and
    /// then nothing can ever run.
    #[serde(default)]
    pub action: Vec<crate::remediate::ActionSection>,
    /// Sampling rules, first match wins.
    #[serde(default)]
    pub sampling: Vec<sources::SamplingSection>,
    /// Adaptive sampling.
    pub adaptive: Option<sources::AdaptiveSection>,
    /// Log sources (`[[log]]`); none by default.
    #[serde(default)]
    pub log: Vec<logs::LogSection>,
    /// The OTLP receiver; off by default.
    pub otlp: Option<otlp::OtlpSection>,
}

/// `[collectors]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorsSection {
    /// `node_tcp_connection_states{state}` from /proc/net/tcp (default false: costly on hosts
    /// with much memory, as node_exporter's tcpstat collector, which is also off by default).
    pub tcpstat: Option<bool>,
    /// Relabel rules for the host collectors' series.
    #[serde(default)]
    pub relabel: Vec<crate::pipeline::relabel::RuleConfig>,
}

/// `[tls]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The CA certificate that signed the aggregator (default `/etc/telltale/tls/ca.crt`).
    pub ca: Option<PathBuf>,
    /// This agent's certificate (default `/etc/telltale/tls/agent.crt`).
    pub cert: Option<PathBuf>,
    /// This agent's private key (default `/etc/telltale/tls/agent.key`).
    pub key: Option<PathBuf>,
}

/// `[buffer]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferSection {
    /// Byte cap of the on-disk buffer (default `512MiB`); the oldest batches go first.
    #[serde(default, deserialize_with = "opt_bytes")]
    pub max_bytes: Option<u64>,
    /// Byte cap of the log batches within it (default `64MiB`): a flood of logs drops its own
    /// oldest batches, never a metric batch.
    #[serde(default, deserialize_with = "opt_bytes")]
    pub logs_max_bytes: Option<u64>,
}

/// `[shipper]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipperSection {
    /// Most batches sent and not yet acknowledged (default 32).
    pub max_in_flight: Option<usize>,
}

pub(crate) fn opt_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    byte_size(d).map(Some)
}

/// Validated runtime settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Agent name.
    pub name: String,
    /// Aggregator address (the preferred one of `aggregators`).
    pub aggregator: String,
    /// Name verified in the server certificate (the preferred one's).
    pub server_name: String,
    /// Every aggregator, in this agent's order of preference.
    pub aggregators: Vec<aggregators::AggregatorAddr>,
    /// How they are used.
    pub mode: aggregators::Mode,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Collection interval.
    pub interval: Duration,
    /// TLS files.
    pub tls: TlsPaths,
    /// Buffer cap.
    pub buffer_max_bytes: u64,
    /// The log batches' cap within it.
    pub buffer_logs_max_bytes: u64,
    /// Log sources.
    pub logs: logs::LogSources,
    /// The OTLP receiver, when enabled.
    pub otlp: Option<crate::sources::otlp::OtlpConfig>,
    /// In-flight limit.
    pub max_in_flight: usize,
    /// Optional collectors switched on.
    pub optional: crate::sources::host::Optional,
    /// What happens to every series on its way to the buffer.
    pub pipeline: crate::pipeline::PipelineConfig,
    /// Sources besides the host collectors.
    pub sources: sources::Sources,
    /// The remediation allowlist.
    pub actions: Vec<crate::remediate::Action>,
}

/// Command-line overrides.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--name`
    pub name: Option<String>,
    /// `--aggregator`
    pub aggregator: Option<String>,
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
    /// `--ca`
    pub ca: Option<PathBuf>,
    /// `--cert`
    pub cert: Option<PathBuf>,
    /// `--key`
    pub key: Option<PathBuf>,
    /// `--interval`
    pub interval: Option<Duration>,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

impl Config {
    /// Loads `path` (if given), applies the overrides and validates.
    pub fn load(path: Option<&Path>, o: &Overrides) -> Result<Config, ConfigError> {
        let file: FileConfig = match path {
            Some(p) => load_toml(p)?,
            None => FileConfig::default(),
        };
        let src = path.unwrap_or(Path::new("(command line)"));
        let name = o.name.clone().or(file.name).unwrap_or_else(hostname);
        if !valid_agent_name(&name) {
            return Err(ConfigError::invalid(
                src,
                "name",
                format!("{name:?} is not a valid agent name: use 1-64 of A-Z a-z 0-9 . _ -"),
            ));
        }
        let (aggregators, mode) = aggregators::resolve(
            src,
            &name,
            &aggregators::Given {
                cli: o.aggregator.as_deref(),
                single: file.aggregator.as_deref(),
                list: file.aggregators.as_deref(),
                mode: file.mode.as_deref(),
                server_name: file.server_name.as_deref(),
            },
        )?;
        let (aggregator, server_name) = aggregators
            .first()
            .map(|a| (a.address.clone(), a.server_name.clone()))
            .unwrap_or_default();
        let interval = o
            .interval
            .or(file.interval)
            .unwrap_or(Duration::from_secs(10));
        if interval < Duration::from_millis(100) || interval > Duration::from_secs(3600) {
            return Err(ConfigError::invalid(
                src,
                "interval",
                format!(
                    "{} is out of range: use 100ms to 1h",
                    humantime::format_duration(interval)
                ),
            ));
        }
        let tls = file.tls.unwrap_or_default();
        let dir = Path::new("/etc/telltale/tls");
        let logs_max_bytes = file
            .buffer
            .as_ref()
            .and_then(|b| b.logs_max_bytes)
            .unwrap_or(crate::buffer::DEFAULT_LOG_CAP);
        let max_bytes = file.buffer.and_then(|b| b.max_bytes).unwrap_or(512 << 20);
        if logs_max_bytes < 1 << 20 || logs_max_bytes > max_bytes {
            return Err(ConfigError::invalid(
                src,
                "buffer.logs_max_bytes",
                "must be at least 1MiB and at most buffer.max_bytes",
            ));
        }
        let logs = logs::validate(src, &file.log)?;
        let otlp = otlp::validate(src, file.otlp)?;
        if max_bytes < 1 << 20 {
            return Err(ConfigError::invalid(
                src,
                "buffer.max_bytes",
                "must be at least 1MiB",
            ));
        }
        let max_in_flight = file.shipper.and_then(|s| s.max_in_flight).unwrap_or(32);
        if !(1..=1024).contains(&max_in_flight) {
            return Err(ConfigError::invalid(
                src,
                "shipper.max_in_flight",
                "use 1 to 1024",
            ));
        }
        let collectors = file.collectors.unwrap_or_default();
        let pipeline = sources::pipeline(
            src,
            &name,
            file.labels,
            file.enrich,
            file.limits,
            file.sampling,
            file.adaptive,
        )?;
        let sources = sources::sources(
            src,
            interval,
            &collectors.relabel,
            file.scrape,
            file.statsd,
            file.textfile,
            file.check,
        )?;
        let mut actions = Vec::new();
        for a in file.action {
            let v = a
                .validate()
                .map_err(|m| ConfigError::invalid(src, "action", m))?;
            if actions
                .iter()
                .any(|x: &crate::remediate::Action| x.name == v.name)
            {
                return Err(ConfigError::invalid(
                    src,
                    "action",
                    format!("action {:?} is defined twice", v.name),
                ));
            }
            actions.push(v);
        }
        Ok(Config {
            actions,
            pipeline,
            sources,
            name,
            server_name,
            aggregator,
            aggregators,
            mode,
            data_dir: o
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| "/var/lib/telltale/agent".into()),
            interval,
            tls: TlsPaths {
                ca: o
                    .ca
                    .clone()
                    .or(tls.ca)
                    .unwrap_or_else(|| dir.join("ca.crt")),
                cert: o
                    .cert
                    .clone()
                    .or(tls.cert)
                    .unwrap_or_else(|| dir.join("agent.crt")),
                key: o
                    .key
                    .clone()
                    .or(tls.key)
                    .unwrap_or_else(|| dir.join("agent.key")),
            },
            buffer_max_bytes: max_bytes,
            buffer_logs_max_bytes: logs_max_bytes,
            logs,
            otlp,
            max_in_flight,
            optional: crate::sources::host::Optional {
                tcpstat: collectors.tcpstat.unwrap_or(false),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/agent.toml");
        // The packaged file leaves `name` to the host name; the test host's name may be anything.
        let o = Overrides {
            name: Some("web-01".into()),
            ..Default::default()
        };
        let c = Config::load(Some(&p), &o).unwrap();
        assert_eq!(c.interval, Duration::from_secs(10));
        assert_eq!(c.server_name, "localhost");
        assert_eq!(c.buffer_max_bytes, 512 << 20);
    }

    /// Every section of the file, as the commented examples in config/agent.toml show them.
    const FULL: &str = r#"
name = "web-1"
[collectors]
tcpstat = true
[[collectors.relabel]]
source_labels = ["__name__"]
regex = "node_netstat_.*"
action = "drop"
[labels]
datacenter = "eu-1"
[enrich]
host_labels = ["os", "arch"]
[limits]
max_series_per_source = 100
max_series = 1000
[[sampling]]
metrics = "node_network_.*"
strategy = "downsample"
window = "1m"
aggregate = "avg"
[[sampling]]
metrics = "temp"
strategy = "deadband"
threshold = 0.5
[[sampling]]
metrics = "orders"
critical = true
[adaptive]
backlog_batches = 10
window = "30s"
[statsd]
listen = "127.0.0.1:9125"
percentiles = [0.5]
[textfile]
directory = "/tmp/tf"
body_size_limit = "1MiB"
sample_limit = 500
label_limit = 10
label_name_length_limit = 100
label_value_length_limit = 1000
[[scrape]]
job = "node"
targets = ["127.0.0.1:9100", "[::1]:9100"]
interval = "15s"
body_size_limit = "2MiB"
sample_limit = 0
label_limit = 20
label_name_length_limit = 64
label_value_length_limit = 512
[[scrape.relabel]]
source_labels = ["__name__"]
regex = "go_.*"
action = "drop"
[[check]]
name = "web"
type = "http"
url = "https://localhost:8443/health"
body_pattern = "ok"
[[check]]
name = "pg"
type = "tcp"
address = "127.0.0.1:5432"
[[check]]
name = "dns"
type = "dns"
host = "localhost"
expect_address = "127.0.0.1"
[[check]]
name = "disk"
type = "exec"
command = ["/bin/true"]
"#;

    #[test]
    fn actions_load_and_duplicates_are_named() {
        let c = load_text(
            "[[action]]\nname = \"restart\"\nargv = [\"/usr/bin/systemctl\", \"restart\", \"{unit}\"]\n[[action.param]]\nname = \"unit\"\npattern = \"[a-z]+\\\\.service\"\n",
        )
        .unwrap();
        assert_eq!(c.actions.len(), 1);
        assert_eq!(c.actions[0].params[0].max_len, 64);
        let e = load_text(
            "[[action]]\nname = \"a\"\nargv = [\"/bin/true\"]\n[[action]]\nname = \"a\"\nargv = [\"/bin/true\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("defined twice"), "{e}");
        let e = load_text("[[action]]\nname = \"a\"\nargv = [\"true\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("action:") && e.contains("absolute path"), "{e}");
    }

    fn load_text(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.toml");
        std::fs::write(&p, text).unwrap();
        Config::load(Some(&p), &Overrides::default())
    }

    #[test]
    fn the_otlp_receiver_runs_only_when_enabled() {
        assert!(load_text("name = \"a\"\n").unwrap().otlp.is_none());
        assert!(load_text("name = \"a\"\n[otlp]\n").unwrap().otlp.is_none());
        let o = load_text("name = \"a\"\n[otlp]\nenabled = true\n")
            .unwrap()
            .otlp
            .expect("enabled");
        assert_eq!(o.http_listen.to_string(), "127.0.0.1:4318");
        assert_eq!(o.grpc_listen.to_string(), "127.0.0.1:4317");
        assert_eq!(o.max_series, 1_000);
    }

    #[test]
    fn every_source_and_pipeline_section_parses() {
        let c = load_text(FULL).unwrap();
        let s = &c.sources;
        assert_eq!(s.scrape[0].targets.len(), 2);
        assert_eq!(s.scrape[0].timeout, Duration::from_secs(10));
        assert_eq!(s.checks.len(), 4);
        assert_eq!(s.statsd.as_ref().unwrap().0.listen.port(), 9125);
        let (_, _, tf) = s.textfile.as_ref().expect("textfile");
        assert_eq!(tf.max_bytes, 1 << 20);
        assert_eq!(tf.parse.sample_limit, 500);
        assert_eq!(tf.parse.label_value_length_limit, 1000);
        assert_eq!(s.scrape[0].body_limit, 2 << 20);
        assert_eq!(s.scrape[0].limits.sample_limit, 0, "0: no limit");
        assert_eq!(s.scrape[0].limits.label_limit, 20);
        assert_eq!(s.scrape[0].limits.label_name_length_limit, 64);
        assert_eq!(c.pipeline.sampling.len(), 3);
        assert_eq!(c.pipeline.max_series, 1000);
        assert_eq!(c.pipeline.adaptive.as_ref().unwrap().window_ms, 30_000);
        assert_eq!(
            c.pipeline.static_labels,
            vec![("datacenter".into(), "eu-1".into())]
        );
    }

    #[test]
    fn source_errors_name_the_key() {
        for (edit, want) in [
            (
                "[[check]]\nname = \"x\"\ntype = \"ping\"\n",
                "check[0].type: \"ping\" is not one of",
            ),
            (
                "[[check]]\nname = \"x\"\ntype = \"http\"\n",
                "check[0].url: a http check needs url",
            ),
            (
                "[[check]]\nname = \"x\"\ntype = \"exec\"\ncommand = []\n",
                "check[0].command: an exec check needs",
            ),
            (
                "[[scrape]]\njob = \"a\"\ntargets = [\"bad host:x\"]\n",
                "scrape[0].targets[0]: invalid URL",
            ),
            (
                "[[scrape]]\njob = \"a\"\ntargets = []\ninterval = \"5s\"\ntimeout = \"10s\"\n",
                "scrape[0].timeout",
            ),
            (
                "[[scrape]]\njob = \"a\"\ntargets = []\n[[scrape.relabel]]\naction = \"keep\"\n",
                "scrape[0].relabel: rule 0",
            ),
            (
                "[[sampling]]\nmetrics = \"(\"\n",
                "sampling[0].metrics: invalid regex",
            ),
            (
                "[[sampling]]\nmetrics = \"x\"\nstrategy = \"downsample\"\n",
                "sampling[0].window",
            ),
            (
                "[[sampling]]\nmetrics = \"x\"\nstrategy = \"deadband\"\ncritical = true\nthreshold = 1.0\n",
                "sampling[0].critical",
            ),
            ("[labels]\ninstance = \"x\"\n", "labels.instance"),
            (
                "[enrich]\nhost_labels = [\"color\"]\n",
                "enrich.host_labels",
            ),
            ("[statsd]\nlisten = \"nowhere\"\n", "statsd.listen"),
            (
                "[statsd]\nflush_interval = \"0s\"\n",
                "statsd.flush_interval: 0s is too short",
            ),
            (
                "[[check]]\nname = \"x\"\ntype = \"tcp\"\naddress = \"a:1\"\ninterval = \"0s\"\n",
                "check[0].interval",
            ),
            (
                "[[check]]\nname = \"x\"\ntype = \"tcp\"\naddress = \"a:1\"\ntimeout = \"0s\"\n",
                "check[0].timeout",
            ),
            (
                "[[scrape]]\njob = \"a\"\ntargets = []\ninterval = \"10ms\"\n",
                "scrape[0].interval",
            ),
            (
                "[otlp]\nenabled = true\nhttp_listen = \"4318\"\n",
                "otlp.http_listen",
            ),
            (
                "[otlp]\nenabled = true\nmax_series = 0\n",
                "otlp.max_series",
            ),
            (
                "[otlp]\nenabled = true\ngrpc_listen = \"x\"\n",
                "otlp.grpc_listen",
            ),
            ("[otlp]\ngrpc = true\n", "grpc"),
        ] {
            let e = load_text(&format!("name = \"a\"\n{edit}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{edit}: {e}");
        }
    }

    #[test]
    fn flags_override_and_errors_name_the_key() {
        let o = Overrides {
            name: Some("web-1".into()),
            aggregator: Some("[::1]:9471".into()),
            interval: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        let c = Config::load(None, &o).unwrap();
        assert_eq!((c.name.as_str(), c.server_name.as_str()), ("web-1", "::1"));
        assert_eq!(c.interval, Duration::from_secs(1));
        let bad = Overrides {
            name: Some("a b".into()),
            ..Default::default()
        };
        let e = Config::load(None, &bad).unwrap_err().to_string();
        assert!(e.contains(": name: "), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.toml");
        std::fs::write(&p, "name = \"x\"\n[buffer]\nmax_bytes = \"lots\"\n").unwrap();
        let e = Config::load(Some(&p), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("agent.toml: buffer.max_bytes: "), "{e}");
    }
}
