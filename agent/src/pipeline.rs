//! What happens to series between a source and the buffer, in this order:
//!
//! 1. **relabel** with the source's own rules (Prometheus semantics, see [`crate::pipeline::relabel`]);
//! 2. **enrich**: static labels and chosen host metadata, added where the series lacks them;
//!    `instance` is the agent's name and `job` defaults to `telltale-agent`;
//! 3. **cardinality guard**: series per source and in total are capped; a new series beyond a
//!    cap is dropped and counted, and a log line names the source and the label with the most
//!    distinct values (the usual culprit: a user id or a URL path in a label);
//! 4. **sampling** per metric: `all` (default), `downsample` (min/max/avg/last/sum over a
//!    window), `deadband` (send on a change beyond a threshold, or when the heartbeat is due),
//!    and **adaptive**: while the buffer's backlog is above a threshold, metrics not marked
//!    critical are downsampled to `last` over a window, so the backlog drains and what matters
//!    keeps full resolution.
//!
//! Every source hands its series to one task (see [`crate::run`]) that runs this, merges
//! whatever arrived together into one batch and buffers it. What was sampled is counted in
//! `telltale_agent_sampling_{input,output}_samples_total{strategy}` and adaptive mode shows as
//! `telltale_agent_adaptive_sampling_active`; dropped series in
//! `telltale_agent_series_dropped_total{source}`.

pub mod collected;
pub mod hostinfo;
pub mod logsink;
/// Relabelling moved to `telltale_common` (the aggregator's remote_write uses it too).
pub use telltale_common::relabel;

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use regex_lite::Regex;
use telltale_common::model::{Labels, Sample, SeriesSamples, is_stale_marker};
use telltale_common::names;
use telltale_common::wire::{Event, ExemplarSeries};

use hostinfo::HostInfo;
use relabel::Rule;

/// The job label of series whose source sets none.
pub const JOB: &str = "telltale-agent";

/// What one source hands over.
#[derive(Debug, Clone)]
pub struct SourceBatch {
    /// `host`, `scrape:<job>`, `statsd`, `textfile`, `check:<name>`.
    pub source: Arc<str>,
    /// The source's relabel rules.
    pub relabel: Arc<[Rule]>,
    /// The series.
    pub series: Vec<SeriesSamples>,
    /// Events (health-check state changes).
    pub events: Vec<Event>,
    /// Exemplars of its series (the span metrics' trace ids), labelled like its series.
    pub exemplars: Vec<ExemplarSeries>,
}

/// What a batch carries besides series, gathered by [`Processor::process`].
#[derive(Debug, Default)]
pub struct Extras {
    /// Events.
    pub events: Vec<Event>,
    /// Exemplars, their series labelled as the pipeline labels series.
    pub exemplars: Vec<ExemplarSeries>,
}

impl Extras {
    /// Whether there is nothing.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.exemplars.is_empty()
    }
}

/// How a metric is sampled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Strategy {
    /// Every sample.
    All,
    /// One sample per window.
    Downsample {
        /// Window length in ms.
        window_ms: i64,
        /// How the window's samples become one.
        aggregate: Aggregate,
    },
    /// A sample when the value moved more than `threshold` since the last one sent, or when
    /// `heartbeat_ms` passed.
    Deadband {
        /// Absolute change that is worth sending.
        threshold: f64,
        /// Longest silence.
        heartbeat_ms: i64,
    },
}

/// A downsampling aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Mean.
    Avg,
    /// Last value (right for counters).
    Last,
    /// Sum.
    Sum,
}

impl Aggregate {
    /// Parses `min|max|avg|last|sum`.
    pub fn parse(s: &str) -> Option<Aggregate> {
        Some(match s {
            "min" => Aggregate::Min,
            "max" => Aggregate::Max,
            "avg" => Aggregate::Avg,
            "last" => Aggregate::Last,
            "sum" => Aggregate::Sum,
            _ => return None,
        })
    }
}

/// A sampling rule: metrics whose name matches get this strategy.
#[derive(Debug, Clone)]
pub struct SamplingRule {
    /// Anchored regex on the metric name.
    pub metrics: Regex,
    /// What to do.
    pub strategy: Strategy,
    /// Never downsampled by adaptive sampling.
    pub critical: bool,
}

/// Adaptive sampling.
#[derive(Debug, Clone)]
pub struct Adaptive {
    /// Buffered batches above which adaptive sampling starts; it stops below half of this.
    pub backlog_batches: u64,
    /// The window non-critical metrics are downsampled to.
    pub window_ms: i64,
}

/// Everything the pipeline is configured with.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// The agent's name (the `instance` label).
    pub agent: String,
    /// Labels added to every series that lacks them.
    pub static_labels: Vec<(String, String)>,
    /// Host metadata fields added as labels (`os`, `arch`, ...).
    pub host_labels: Vec<String>,
    /// Series cap per source.
    pub max_series_per_source: usize,
    /// Series cap in total.
    pub max_series: usize,
    /// Sampling rules, first match wins.
    pub sampling: Vec<SamplingRule>,
    /// Adaptive sampling; `None` turns it off.
    pub adaptive: Option<Adaptive>,
}

impl PipelineConfig {
    /// A pipeline with the defaults and nothing configured (for tests and benchmarks).
    pub fn plain(agent: &str) -> PipelineConfig {
        PipelineConfig {
            agent: agent.into(),
            static_labels: Vec::new(),
            host_labels: Vec::new(),
            max_series_per_source: 20_000,
            max_series: 200_000,
            sampling: Vec::new(),
            adaptive: None,
        }
    }
}

/// `up`, probe results, check states and the agent's own metrics are always critical: they are
/// what tells an operator that something is wrong. (A plain function, not a regex: compiling
/// one at start-up would page in the regex compiler on agents that configure no rule.)
pub fn always_critical(name: &str) -> bool {
    matches!(name, "up" | "probe_success" | "telltale_check_status")
        || name.starts_with("telltale_agent_")
}

fn series_hash(l: &Labels) -> u64 {
    let mut h = DefaultHasher::new();
    l.hash(&mut h);
    h.finish()
}

/// Per-source set of known series, for the cardinality guard.
#[derive(Default)]
struct SourceSeries {
    /// Series hash → last time seen (ms).
    seen: HashMap<u64, i64>,
    dropped: u64,
    /// Samples admitted (before sampling): the source's rate in the pipeline diagram.
    samples: u64,
    last_warning_ms: i64,
}

struct Window {
    window_ms: i64,
    idx: i64,
    min: f64,
    max: f64,
    sum: f64,
    count: u64,
    last: Sample,
    aggregate: Aggregate,
    strategy: &'static str,
}

impl Window {
    fn new(
        window_ms: i64,
        idx: i64,
        first: Sample,
        aggregate: Aggregate,
        strategy: &'static str,
    ) -> Window {
        Window {
            window_ms,
            idx,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
            count: 0,
            last: first,
            aggregate,
            strategy,
        }
    }

    fn value(&self) -> f64 {
        match self.aggregate {
            Aggregate::Min => self.min,
            Aggregate::Max => self.max,
            Aggregate::Avg => self.sum / self.count as f64,
            Aggregate::Last => self.last.1,
            Aggregate::Sum => self.sum,
        }
    }
}

/// Series stop being counted against the caps after this long without a sample.
const SERIES_EXPIRY_MS: i64 = 10 * 60_000;

/// The pipeline's state.
pub struct Processor {
    cfg: PipelineConfig,
    enrich: Vec<(String, String)>,
    sources: HashMap<Arc<str>, SourceSeries>,
    total: usize,
    windows: HashMap<Labels, Window>,
    deadband: HashMap<Labels, Sample>,
    adaptive_active: bool,
    /// strategy → (input, output) samples.
    sampled: BTreeMap<&'static str, (u64, u64)>,
    last_sweep_ms: i64,
}

impl Processor {
    /// A processor for `cfg` on `host`.
    pub fn new(cfg: PipelineConfig, host: &HostInfo) -> Processor {
        let mut enrich = cfg.static_labels.clone();
        for f in &cfg.host_labels {
            if let Some(v) = host.field(f) {
                enrich.push((f.clone(), v.to_string()));
            }
        }
        Processor {
            cfg,
            enrich,
            sources: HashMap::new(),
            total: 0,
            windows: HashMap::new(),
            deadband: HashMap::new(),
            adaptive_active: false,
            sampled: BTreeMap::new(),
            last_sweep_ms: 0,
        }
    }

    /// Whether adaptive sampling is on now.
    pub fn adaptive_active(&self) -> bool {
        self.adaptive_active
    }

    /// Series admitted per source now.
    pub fn series_per_source(&self) -> impl Iterator<Item = (&str, usize)> {
        self.sources.iter().map(|(k, v)| (&**k, v.seen.len()))
    }

    /// A series' labels as shipped: relabelled (`None`: dropped), enriched, with `instance`
    /// and a default `job`.
    fn label(&self, rules: &[Rule], l: &Labels) -> Option<Labels> {
        let mut labels = relabel::apply(rules, l)?;
        for (k, v) in &self.enrich {
            if labels.get(k).is_none() {
                labels.set(k, v);
            }
        }
        labels.set("instance", &self.cfg.agent);
        if labels.get("job").is_none() {
            labels.set("job", JOB);
        }
        Some(labels)
    }

    /// Runs one source batch through the pipeline, appending what is to be shipped.
    /// `backlog` is the buffer's length in batches.
    pub fn process(
        &mut self,
        b: SourceBatch,
        backlog: u64,
        now_ms: i64,
        out: &mut Vec<SeriesSamples>,
        extras: &mut Extras,
    ) {
        if let Some(a) = &self.cfg.adaptive {
            if !self.adaptive_active && backlog > a.backlog_batches {
                tracing::warn!(
                    backlog,
                    threshold = a.backlog_batches,
                    "backlog high: downsampling non-critical metrics"
                );
                self.adaptive_active = true;
            } else if self.adaptive_active && backlog <= a.backlog_batches / 2 {
                tracing::info!(backlog, "backlog drained: full resolution again");
                self.adaptive_active = false;
            }
        }
        for mut e in b.events {
            e.labels.retain(|(k, _)| k != "instance");
            extras.events.push(e);
        }
        for mut x in b.exemplars {
            let Some(labels) = self.label(&b.relabel, &Labels::from_pairs(x.labels)) else {
                continue;
            };
            x.labels = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            extras.exemplars.push(x);
        }
        let mut refused: Vec<Labels> = Vec::new();
        for s in b.series {
            let Some(labels) = self.label(&b.relabel, &s.labels) else {
                continue;
            };
            if !self.admit(&b.source, &labels, now_ms) {
                refused.push(labels);
                continue;
            }
            if let Some(src) = self.sources.get_mut(&b.source) {
                src.samples += s.samples.len() as u64;
            }
            self.sample(labels, s.samples, out);
        }
        if !refused.is_empty() {
            self.warn_refused(&b.source, &refused, now_ms);
        }
        if now_ms - self.last_sweep_ms >= 1000 {
            self.sweep(now_ms, out);
            self.last_sweep_ms = now_ms;
        }
    }

    fn admit(&mut self, source: &Arc<str>, labels: &Labels, now_ms: i64) -> bool {
        let h = series_hash(labels);
        let per_source = self.cfg.max_series_per_source;
        let total_cap = self.cfg.max_series;
        let src = self.sources.entry(source.clone()).or_default();
        if let Some(t) = src.seen.get_mut(&h) {
            *t = now_ms;
            return true;
        }
        if src.seen.len() >= per_source || self.total >= total_cap {
            src.dropped += 1;
            return false;
        }
        src.seen.insert(h, now_ms);
        self.total += 1;
        true
    }

    fn warn_refused(&mut self, source: &Arc<str>, refused: &[Labels], now_ms: i64) {
        let Some(src) = self.sources.get_mut(source) else {
            return;
        };
        if now_ms - src.last_warning_ms < 60_000 {
            return;
        }
        src.last_warning_ms = now_ms;
        // The label with the most distinct values among the refused series is the likely cause.
        let mut distinct: HashMap<&str, HashSet<&str>> = HashMap::new();
        for l in refused {
            for (k, v) in l.iter() {
                if k != "__name__" && k != "instance" && k != "job" {
                    distinct.entry(k).or_default().insert(v);
                }
            }
        }
        let culprit = distinct
            .iter()
            .max_by_key(|(k, v)| (v.len(), std::cmp::Reverse(**k)))
            .map(|(k, v)| (k.to_string(), v.len()));
        let metric = refused[0].metric_name().unwrap_or("").to_string();
        let (label, values) = culprit.unwrap_or_default();
        tracing::warn!(
            source = %source, metric = %metric, label = %label, distinct_values = values,
            refused = refused.len(), per_source_cap = self.cfg.max_series_per_source,
            total_cap = self.cfg.max_series, total = self.total,
            "series cap reached: new series dropped (label {label:?} has the most distinct values)"
        );
    }

    fn strategy(&self, name: &str) -> (Strategy, bool) {
        for r in &self.cfg.sampling {
            if r.metrics.is_match(name) {
                return (r.strategy, r.critical || always_critical(name));
            }
        }
        (Strategy::All, always_critical(name))
    }

    fn count(&mut self, strategy: &'static str, input: u64, output: u64) {
        let e = self.sampled.entry(strategy).or_default();
        e.0 += input;
        e.1 += output;
    }

    fn sample(&mut self, labels: Labels, samples: Vec<Sample>, out: &mut Vec<SeriesSamples>) {
        let name = labels.metric_name().unwrap_or("");
        let (mut strategy, critical) = self.strategy(name);
        let mut tag = "downsample";
        if strategy == Strategy::All
            && !critical
            && self.adaptive_active
            && let Some(a) = &self.cfg.adaptive
        {
            strategy = Strategy::Downsample {
                window_ms: a.window_ms,
                aggregate: Aggregate::Last,
            };
            tag = "adaptive";
        }
        match strategy {
            Strategy::All => out.push(SeriesSamples { labels, samples }),
            Strategy::Deadband {
                threshold,
                heartbeat_ms,
            } => {
                let n = samples.len() as u64;
                let mut kept = Vec::new();
                for s in samples {
                    let send = match self.deadband.get(&labels) {
                        None => true,
                        Some(last) => {
                            (s.1 - last.1).abs() > threshold
                                || s.0 - last.0 >= heartbeat_ms
                                || s.1.is_nan() != last.1.is_nan()
                        }
                    };
                    if send {
                        self.deadband.insert(labels.clone(), s);
                        kept.push(s);
                    }
                }
                self.count("deadband", n, kept.len() as u64);
                if !kept.is_empty() {
                    out.push(SeriesSamples {
                        labels,
                        samples: kept,
                    });
                }
            }
            Strategy::Downsample {
                window_ms,
                aggregate,
            } => {
                let n = samples.len() as u64;
                let mut emitted = Vec::new();
                for s in samples {
                    if is_stale_marker(s.1) {
                        if let Some(w) = self.windows.remove(&labels) {
                            emitted.push(Sample(w.last.0, w.value()));
                        }
                        emitted.push(s);
                        continue;
                    }
                    let idx = s.0.div_euclid(window_ms);
                    let fresh = Window::new(window_ms, idx, s, aggregate, tag);
                    let w = self.windows.entry(labels.clone()).or_insert(fresh);
                    if w.idx != idx || w.window_ms != window_ms {
                        if w.count > 0 {
                            emitted.push(Sample(w.last.0, w.value()));
                        }
                        *w = Window::new(window_ms, idx, s, aggregate, tag);
                    }
                    w.min = w.min.min(s.1);
                    w.max = w.max.max(s.1);
                    w.sum += s.1;
                    w.count += 1;
                    w.last = s;
                }
                self.count(tag, n, emitted.len() as u64);
                if !emitted.is_empty() {
                    out.push(SeriesSamples {
                        labels,
                        samples: emitted,
                    });
                }
            }
        }
    }

    /// Emits windows that have ended and forgets series not seen for a while.
    pub fn sweep(&mut self, now_ms: i64, out: &mut Vec<SeriesSamples>) {
        let mut done = Vec::new();
        for (l, w) in &self.windows {
            if now_ms >= (w.idx + 1) * w.window_ms {
                done.push(l.clone());
            }
        }
        for l in done {
            if let Some(w) = self.windows.remove(&l) {
                self.count(w.strategy, 0, 1);
                out.push(SeriesSamples {
                    labels: l,
                    samples: vec![Sample(w.last.0, w.value())],
                });
            }
        }
        let mut expired = 0;
        for src in self.sources.values_mut() {
            let before = src.seen.len();
            src.seen.retain(|_, t| now_ms - *t < SERIES_EXPIRY_MS);
            expired += before - src.seen.len();
        }
        self.total -= expired.min(self.total);
        self.deadband
            .retain(|_, s| now_ms - s.0 < SERIES_EXPIRY_MS.max(2 * 3_600_000));
    }

    /// The pipeline's own series.
    pub fn own_series(&self, out: &mut collected::Out) {
        for (source, s) in &self.sources {
            out.add(
                "telltale_agent_series_dropped_total",
                &[("source", source)],
                s.dropped as f64,
            );
            out.add(
                "telltale_agent_source_series",
                &[("source", source)],
                s.seen.len() as f64,
            );
            out.add(
                names::AGENT_SOURCE_SAMPLES,
                &[("source", source)],
                s.samples as f64,
            );
        }
        for (strategy, (i, o)) in &self.sampled {
            out.add(
                "telltale_agent_sampling_input_samples_total",
                &[("strategy", strategy)],
                *i as f64,
            );
            out.add(
                "telltale_agent_sampling_output_samples_total",
                &[("strategy", strategy)],
                *o as f64,
            );
        }
        out.add(
            "telltale_agent_adaptive_sampling_active",
            &[],
            f64::from(u8::from(self.adaptive_active)),
        );
    }
}

/// A sampling window or heartbeat in ms (at least 1).
pub fn window_ms(d: Duration) -> i64 {
    d.as_millis().clamp(1, i64::MAX as u128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, extra: &[(&str, &str)], samples: &[(i64, f64)]) -> SeriesSamples {
        let mut l = Labels::from_pairs(extra.iter().copied());
        l.set("__name__", name);
        SeriesSamples {
            labels: l,
            samples: samples.iter().map(|&(t, v)| Sample(t, v)).collect(),
        }
    }

    fn batch(source: &str, series: Vec<SeriesSamples>) -> SourceBatch {
        SourceBatch {
            exemplars: Vec::new(),
            source: source.into(),
            relabel: Arc::from(Vec::new()),
            series,
            events: Vec::new(),
        }
    }

    fn run(p: &mut Processor, b: SourceBatch, backlog: u64, now: i64) -> Vec<SeriesSamples> {
        let mut out = Vec::new();
        p.process(b, backlog, now, &mut out, &mut Extras::default());
        out
    }

    fn host() -> HostInfo {
        HostInfo::read(std::path::Path::new("/nonexistent"))
    }

    #[test]
    fn enrichment_sets_instance_job_static_and_host_labels_without_overriding() {
        let mut cfg = PipelineConfig::plain("web-1");
        cfg.static_labels = vec![("dc".into(), "eu-1".into()), ("team".into(), "a".into())];
        cfg.host_labels = vec!["arch".into(), "container".into()];
        let mut p = Processor::new(cfg, &host());
        let out = run(
            &mut p,
            batch(
                "statsd",
                vec![series(
                    "orders_total",
                    &[("team", "b"), ("instance", "x"), ("job", "shop")],
                    &[(1, 1.0)],
                )],
            ),
            0,
            1,
        );
        let l = &out[0].labels;
        assert_eq!(l.get("instance"), Some("web-1"));
        assert_eq!(l.get("job"), Some("shop"));
        assert_eq!(l.get("dc"), Some("eu-1"));
        assert_eq!(l.get("team"), Some("b"), "the source's own label wins");
        assert_eq!(l.get("arch"), Some(std::env::consts::ARCH));
        assert_eq!(l.get("container"), Some("none"));
        let out = run(
            &mut p,
            batch("host", vec![series("m", &[], &[(1, 1.0)])]),
            0,
            1,
        );
        assert_eq!(out[0].labels.get("job"), Some(JOB));
    }

    #[test]
    fn cardinality_caps_drop_new_series_and_keep_existing_ones_flowing() {
        let mut cfg = PipelineConfig::plain("a");
        cfg.max_series_per_source = 3;
        cfg.max_series = 5;
        let mut p = Processor::new(cfg, &host());
        let users = |from: usize, to: usize, t: i64| {
            (from..to)
                .map(|u| {
                    let u = u.to_string();
                    series("logins_total", &[("user", &u)], &[(t, 1.0)])
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(&mut p, batch("statsd", users(0, 3, 1)), 0, 1).len(), 3);
        // Three more users: refused; the first three keep flowing.
        let out = run(&mut p, batch("statsd", users(0, 6, 2)), 0, 2);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|s| s.labels.get("user") < Some("3")));
        // The total cap applies across sources.
        assert_eq!(
            run(&mut p, batch("textfile", users(10, 13, 3)), 0, 3).len(),
            2
        );
        let mut own = collected::Out::new(4);
        p.own_series(&mut own);
        let dropped = |src: &str| {
            own.series
                .iter()
                .find(|s| {
                    s.labels.metric_name() == Some("telltale_agent_series_dropped_total")
                        && s.labels.get("source") == Some(src)
                })
                .map(|s| s.samples[0].1)
        };
        assert_eq!(dropped("statsd"), Some(3.0));
        assert_eq!(dropped("textfile"), Some(1.0));
        // Series not seen for the expiry time free their slots.
        let later = 4 + SERIES_EXPIRY_MS + 1;
        p.sweep(later, &mut Vec::new());
        assert_eq!(
            run(&mut p, batch("statsd", users(20, 23, later)), 0, later).len(),
            3
        );
    }

    #[test]
    fn relabel_rules_of_the_source_apply_before_everything_else() {
        let rules: relabel::RuleConfig =
            toml::from_str("source_labels=[\"path\"]\nregex=\"/debug.*\"\naction=\"drop\"")
                .unwrap();
        let mut p = Processor::new(PipelineConfig::plain("a"), &host());
        let mut b = batch(
            "scrape:app",
            vec![
                series("hits", &[("path", "/debug/x")], &[(1, 1.0)]),
                series("hits", &[("path", "/home")], &[(1, 1.0)]),
            ],
        );
        b.relabel = Arc::from(relabel::compile(&[rules]).unwrap());
        let out = run(&mut p, b, 0, 1);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].labels.get("path"), Some("/home"));
    }

    fn rule(metrics: &str, strategy: Strategy, critical: bool) -> SamplingRule {
        SamplingRule {
            metrics: Regex::new(&format!("^(?:{metrics})$")).unwrap(),
            strategy,
            critical,
        }
    }

    #[test]
    fn downsample_emits_one_aggregate_per_window_and_counts_it() {
        for (agg, want) in [
            (Aggregate::Min, 1.0),
            (Aggregate::Max, 5.0),
            (Aggregate::Avg, 3.0),
            (Aggregate::Last, 2.0),
            (Aggregate::Sum, 12.0),
        ] {
            let mut cfg = PipelineConfig::plain("a");
            cfg.sampling = vec![rule(
                "temp",
                Strategy::Downsample {
                    window_ms: 60_000,
                    aggregate: agg,
                },
                false,
            )];
            let mut p = Processor::new(cfg, &host());
            let mut got = Vec::new();
            for (t, v) in [(0, 1.0), (10_000, 5.0), (20_000, 4.0), (50_000, 2.0)] {
                got.extend(run(
                    &mut p,
                    batch("h", vec![series("temp", &[], &[(t, v)])]),
                    0,
                    t,
                ));
            }
            assert!(got.is_empty(), "nothing before the window ends");
            // The next window's first sample closes the first.
            let out = run(
                &mut p,
                batch("h", vec![series("temp", &[], &[(60_000, 9.0)])]),
                0,
                59_999,
            );
            assert_eq!(out[0].samples, vec![Sample(50_000, want)], "{agg:?}");
            // A window that ended with no new sample is flushed by the sweep.
            let mut swept = Vec::new();
            p.sweep(120_000, &mut swept);
            assert_eq!(swept[0].samples, vec![Sample(60_000, 9.0)]);
            let mut own = collected::Out::new(0);
            p.own_series(&mut own);
            let v = |n: &str| {
                own.series
                    .iter()
                    .find(|s| s.labels.metric_name() == Some(n))
                    .map(|s| s.samples[0].1)
            };
            assert_eq!(v("telltale_agent_sampling_input_samples_total"), Some(5.0));
            assert_eq!(v("telltale_agent_sampling_output_samples_total"), Some(2.0));
        }
    }

    #[test]
    fn deadband_sends_changes_beyond_threshold_and_heartbeats() {
        let mut cfg = PipelineConfig::plain("a");
        cfg.sampling = vec![rule(
            "level",
            Strategy::Deadband {
                threshold: 0.5,
                heartbeat_ms: 30_000,
            },
            false,
        )];
        let mut p = Processor::new(cfg, &host());
        let mut sent = Vec::new();
        for (t, v) in [
            (0, 10.0),
            (10_000, 10.2),
            (20_000, 10.4),
            (25_000, 11.0),
            (35_000, 11.1),
            (55_000, 11.2),
        ] {
            for s in run(
                &mut p,
                batch("h", vec![series("level", &[], &[(t, v)])]),
                0,
                t,
            ) {
                sent.extend(s.samples);
            }
        }
        assert_eq!(
            sent,
            vec![Sample(0, 10.0), Sample(25_000, 11.0), Sample(55_000, 11.2)]
        );
    }

    #[test]
    fn adaptive_sampling_spares_critical_metrics_and_stops_when_the_backlog_drains() {
        let mut cfg = PipelineConfig::plain("a");
        cfg.adaptive = Some(Adaptive {
            backlog_batches: 100,
            window_ms: 60_000,
        });
        cfg.sampling = vec![rule("orders_total", Strategy::All, true)];
        let mut p = Processor::new(cfg, &host());
        let step = |p: &mut Processor, t: i64, backlog: u64| {
            let b = batch(
                "h",
                vec![
                    series("node_load1", &[], &[(t, 1.0)]),
                    series("orders_total", &[], &[(t, 2.0)]),
                    series("up", &[], &[(t, 1.0)]),
                ],
            );
            let mut out = Vec::new();
            p.process(b, backlog, t, &mut out, &mut Extras::default());
            out.into_iter()
                .map(|s| s.labels.metric_name().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(step(&mut p, 0, 0).len(), 3);
        // Backlog high: node_load1 is held back, the critical ones flow.
        let names = step(&mut p, 10_000, 500);
        assert!(p.adaptive_active());
        assert_eq!(names, vec!["orders_total", "up"]);
        let names = step(&mut p, 20_000, 500);
        assert_eq!(names, vec!["orders_total", "up"]);
        // Drained below half the threshold: full resolution; the held window is flushed.
        let names = step(&mut p, 70_000, 10);
        assert!(!p.adaptive_active());
        assert_eq!(
            names.iter().filter(|n| *n == "node_load1").count(),
            2,
            "{names:?}"
        );
    }
}
