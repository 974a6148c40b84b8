//! Detectors over the aggregator's live data: each detector evaluates its expression on its
//! interval (at multiples of it), feeds every resulting series' value to that series' model,
//! and writes two ordinary series per input series —
//! `telltale_anomaly_score{detector, <series labels>}` (0..1) and
//! `telltale_anomaly{...}` (1 when the score is at least the detector's threshold, else 0) —
//! so rules, routing, correlation and remediation use them unchanged.
//!
//! **State across restarts**: models are not written anywhere; at start each detector reads
//! its expression back over `history` (a range query at its own interval, on the same grid
//! the live evaluations use) and feeds the models the same points they would have seen, so a
//! model after a restart is the model before it (less the points the outage has no data
//! for). Scores are not written for those points: they were written when they were live.
//!
//! **Peer detectors** (`method: peer`) keep no model: at each evaluation every series is
//! compared with the others of its group (`group_by`) at that instant — its distance from
//! the group's median in robust standard deviations (1.4826 × MAD) — and scores 0.99 at
//! `cut` of them (3.5 by default), so `telltale_anomaly` stays 1 while a host stays unlike
//! its peers.
//!
//! **Cost bounds**: at most [`MAX_SERIES`] models per detector, and the models of all
//! detectors within one memory budget ([`budget`]: each model sets aside its method's most
//! before it is made); more series are counted and skipped. A model not fed for `history`
//! (at least an hour) is dropped.

pub mod budget;
pub mod spec;

use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use telltale_common::model::{Labels, STALE_NAN_BITS, Sample, SeriesSamples, now_ms};

use crate::anomaly::forecast;
use crate::anomaly::method::Model;
use crate::metrics::promql::{Engine, Value};
use crate::metrics::storage::{AppendData, AppendRequest, Storage};
use budget::{Budget, Reservation};
use spec::{Detector, Kind};

/// The score series' name.
pub const SCORE: &str = "telltale_anomaly_score";
/// The 0/1 series' name.
pub const FLAG: &str = "telltale_anomaly";
/// A forecast's value at its horizon.
pub const FORECAST: &str = "telltale_forecast_value";
/// Seconds until a forecast reaches its limit (+Inf: not within the horizon).
pub const UNTIL: &str = "telltale_forecast_seconds_until_limit";
/// Most series one detector models.
pub const MAX_SERIES: usize = 20_000;

struct Entry {
    model: Box<dyn Model>,
    last_seen: i64,
    /// The model's share of the budget, given back when the entry is dropped.
    reserved: Reservation,
}

#[derive(Default)]
struct Run {
    models: HashMap<Labels, Entry>,
    written: HashSet<Labels>,
    warmed: bool,
    last_eval_ms: i64,
    eval_seconds: f64,
    last_error: String,
    skipped: u64,
    /// New series not modelled because the budget was spent (total).
    over_budget: u64,
    /// When the log last said so (ms; at most once an hour, the API and the counts say it
    /// at every evaluation).
    over_budget_logged: Option<i64>,
    warm_points: u64,
    /// Series scored at the last evaluation.
    scored: usize,
}

/// A detector's state for `/api/v1/anomaly` and `/metrics`.
#[derive(Debug, Clone)]
pub struct View {
    /// Name.
    pub name: String,
    /// Expression.
    pub query: String,
    /// Method (`peer` or the series method's name).
    pub method: String,
    /// File.
    pub file: String,
    /// Interval (s).
    pub interval_seconds: f64,
    /// Threshold.
    pub threshold: f64,
    /// Series scored at the last evaluation.
    pub series: usize,
    /// Series with a model (peer detectors keep none).
    pub models: usize,
    /// Heap bytes of the models.
    pub bytes: usize,
    /// Bytes the models set aside from the budget (their most: models × the method's bound).
    pub reserved: usize,
    /// Series over the limit, skipped (total).
    pub skipped: u64,
    /// Times a new series was not modelled because the budget was spent (total; a series
    /// refused at every evaluation counts at every evaluation, like `skipped`).
    pub over_budget: u64,
    /// Points fed from stored history at start.
    pub warm_points: u64,
    /// Last evaluation (ms).
    pub last_eval_ms: i64,
    /// Seconds it took.
    pub eval_seconds: f64,
    /// Last error (empty: healthy).
    pub last_error: String,
}

/// Every detector and its models.
pub struct Detectors {
    engine: Engine,
    storage: Arc<dyn Storage>,
    detectors: Vec<(Detector, Mutex<Run>)>,
    budget: Arc<Budget>,
    points: AtomicU64,
    failures: AtomicU64,
    stopped: AtomicBool,
}

impl Detectors {
    /// Detectors reading through `engine` and writing to `storage`, their models within
    /// `budget` (the same one across reloads: the models a reload keeps keep their share).
    pub fn new(
        engine: Engine,
        storage: Arc<dyn Storage>,
        detectors: Vec<Detector>,
        budget: Arc<Budget>,
    ) -> Arc<Self> {
        Arc::new(Detectors {
            engine,
            storage,
            detectors: detectors
                .into_iter()
                .map(|d| (d, Mutex::new(Run::default())))
                .collect(),
            budget,
            points: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        })
    }

    /// Takes over the models of the detectors `old` ran that are unchanged here (same name,
    /// expression, method and parameters, interval and history), and `old`'s counters. Call
    /// after `old.stop()`, before [`Detectors::start`].
    pub fn inherit(&self, old: &Detectors) {
        for (d, run) in &self.detectors {
            let same = old.detectors.iter().find(|(o, _)| {
                o.name == d.name
                    && o.query == d.query
                    && o.kind == d.kind
                    && o.interval == d.interval
                    && o.history == d.history
            });
            if let Some((_, o)) = same {
                let mut o = o.lock().unwrap_or_else(|e| e.into_inner());
                let mut mine = run.lock().unwrap_or_else(|e| e.into_inner());
                *mine = std::mem::take(&mut *o);
            }
        }
        for (new, old) in [(&self.points, &old.points), (&self.failures, &old.failures)] {
            new.fetch_add(old.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// The models' memory budget.
    pub fn budget(&self) -> Arc<Budget> {
        self.budget.clone()
    }

    /// Starts a task per detector.
    pub fn start(self: &Arc<Self>) {
        for i in 0..self.detectors.len() {
            tokio::spawn(self.clone().run(i));
        }
    }

    /// Ends the tasks (an evaluation under way finishes).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    async fn run(self: Arc<Self>, i: usize) {
        let every = self.detectors[i].0.interval.as_millis().max(1) as i64;
        loop {
            // Evaluate at the next multiple of the interval: the same grid the start-up
            // rebuild reads, so a model sees one sequence across restarts.
            let now = now_ms();
            let next = (now / every + 1) * every;
            tokio::time::sleep(Duration::from_millis((next - now) as u64)).await;
            if self.stopped.load(Ordering::SeqCst) {
                return;
            }
            let me = self.clone();
            let handle = tokio::runtime::Handle::current();
            if let Err(e) = tokio::task::spawn_blocking(move || me.eval(i, next, &handle)).await {
                tracing::error!(detector = %self.detectors[i].0.name, error = %e, "anomaly detector panicked");
            }
        }
    }

    /// Evaluates detector `i` at `t` (ms; blocking).
    pub fn eval(&self, i: usize, t: i64, rt: &tokio::runtime::Handle) {
        let (d, run) = &self.detectors[i];
        let mut run = run.lock().unwrap_or_else(|e| e.into_inner());
        let started = std::time::Instant::now();
        if let Kind::Forecast(f) = &d.kind {
            let out = self.forecast(d, f, t);
            run.scored = out
                .as_ref()
                .map_or(0, |o| o.iter().filter(|x| x.1 == FORECAST).count());
            self.finish(d, &mut run, t, out, rt, started);
            return;
        }
        if !run.warmed {
            run.warmed = true;
            self.warm(d, &mut run, t);
        }
        let values = match self.engine.instant_expr(&d.expr, t, None) {
            Ok(Value::Vector(v)) => Ok(v.into_iter().map(|(l, s)| (l, s.1)).collect()),
            Ok(Value::Scalar(s)) => Ok(vec![(Labels::default(), s.1)]),
            Ok(_) => Err("the expression is not an instant vector or scalar".to_string()),
            Err(e) => Err(e.to_string()),
        };
        let values = match values {
            Ok(v) => v,
            Err(e) => return self.finish(d, &mut run, t, Err(e), rt, started),
        };
        let refused = run.over_budget;
        let scores = step(d, &mut run, t, values, &self.budget);
        let quiet = run.over_budget_logged.is_some_and(|at| t - at < 3_600_000);
        if run.over_budget > refused && !quiet {
            run.over_budget_logged = Some(t);
            tracing::warn!(
                detector = %d.name,
                series = run.over_budget - refused,
                budget_bytes = self.budget.limit(),
                model_bytes = match &d.kind {
                    Kind::Series(m) => m.max_bytes(),
                    _ => 0,
                },
                "anomaly model budget spent: new series not modelled (raise [anomaly] max_model_bytes; logged at most hourly)"
            );
        }
        run.scored = scores.len();
        self.points
            .fetch_add(scores.len() as u64, Ordering::Relaxed);
        let mut out = Vec::with_capacity(scores.len() * 2);
        for (l, score) in scores {
            out.push((l.clone(), SCORE, score));
            out.push((l, FLAG, f64::from(u8::from(score >= d.threshold))));
        }
        self.finish(d, &mut run, t, Ok(out), rt, started);
    }

    /// Writes an evaluation's output (series labels, metric name, value), marks the
    /// vanished series stale, and records the outcome.
    fn finish(
        &self,
        d: &Detector,
        run: &mut Run,
        t: i64,
        out: Result<Vec<(Labels, &'static str, f64)>, String>,
        rt: &tokio::runtime::Handle,
        started: std::time::Instant,
    ) {
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(detector = %d.name, error = %e, "anomaly detector query failed");
                run.last_error = e;
                run.last_eval_ms = t;
                return;
            }
        };
        let mut series = Vec::with_capacity(out.len());
        let mut now_written = HashSet::with_capacity(out.len());
        for (l, name, v) in out {
            let labels = output(d, &l, name);
            now_written.insert(labels.clone());
            series.push(SeriesSamples {
                labels,
                samples: vec![Sample(t, v)],
            });
        }
        for l in run.written.difference(&now_written) {
            series.push(SeriesSamples {
                labels: l.clone(),
                samples: vec![Sample(t, f64::from_bits(STALE_NAN_BITS))],
            });
        }
        run.written = now_written;
        // A model not fed for its history (at least an hour) is forgotten.
        let forget = d.history.max(Duration::from_secs(3600)).as_millis() as i64;
        run.models.retain(|_, e| t - e.last_seen <= forget);
        run.last_error.clear();
        if !series.is_empty() {
            let req = AppendRequest {
                origin: None,
                data: AppendData::Series(series),
            };
            if let Err(e) = rt.block_on(self.storage.append(req)) {
                tracing::warn!(detector = %d.name, error = %e, "cannot store anomaly scores");
                run.last_error = format!("cannot store scores: {e}");
            }
        }
        run.last_eval_ms = t;
        run.eval_seconds = started.elapsed().as_secs_f64();
        crate::selfmetrics::LATENCY
            .detector
            .observe(started.elapsed());
    }

    /// A forecast: the expression over its history at its step, Holt-Winters fitted per
    /// series, the value at the horizon and the time until the limit.
    fn forecast(
        &self,
        d: &Detector,
        f: &spec::Forecast,
        t: i64,
    ) -> Result<Vec<(Labels, &'static str, f64)>, String> {
        let step = f.step.as_millis().max(1) as i64;
        let start = t - (d.history.as_millis() as i64 / step) * step;
        let series = self
            .engine
            .range_with_timeout(&d.query, start, t, step, None)
            .map_err(|e| e.to_string())?;
        let season = (f.season.as_millis() as i64 / step) as usize;
        let horizon = (f.horizon.as_millis() as i64 / step).max(1) as usize;
        let mut out = Vec::new();
        for s in series {
            let values = forecast::on_grid(&s.samples, start, t, step);
            let Some(fit) = forecast::fit_for(&values, season, horizon) else {
                continue;
            };
            let mut l = s.labels.clone();
            l.remove("__name__");
            out.push((l.clone(), FORECAST, fit.at(horizon)));
            if let Some(limit) = f.limit {
                let secs = fit
                    .steps_until(limit, horizon)
                    .map_or(f64::INFINITY, |h| h as f64 * step as f64 / 1000.0);
                out.push((l, UNTIL, secs));
            }
        }
        self.points.fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(out)
    }

    /// Rebuilds the models from stored history: the expression over `history` before `t`,
    /// at the detector's interval, fed in time order. Peer detectors and forecasts keep no
    /// model: nothing to rebuild.
    fn warm(&self, d: &Detector, run: &mut Run, t: i64) {
        let Kind::Series(method) = &d.kind else {
            return;
        };
        let every = d.interval.as_millis().max(1) as i64;
        let span = (d.history.as_millis() as i64 / every) * every;
        if span <= 0 {
            return;
        }
        let (start, end) = (t - span, t - every);
        let series = match self
            .engine
            .range_with_timeout(&d.query, start, end, every, None)
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(detector = %d.name, error = %e, "cannot rebuild models from history");
                return;
            }
        };
        // Series by series (models are independent; cloning labels per point would cost
        // more than the models for a large detector).
        let mut n = 0u64;
        for s in series {
            let mut l = s.labels;
            l.remove("__name__");
            if let Some(e) = model_for(run, &l, t, method, &self.budget) {
                for p in &s.samples {
                    e.model.update(p.0, p.1);
                    e.last_seen = p.0;
                }
                n += s.samples.len() as u64;
            }
        }
        run.warm_points += n;
        tracing::info!(detector = %d.name, points = n, series = run.models.len(), "anomaly models rebuilt from history");
    }

    /// Every detector's state.
    pub fn views(&self) -> Vec<View> {
        self.detectors
            .iter()
            .map(|(d, run)| {
                let run = run.lock().unwrap_or_else(|e| e.into_inner());
                View {
                    name: d.name.clone(),
                    query: d.query.clone(),
                    method: match &d.kind {
                        Kind::Series(m) => m.name().to_string(),
                        Kind::Peer { .. } => "peer".to_string(),
                        Kind::Forecast(_) => "forecast".to_string(),
                    },
                    file: d.file.clone(),
                    interval_seconds: d.interval.as_secs_f64(),
                    threshold: d.threshold,
                    series: run.scored,
                    models: run.models.len(),
                    bytes: run.models.values().map(|e| e.model.bytes()).sum(),
                    reserved: run.models.values().map(|e| e.reserved.bytes()).sum(),
                    skipped: run.skipped,
                    over_budget: run.over_budget,
                    warm_points: run.warm_points,
                    last_eval_ms: run.last_eval_ms,
                    eval_seconds: run.eval_seconds,
                    last_error: run.last_error.clone(),
                }
            })
            .collect()
    }

    /// Renders the detectors' figures in the text exposition format.
    pub fn render_metrics(&self, out: &mut String) {
        let views = self.views();
        let mut gauge = |n: &str, help: &str, f: &dyn Fn(&View) -> f64| {
            let _ = writeln!(out, "# HELP {n} {help}\n# TYPE {n} gauge");
            for v in &views {
                let _ = writeln!(out, "{n}{{detector={:?}}} {}", v.name, f(v));
            }
        };
        gauge(
            "telltale_aggregator_anomaly_series",
            "Series an anomaly detector models.",
            &|v| v.series as f64,
        );
        gauge(
            "telltale_aggregator_anomaly_model_bytes",
            "Heap bytes of an anomaly detector's models.",
            &|v| v.bytes as f64,
        );
        gauge(
            "telltale_aggregator_anomaly_model_bytes_reserved",
            "Bytes an anomaly detector's models set aside from the budget (their most).",
            &|v| v.reserved as f64,
        );
        gauge(
            "telltale_aggregator_anomaly_eval_seconds",
            "Seconds the last evaluation of an anomaly detector took.",
            &|v| v.eval_seconds,
        );
        crate::selfmetrics::counter(
            out,
            "telltale_aggregator_anomaly_points_total",
            "Points scored by anomaly detectors.",
            self.points.load(Ordering::Relaxed),
        );
        crate::selfmetrics::counter(
            out,
            "telltale_aggregator_anomaly_failures_total",
            "Anomaly detector evaluations whose query failed.",
            self.failures.load(Ordering::Relaxed),
        );
        for (n, help, v) in [
            (
                "telltale_aggregator_anomaly_budget_bytes",
                "The anomaly models' memory budget ([anomaly] max_model_bytes).",
                self.budget.limit(),
            ),
            (
                "telltale_aggregator_anomaly_budget_reserved_bytes",
                "Bytes of the budget every anomaly detector's models set aside together.",
                self.budget.reserved(),
            ),
        ] {
            let _ = writeln!(out, "# HELP {n} {help}\n# TYPE {n} gauge\n{n} {v}");
        }
    }
}

/// The output series of input `l` (its name dropped, `detector` and the detector's labels
/// added).
fn output(d: &Detector, l: &Labels, name: &str) -> Labels {
    let mut out = l.clone();
    out.remove("__name__");
    for (k, v) in &d.labels {
        out.set(k, v);
    }
    out.set("detector", &d.name);
    out.set("__name__", name);
    out
}

/// The model of series `l`, made at `t` if it is new, the detector is under [`MAX_SERIES`]
/// and the method's most fits in `budget` (`None`, counted, when not).
fn model_for<'a>(
    run: &'a mut Run,
    l: &Labels,
    t: i64,
    method: &crate::anomaly::method::Method,
    budget: &Arc<Budget>,
) -> Option<&'a mut Entry> {
    if !run.models.contains_key(l) {
        if run.models.len() >= MAX_SERIES {
            run.skipped += 1;
            return None;
        }
        let Some(reserved) = budget.reserve(method.max_bytes()) else {
            run.over_budget += 1;
            return None;
        };
        let model = method.build();
        run.models.insert(
            l.clone(),
            Entry {
                model,
                last_seen: t,
                reserved,
            },
        );
    }
    run.models.get_mut(l)
}

/// Scores one instant's values (ms `t`), creating models for new series up to the limit.
fn step(
    d: &Detector,
    run: &mut Run,
    t: i64,
    values: Vec<(Labels, f64)>,
    budget: &Arc<Budget>,
) -> Vec<(Labels, f64)> {
    let mut out = Vec::with_capacity(values.len());
    match &d.kind {
        Kind::Series(method) => {
            for (mut l, v) in values {
                l.remove("__name__");
                if let Some(e) = model_for(run, &l, t, method, budget) {
                    e.last_seen = t;
                    out.push((l, e.model.update(t, v)));
                }
            }
        }
        Kind::Peer {
            group_by,
            min_peers,
            cut,
        } => {
            let mut groups: HashMap<Vec<String>, Vec<(Labels, f64)>> = HashMap::new();
            for (mut l, v) in values {
                if !v.is_finite() {
                    continue;
                }
                l.remove("__name__");
                let key = group_by
                    .iter()
                    .map(|g| l.get(g).unwrap_or_default().to_string())
                    .collect();
                groups.entry(key).or_default().push((l, v));
            }
            for (_, members) in groups {
                let values: Vec<f64> = members.iter().map(|m| m.1).collect();
                let z = peer_novelty(&values, *min_peers);
                for ((l, _), z) in members.into_iter().zip(z) {
                    // A group too small to say who is unusual scores 0.
                    out.push((l, z.map_or(0.0, |z| peer_score(z, *cut))));
                }
            }
        }
        // Forecasts are evaluated on their own (see `Detectors::forecast`).
        Kind::Forecast(_) => {}
    }
    out
}

/// A peer distance as a score: 0.99 at `cut` robust standard deviations (the outlier line;
/// 3.5 by default, Iglewicz and Hoaglin's), rising toward 1 beyond it.
pub fn peer_score(z: f64, cut: f64) -> f64 {
    1.0 - 0.01f64.powf(z / cut.max(1e-9))
}

/// Each value's distance from its group's median in robust standard deviations (1.4826 ×
/// MAD, floored at a thousandth of the median's size so identical peers do not divide by 0);
/// `None` for every member of a group smaller than `min_peers` (at least 3).
pub fn peer_novelty(values: &[f64], min_peers: usize) -> Vec<Option<f64>> {
    if values.len() < min_peers.max(3) {
        return vec![None; values.len()];
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    let m = median(&mut values.to_vec());
    let mad = median(&mut values.iter().map(|v| (v - m).abs()).collect());
    let scale = 1.4826 * mad + 1e-3 * m.abs() + 1e-9;
    values.iter().map(|v| Some((v - m).abs() / scale)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tsdb::Tsdb;

    const STEP: i64 = 10_000;

    /// The first point's time: recent enough for the head to take every point.
    fn t0() -> i64 {
        (now_ms() - 800 * STEP) / STEP * STEP
    }

    fn value(host: usize, i: i64) -> f64 {
        // A cycle with a little deterministic wobble; host 3 leaves its peers at point 700.
        let base = 50.0
            + 10.0 * (i as f64 / 30.0).sin()
            + ((i * 7919 + host as i64 * 31) % 13) as f64 * 0.1;
        if host == 3 && i >= 700 {
            base + 40.0
        } else {
            base
        }
    }

    async fn write(storage: &Arc<dyn Storage>, t0: i64, i: i64) {
        let series = (0..5)
            .map(|h| SeriesSamples {
                labels: Labels::from_pairs([
                    ("__name__".to_string(), "load".to_string()),
                    ("instance".to_string(), format!("h{h}")),
                    ("job".to_string(), "node".to_string()),
                ]),
                samples: vec![Sample(t0 + i * STEP, value(h, i))],
            })
            .collect();
        storage
            .append(AppendRequest {
                origin: None,
                data: AppendData::Series(series),
            })
            .await
            .expect("append");
    }

    /// A budget no test reaches.
    fn roomy() -> Arc<Budget> {
        Budget::new(1 << 40)
    }

    async fn eval(d: &Arc<Detectors>, i: usize, t: i64) {
        let d = d.clone();
        let h = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || d.eval(i, t, &h))
            .await
            .expect("eval");
    }

    fn at(engine: &Engine, q: &str, t: i64) -> Vec<(String, f64)> {
        by(engine, q, t, "instance")
    }

    /// The query's values at `t`, named by the label `key`, in its order.
    fn by(engine: &Engine, q: &str, t: i64, key: &str) -> Vec<(String, f64)> {
        match engine.instant(q, t).expect("query") {
            Value::Vector(v) => {
                let mut out: Vec<(String, f64)> = v
                    .into_iter()
                    .map(|(l, s)| (l.get(key).unwrap_or_default().to_string(), s.1))
                    .collect();
                out.sort_by(|a, b| a.0.cmp(&b.0));
                out
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn detectors_write_scores_flag_peers_and_rebuild_their_models_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn Storage> = Arc::new(Tsdb::open(dir.path()).expect("open"));
        let t0 = t0();
        let engine = Engine::new(storage.clone(), Duration::from_secs(300), 10_000_000);
        let specs = spec::parse(
            "d.yml",
            "detectors:
  - name: shape
    expr: load
    method: knn
    params: {memory: 300, calibration: 200, warmup: 20}
    history: 1d
    labels: {team: infra}
  - name: fleet
    expr: load
    method: peer
    group_by: [job]
    history: 1d
",
        )
        .expect("spec");
        // 400 points of history before the detectors start.
        for i in 0..400 {
            write(&storage, t0, i).await;
        }
        let first = Detectors::new(engine.clone(), storage.clone(), specs.clone(), roomy());
        for i in 400..650 {
            write(&storage, t0, i).await;
            for d in 0..2 {
                eval(&first, d, t0 + i * STEP).await;
            }
        }
        // Scores and flags are ordinary series with the input's labels and the detector's.
        let t = t0 + 649 * STEP;
        let scores = at(
            &engine,
            "telltale_anomaly_score{detector=\"shape\",team=\"infra\",job=\"node\"}",
            t,
        );
        assert_eq!(scores.len(), 5, "{scores:?}");
        assert!(scores.iter().all(|(_, s)| (0.0..=1.0).contains(s)));
        assert_eq!(
            at(&engine, "telltale_anomaly{detector=\"fleet\"}", t).len(),
            5
        );
        let views = first.views();
        assert_eq!((views[0].series, views[1].series), (5, 5));
        assert_eq!((views[0].models, views[1].models), (5, 0));
        assert_eq!(
            views[0].warm_points,
            5 * 400,
            "history read back at the first evaluation"
        );
        assert!(views[0].bytes > 0 && views[0].last_error.is_empty());
        // A restart: a new set of detectors rebuilds its models from stored history and
        // scores the next point exactly as the running one does.
        write(&storage, t0, 650).await;
        let second = Detectors::new(engine.clone(), storage.clone(), specs.clone(), roomy());
        let t = t0 + 650 * STEP;
        eval(&first, 0, t).await;
        let continued = at(&engine, "telltale_anomaly_score{detector=\"shape\"}", t);
        eval(&second, 0, t).await;
        let rebuilt = at(&engine, "telltale_anomaly_score{detector=\"shape\"}", t);
        assert_eq!(continued, rebuilt);
        assert_eq!(second.views()[0].warm_points, 5 * 650);
        // Host 3 leaves its peers at point 700: the peer detector flags it, not the others.
        for i in 651..720 {
            write(&storage, t0, i).await;
            eval(&second, 1, t0 + i * STEP).await;
        }
        let flags = at(
            &engine,
            "min_over_time(telltale_anomaly{detector=\"fleet\"}[3m])",
            t0 + 719 * STEP,
        );
        assert_eq!(
            flags,
            [
                ("h0".into(), 0.0),
                ("h1".into(), 0.0),
                ("h2".into(), 0.0),
                ("h3".into(), 1.0),
                ("h4".into(), 0.0)
            ]
        );
        // A reload keeps the models of unchanged detectors and drops changed ones.
        let mut changed = specs.clone();
        changed[1].interval = Duration::from_secs(20);
        let third = Detectors::new(engine.clone(), storage.clone(), changed, second.budget());
        second.stop();
        third.inherit(&second);
        let v = third.views();
        assert_eq!((v[0].models, v[1].series), (5, 0));
        let mut m = String::new();
        third.render_metrics(&mut m);
        assert!(
            m.contains("telltale_aggregator_anomaly_series{detector=\"shape\"} 5"),
            "{m}"
        );
        // A query that fails is reported, not fatal.
        let bad = spec::parse(
            "b.yml",
            "detectors:\n  - name: b\n    expr: 'load + on(job) load'\n    method: ewma\n",
        )
        .expect("spec");
        let b = Detectors::new(engine.clone(), storage.clone(), bad, roomy());
        eval(&b, 0, t0 + 719 * STEP).await;
        assert!(!b.views()[0].last_error.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_budget_models_the_series_it_fits_and_gets_their_share_back_when_they_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn Storage> = Arc::new(Tsdb::open(dir.path()).expect("open"));
        let engine = Engine::new(storage.clone(), Duration::from_secs(300), 10_000_000);
        let t0 = t0();
        for i in 0..3 {
            write(&storage, t0, i).await;
        }
        let yaml = |m: &str| {
            format!("detectors:\n  - name: d\n    expr: load\n    method: {m}\n    history: 1h\n")
        };
        let specs = spec::parse("d.yml", &yaml("context")).expect("spec");
        let Kind::Series(method) = &specs[0].kind else {
            panic!("a series method")
        };
        let each = method.max_bytes();
        // Room for three of the five hosts' models (and not quite a fourth). The other two
        // are refused twice: reading history back, then at the evaluation.
        let budget = Budget::new(4 * each as u64 - 1);
        let first = Detectors::new(
            engine.clone(),
            storage.clone(),
            specs.clone(),
            budget.clone(),
        );
        eval(&first, 0, t0 + 2 * STEP).await;
        let v = &first.views()[0];
        assert_eq!((v.series, v.models, v.over_budget), (3, 3, 4), "{v:?}");
        assert_eq!(v.reserved, 3 * each);
        assert!(v.bytes <= v.reserved, "{v:?}");
        assert_eq!(budget.reserved(), 3 * each);
        // The next evaluation scores the same three; the other two stay out and are counted.
        write(&storage, t0, 3).await;
        eval(&first, 0, t0 + 3 * STEP).await;
        let v = &first.views()[0];
        assert_eq!((v.series, v.models, v.over_budget), (3, 3, 6), "{v:?}");
        let mut m = String::new();
        first.render_metrics(&mut m);
        assert!(
            m.contains(&format!(
                "telltale_aggregator_anomaly_budget_reserved_bytes {}",
                3 * each
            )),
            "{m}"
        );
        // A reload that changes the method drops the old models: their share comes back and
        // the new method's models take it (ewma's are small: all five fit).
        let changed = spec::parse("d.yml", &yaml("ewma")).expect("spec");
        let second = Detectors::new(engine.clone(), storage.clone(), changed, first.budget());
        first.stop();
        second.inherit(&first);
        drop(first);
        assert_eq!(budget.reserved(), 0);
        write(&storage, t0, 4).await;
        eval(&second, 0, t0 + 4 * STEP).await;
        let v = &second.views()[0];
        assert_eq!((v.models, v.over_budget), (5, 0), "{v:?}");
        assert_eq!(budget.reserved(), v.reserved);
        // Series that stop reporting are forgotten after the history (an hour here): their
        // share comes back too.
        eval(&second, 0, t0 + 4 * STEP + 3_700_000).await;
        assert_eq!((second.views()[0].models, budget.reserved()), (0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forecasts_write_the_value_at_the_horizon_and_the_time_until_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn Storage> = Arc::new(Tsdb::open(dir.path()).expect("open"));
        let engine = Engine::new(storage.clone(), Duration::from_secs(300), 10_000_000);
        let t0 = t0();
        // A disk losing one unit every step, two of them: one reaches 700 in 101 steps, the
        // other (at twice the level) not within the hour.
        for i in 0..200i64 {
            let series = [("a", 1000.0), ("b", 2000.0)]
                .iter()
                .map(|(dev, top)| SeriesSamples {
                    labels: Labels::from_pairs([("__name__", "avail"), ("device", *dev)]),
                    samples: vec![Sample(t0 + i * STEP, top - i as f64)],
                })
                .collect();
            storage
                .append(AppendRequest {
                    origin: None,
                    data: AppendData::Series(series),
                })
                .await
                .expect("append");
        }
        let specs = spec::parse(
            "f.yml",
            "detectors:\n  - name: fill\n    expr: avail\n    method: forecast\n    history: 1h\n    params: {step: 10s, season: 0, horizon: 1h, limit: 700}\n",
        )
        .expect("spec");
        let d = Detectors::new(engine.clone(), storage.clone(), specs, roomy());
        let t = t0 + 199 * STEP;
        eval(&d, 0, t).await;
        let q = |q: &str| by(&engine, q, t, "device");
        let until = q("telltale_forecast_seconds_until_limit{detector=\"fill\"}");
        assert_eq!(until.len(), 2, "{until:?}");
        assert!((until[0].1 - 1010.0).abs() <= 20.0, "{until:?}");
        assert!(until[1].1.is_infinite(), "{until:?}");
        let value = q("telltale_forecast_value{detector=\"fill\"}");
        // 801 now, 360 steps on: 441.
        assert!((value[0].1 - 441.0).abs() < 5.0, "{value:?}");
        assert_eq!(d.views()[0].series, 2);
        assert_eq!(d.views()[0].method, "forecast");
    }

    #[test]
    fn peers_are_compared_by_robust_distance() {
        assert!((peer_score(3.5, 3.5) - 0.99).abs() < 1e-12);
        assert!(peer_score(0.0, 3.5) == 0.0 && peer_score(10.0, 3.5) > 0.999);
        let n = peer_novelty(&[10.0, 11.0, 9.0, 10.5, 30.0], 3);
        let n: Vec<f64> = n.into_iter().map(|x| x.expect("scored")).collect();
        assert!(n[4] > 10.0 && n[..4].iter().all(|x| *x < 2.5), "{n:?}");
        assert_eq!(peer_novelty(&[1.0, 2.0], 3), vec![None, None]);
        assert_eq!(peer_novelty(&[1.0, 2.0, 3.0], 4), vec![None; 3]);
        // Identical peers: no division by zero.
        assert!(peer_novelty(&[5.0; 4], 3).iter().all(|x| *x == Some(0.0)));
    }
}
