//! The PromQL compliance harness: the compliance tester's query set, the demo service's data
//! generated deterministically, loaded into a real Prometheus (backfilled with promtool) and into
//! Telltale (remote_write), every case run against both and compared as the tester does.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use telltale_common::model::{Labels, Sample, SeriesSamples};

use crate::{Aggregator, certs_init, http_get, http_post, start_fresh_aggregator, wait_for};

/// Debian's Prometheus, the reference.
pub const PROMETHEUS: &str = "/usr/bin/prometheus";
/// Debian's promtool.
pub const PROMTOOL: &str = "/usr/bin/promtool";

/// A reference Prometheus and a Telltale aggregator holding the same demo data.
pub struct Peers {
    /// The reference (killed on drop).
    pub prometheus: Child,
    /// Its HTTP address.
    pub prometheus_addr: SocketAddr,
    /// Telltale.
    pub telltale: Aggregator,
    /// First sample time (ms).
    pub start: i64,
    /// Last sample time (ms).
    pub end: i64,
    /// The scratch directory.
    pub dir: tempfile::TempDir,
}

impl Drop for Peers {
    fn drop(&mut self) {
        let _ = self.prometheus.kill();
        let _ = self.prometheus.wait();
    }
}

/// Where the compliance query set lives: beside the repository (`../shared/promql-compliance`,
/// the upstream PromQL compliance tester's query and variant files), not in it.
pub fn compliance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/promql-compliance")
}

/// The compliance data directory if present. Absent outside CI, the test using it is skipped
/// with a printed reason; absent in CI, that is a failure (CI provides it).
pub fn compliance_data() -> Option<PathBuf> {
    let d = compliance_dir();
    if d.join("promql-test-queries.yml").exists() {
        return Some(d);
    }
    assert!(
        std::env::var("CI").is_err(),
        "{} is missing in CI: the PromQL compliance queries come from there",
        d.display()
    );
    eprintln!(
        "skipped: {} is absent (the PromQL compliance queries live beside the repository)",
        d.display()
    );
    None
}

/// The compliance query set, expanded (539 cases).
pub fn cases() -> anyhow::Result<Vec<Case>> {
    let shared = compliance_dir();
    let queries = std::fs::read_to_string(shared.join("promql-test-queries.yml"))
        .with_context(|| format!("{}", shared.display()))?;
    let variants = std::fs::read_to_string(shared.join("variant-args.yml"))?;
    Ok(expand(&queries, &variants))
}

impl Peers {
    /// Generates 65 minutes of demo data ending now, backfills it into a new Prometheus with
    /// promtool, sends it to a new Telltale over remote_write, and waits for both.
    pub fn start() -> anyhow::Result<Peers> {
        let now = telltale_common::model::now_ms() / 10_000 * 10_000;
        let (start, end) = (now - 65 * 60_000, now);
        Peers::start_with(&demo_data(start, end), start, end)
    }

    /// Like [`Peers::start`] with the given series, covering `[start, end]`.
    pub fn start_with(data: &[SeriesSamples], start: i64, end: i64) -> anyhow::Result<Peers> {
        let dir = tempfile::tempdir()?;
        let om = dir.path().join("data.om");
        std::fs::write(&om, openmetrics(data))?;
        let blocks = dir.path().join("prom");
        let st = Command::new(PROMTOOL)
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&om)
            .arg(&blocks)
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(st.success(), "promtool backfill failed");
        let (mut prometheus, prometheus_addr) =
            spawn_prometheus(dir.path(), &blocks, &["--storage.tsdb.retention.time=30d"])?;
        let started = (|| -> anyhow::Result<_> {
            let tls = dir.path().join("tls");
            certs_init(&tls)?;
            Ok((prometheus_addr, start_fresh_aggregator(&tls, dir.path())?))
        })();
        // Until `Peers` owns it (and kills it when dropped), a failure must not leave
        // Prometheus running.
        let (prometheus_addr, telltale) = match started {
            Ok(s) => s,
            Err(e) => {
                let _ = prometheus.kill();
                let _ = prometheus.wait();
                return Err(e);
            }
        };
        let peers = Peers {
            prometheus,
            prometheus_addr,
            telltale,
            start,
            end,
            dir,
        };
        for chunk in data.chunks(20) {
            let body = telltale_aggregator::api::remote_write::encode(chunk);
            let (status, resp) = http_post(
                peers.telltale.http,
                "/api/v1/write",
                "application/x-protobuf",
                &body,
            )?;
            anyhow::ensure!(status == 204, "remote_write: {status} {resp}");
        }
        wait_for(Duration::from_secs(60), || {
            http_get(peers.prometheus_addr, "/-/ready")
                .ok()
                .filter(|r| r.0 == 200)
        })
        .context("prometheus did not become ready")?;
        Ok(peers)
    }
}

/// Starts Debian's Prometheus on a free loopback port, storing in `tsdb`, with a minimal
/// configuration in `dir` and `extra` flags; returns it (the caller kills it) and its address.
pub fn spawn_prometheus(
    dir: &Path,
    tsdb: &Path,
    extra: &[&str],
) -> anyhow::Result<(Child, SocketAddr)> {
    spawn_prometheus_with(dir, tsdb, "global:\n  scrape_interval: 1h\n", extra)
}

/// [`spawn_prometheus`] with the configuration file's text.
pub fn spawn_prometheus_with(
    dir: &Path,
    tsdb: &Path,
    config: &str,
    extra: &[&str],
) -> anyhow::Result<(Child, SocketAddr)> {
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, config)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(PROMETHEUS)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", tsdb.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start prometheus")?;
    Ok((child, format!("127.0.0.1:{port}").parse()?))
}

/// One expanded case.
#[derive(Debug, Clone)]
pub struct Case {
    /// The query.
    pub query: String,
    /// Whether both must fail.
    pub should_fail: bool,
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if let Some(inner) = s.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        inner.replace("''", "'")
    } else if let Some(inner) = s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        inner.replace("\\\"", "\"").replace("\\\\", "\\")
    } else {
        s.to_string()
    }
}

fn list(s: &str) -> Vec<String> {
    let s = s.trim().trim_start_matches('[').trim_end_matches(']');
    // Values are quoted and contain no commas.
    s.split(',')
        .map(unquote)
        .filter(|v| !v.is_empty())
        .collect()
}

/// Expands the query file with the variant arguments into cases.
pub fn expand(queries_yml: &str, variants_yml: &str) -> Vec<Case> {
    let mut variants: Vec<(String, Vec<String>)> = Vec::new();
    for line in variants_yml.lines() {
        if line.starts_with('#') || !line.contains(':') {
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            variants.push((k.trim().to_string(), list(v)));
        }
    }
    let mut templates: Vec<(String, Vec<String>, bool)> = Vec::new();
    for line in queries_yml.lines() {
        let t = line.trim();
        if let Some(q) = t.strip_prefix("- query:") {
            templates.push((unquote(q), Vec::new(), false));
        } else if let Some(v) = t.strip_prefix("variant_args:") {
            if let Some(last) = templates.last_mut() {
                last.1 = list(v);
            }
        } else if t.starts_with("should_fail:")
            && t.ends_with("true")
            && let Some(last) = templates.last_mut()
        {
            last.2 = true;
        }
    }
    let mut cases = Vec::new();
    for (q, args, fail) in templates {
        let mut expanded = vec![q];
        for a in &args {
            let values = variants
                .iter()
                .find(|(k, _)| k == a)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            expanded = expanded
                .into_iter()
                .flat_map(|q| {
                    values
                        .iter()
                        .map(move |v| q.replace(&format!("{{{{.{a}}}}}"), v))
                        .collect::<Vec<_>>()
                })
                .collect();
        }
        cases.extend(expanded.into_iter().map(|query| Case {
            query,
            should_fail: fail,
        }));
    }
    cases
}

/// A small deterministic pseudo-random source (xorshift), so both systems see the same data.
pub struct Rng(pub u64);
impl Rng {
    /// The next value in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The demo service's series, scraped every 5 s from three instances over `[start, end]` (ms).
pub fn demo_data(start: i64, end: i64) -> Vec<SeriesSamples> {
    let mut out = Vec::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let times: Vec<i64> = (0..)
        .map(|k| start + k * 5000)
        .take_while(|t| *t <= end)
        .collect();
    for i in 0..3 {
        let instance = format!("demo.promlabs.com:1000{i}");
        let base = |name: &str, extra: &[(&str, &str)]| {
            let mut pairs = vec![
                ("__name__", name.to_string()),
                ("job", "demo".to_string()),
                ("instance", instance.clone()),
            ];
            pairs.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
            Labels::from_pairs(pairs)
        };
        let mut push = |labels: Labels, f: &mut dyn FnMut(usize, i64) -> Option<f64>| {
            let samples: Vec<Sample> = times
                .iter()
                .enumerate()
                .filter_map(|(k, &t)| f(k, t).map(|v| Sample(t, v)))
                .collect();
            out.push(SeriesSamples { labels, samples });
        };
        for (j, ty) in ["free", "used", "buffers", "cached"].iter().enumerate() {
            let amp = 1e8 * (j + 1) as f64;
            push(
                base("demo_memory_usage_bytes", &[("type", ty)]),
                &mut |k, _| Some(2e9 + amp * ((k as f64) / 40.0 + i as f64).sin().abs()),
            );
        }
        push(base("demo_num_cpus", &[]), &mut |_, _| {
            Some([4.0, 8.0, 2.0][i])
        });
        for (j, mode) in ["idle", "user", "system"].iter().enumerate() {
            let mut total = 0.0;
            let reset_at = 300 + 100 * i + 50 * j;
            let mut r = Rng(0x1234_5678 + (i * 10 + j) as u64);
            push(
                base("demo_cpu_usage_seconds_total", &[("mode", mode)]),
                &mut |k, _| {
                    if k == reset_at {
                        total = 0.0;
                    }
                    total += 5.0 * (0.2 + r.uniform()) * (j + 1) as f64;
                    Some((total * 1000.0).round() / 1000.0)
                },
            );
        }
        let mut disk = 1e10;
        push(base("demo_disk_usage_bytes", &[]), &mut |k, _| {
            disk += 1000.0 * (k % 7) as f64;
            Some(disk)
        });
        let les = ["0.0002", "0.001", "0.01", "0.1", "0.5", "1", "+Inf"];
        for method in ["GET", "POST"] {
            let mut counts = [0.0f64; 7];
            let mut sum = 0.0;
            let mut per_k: Vec<([f64; 7], f64)> = Vec::new();
            for _ in &times {
                for _ in 0..(3 + (rng.uniform() * 5.0) as usize) {
                    let latency = rng.uniform().powi(3) * 1.2;
                    sum += latency;
                    for (b, le) in les.iter().enumerate() {
                        if *le == "+Inf" || latency <= le.parse::<f64>().unwrap_or(f64::INFINITY) {
                            counts[b] += 1.0;
                        }
                    }
                }
                per_k.push((counts, (sum * 1e6).round() / 1e6));
            }
            let extra = [("method", method), ("path", "/api/foo"), ("status", "200")];
            for (b, le) in les.iter().enumerate() {
                let mut e = extra.to_vec();
                e.push(("le", le));
                push(
                    base("demo_api_request_duration_seconds_bucket", &e),
                    &mut |k, _| Some(per_k[k].0[b]),
                );
            }
            push(
                base("demo_api_request_duration_seconds_sum", &extra),
                &mut |k, _| Some(per_k[k].1),
            );
            push(
                base("demo_api_request_duration_seconds_count", &extra),
                &mut |k, _| Some(per_k[k].0[6]),
            );
        }
        let mut last = 0.0;
        push(
            base("demo_batch_last_success_timestamp_seconds", &[]),
            &mut |k, t| {
                if k % 37 == 0 {
                    last = (t / 1000) as f64;
                }
                Some(last)
            },
        );
        // Present for 5 minutes, absent for 5 minutes, and so on.
        push(base("demo_intermittent_metric", &[]), &mut |k, _| {
            ((k / 60) % 2 == 0).then_some(k as f64)
        });
    }
    out
}

/// The series as OpenMetrics text for `promtool tsdb create-blocks-from openmetrics`.
pub fn openmetrics(series: &[SeriesSamples]) -> String {
    let mut by_name: std::collections::BTreeMap<&str, Vec<&SeriesSamples>> = Default::default();
    for s in series {
        by_name
            .entry(s.labels.metric_name().unwrap_or(""))
            .or_default()
            .push(s);
    }
    let mut out = String::new();
    for (name, list) in by_name {
        let _ = writeln!(out, "# TYPE {name} unknown");
        for s in list {
            let labels: Vec<String> = s
                .labels
                .iter()
                .filter(|(k, _)| *k != "__name__")
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            for x in &s.samples {
                let _ = writeln!(
                    out,
                    "{name}{{{}}} {} {}.{:03}",
                    labels.join(","),
                    telltale_aggregator::metrics::promql::format::format_value(x.1),
                    x.0 / 1000,
                    x.0 % 1000
                );
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

/// A series' key for comparison: its labels, with label values that are numbers written
/// to 12 significant digits — `count_values` turns values into labels, and a last-ulp
/// difference between Go's and Rust's math libraries must not make two series of one.
fn series_key(metric: &Value) -> String {
    let Some(m) = metric.as_object() else {
        return metric.to_string();
    };
    let mut out = serde_json::Map::new();
    for (k, v) in m {
        let v = match v.as_str().map(|s| (s, s.parse::<f64>())) {
            Some((s, Ok(x))) if x.is_finite() && s.len() > 12 => Value::String(format!("{x:.11e}")),
            _ => v.clone(),
        };
        out.insert(k.clone(), v);
    }
    Value::Object(out).to_string()
}

/// The order of two instant vector answers' series (labels only; [`compare`] checks the
/// values): `Err` names the first place they differ.
pub fn compare_order(a: &Value, b: &Value) -> Result<(), String> {
    let keys = |v: &Value| -> Vec<String> {
        match v["data"]["result"].as_array() {
            Some(items) if v["data"]["resultType"] == "vector" => {
                items.iter().map(|s| series_key(&s["metric"])).collect()
            }
            _ => Vec::new(),
        }
    };
    let (ka, kb) = (keys(a), keys(b));
    match ka.iter().zip(&kb).position(|(x, y)| x != y) {
        None => Ok(()),
        Some(i) => Err(format!(
            "order differs at {i} of {}: {} vs {}",
            ka.len(),
            ka[i],
            kb[i]
        )),
    }
}

/// Compares two Prometheus API responses as the compliance tester does.
pub fn compare(a: &Value, b: &Value) -> Result<(), String> {
    let status = |v: &Value| v["status"].as_str().unwrap_or("").to_string();
    if status(a) != status(b) {
        return Err(format!(
            "status {} vs {}: {} / {}",
            status(a),
            status(b),
            a["error"],
            b["error"]
        ));
    }
    if status(a) != "success" {
        return Ok(());
    }
    let (ra, rb) = (&a["data"]["result"], &b["data"]["result"]);
    if a["data"]["resultType"] != b["data"]["resultType"] {
        return Err(format!(
            "result type {} vs {}",
            a["data"]["resultType"], b["data"]["resultType"]
        ));
    }
    let norm = |r: &Value| -> std::collections::BTreeMap<String, Vec<(f64, String)>> {
        let mut m = std::collections::BTreeMap::new();
        let items: Vec<Value> = match r {
            Value::Array(v) => v.clone(),
            other => vec![serde_json::json!({"metric": {}, "value": other})],
        };
        for s in items {
            let key = series_key(&s["metric"]);
            let points: Vec<(f64, String)> = if let Some(vs) = s["values"].as_array() {
                vs.iter()
                    .map(|p| {
                        (
                            p[0].as_f64().unwrap_or(0.0),
                            p[1].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            } else {
                vec![(
                    s["value"][0].as_f64().unwrap_or(0.0),
                    s["value"][1].as_str().unwrap_or("").to_string(),
                )]
            };
            m.insert(key, points);
        }
        m
    };
    let (na, nb) = (norm(ra), norm(rb));
    let ka: Vec<_> = na.keys().collect();
    let kb: Vec<_> = nb.keys().collect();
    if ka != kb {
        let only_a: Vec<_> = ka
            .iter()
            .filter(|k| !nb.contains_key(**k))
            .take(2)
            .collect();
        let only_b: Vec<_> = kb
            .iter()
            .filter(|k| !na.contains_key(**k))
            .take(2)
            .collect();
        return Err(format!(
            "series differ: {} vs {} (only reference: {only_a:?}; only telltale: {only_b:?})",
            ka.len(),
            kb.len()
        ));
    }
    for (k, pa) in &na {
        let pb = &nb[k];
        if pa.len() != pb.len() {
            return Err(format!("{k}: {} points vs {}", pa.len(), pb.len()));
        }
        for (x, y) in pa.iter().zip(pb) {
            if (x.0 - y.0).abs() > 1e-9 {
                return Err(format!("{k}: timestamp {} vs {}", x.0, y.0));
            }
            let (u, v): (f64, f64) = (
                x.1.parse().unwrap_or(f64::NAN),
                y.1.parse().unwrap_or(f64::NAN),
            );
            // Equal, both NaN, or within 1e-9 relative / 1e-12 absolute: what is left when
            // both follow the same order of floating-point operations (the last digit
            // Go's and Rust's shortest formatting choose may differ).
            let equal = (u.is_nan() && v.is_nan())
                || u == v
                || (u - v).abs() <= 1e-9 * u.abs().max(v.abs())
                || (u - v).abs() <= 1e-12;
            if !equal {
                return Err(format!("{k} at {}: {} vs {}", x.0, x.1, y.1));
            }
        }
    }
    Ok(())
}
