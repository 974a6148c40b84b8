//! The rule driver: one task per group, evaluating on the group's interval and, eagerly, as
//! soon as storage reports an append of a metric the group reads.
//!
//! A group's rules are evaluated in order at one timestamp, so a recording rule's output is
//! visible to the rules after it (each output is appended, durably, before the next rule
//! runs). Alerts are handed to the [`Notifier`] before `ALERTS` series are written: the
//! notification is the latency-critical path. After a restart, `for` state comes back from
//! `ALERTS_FOR_STATE`, so a firing alert fires again at once instead of waiting `for` anew.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use telltale_common::model::{Labels, STALE_NAN_BITS, Sample, SeriesSamples, now_ms};
use telltale_common::names;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::alert::{AlertSet, AlertSpec, State, set_or_remove};
use super::file::{Group, Lang, Rule, RuleExpr, RuleKind};
use super::{EvalError, metric_names};
use crate::alert::Notifier;
use crate::logs::logql::{self, MetricExpr, eval::Limits};
use crate::logs::store::LogQuerier;
use crate::metrics::promql::{Engine, Value};
use crate::metrics::storage::{AppendData, AppendRequest, Storage};
use crate::selfmetrics::counter;

thread_local! {
    /// The group being evaluated on this thread, so its own appends do not wake it.
    static EVALUATING: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

struct ResetEvaluating;

impl Drop for ResetEvaluating {
    fn drop(&mut self) {
        EVALUATING.with(|e| e.set(None));
    }
}

/// Where LogQL rules read: the log store and the bounds of one query.
#[derive(Clone)]
pub struct LogSource {
    /// The log store's read side.
    pub store: Arc<dyn LogQuerier>,
    /// Bounds of one evaluation (as for `/loki/api/v1/query`).
    pub limits: Limits,
}

/// Settings of the rule manager.
#[derive(Clone)]
pub struct Settings {
    /// Where LogQL rules read (`None`: LogQL rules fail with a clear error).
    pub logs: Option<LogSource>,
    /// Shortest time between two eager evaluations of one group (zero disables eager
    /// evaluation: groups run on their interval only).
    pub eager_min_interval: Duration,
    /// Labels templates see as `$externalLabels`.
    pub external_labels: Labels,
    /// Base of alerts' `generatorURL` (the aggregator's external URL).
    pub external_url: String,
}

/// A rule's health, as `/api/v1/rules` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not evaluated yet.
    Unknown,
    /// The last evaluation worked.
    Ok,
    /// The last evaluation failed.
    Err,
}

impl Health {
    /// Prometheus' name.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Ok => "ok",
            Health::Err => "err",
        }
    }
}

#[derive(Debug)]
struct RuleState {
    alerts: AlertSet,
    health: Health,
    last_error: String,
    last_eval_ms: i64,
    eval_seconds: f64,
    /// Series written at the last evaluation (to mark the vanished ones stale).
    written: HashSet<Labels>,
}

#[derive(Debug)]
struct GroupState {
    rules: Vec<RuleState>,
    last_eval_ms: i64,
    eval_seconds: f64,
    restored: bool,
}

struct GroupRt {
    group: Group,
    state: Mutex<GroupState>,
    wake: Notify,
}

/// A snapshot of one alert for the API.
#[derive(Debug, Clone)]
pub struct AlertView {
    /// Labels.
    pub labels: Labels,
    /// Annotations.
    pub annotations: Labels,
    /// `pending` or `firing`.
    pub state: State,
    /// When it became active (ms).
    pub active_at: i64,
    /// Its latest value.
    pub value: f64,
    /// `keep_firing_since` (ms, 0 if not held).
    pub keep_firing_since: i64,
}

/// A snapshot of one rule for the API.
#[derive(Debug, Clone)]
pub struct RuleView {
    /// The rule.
    pub rule: Rule,
    /// Health.
    pub health: Health,
    /// Last error text.
    pub last_error: String,
    /// Last evaluation (ms).
    pub last_eval_ms: i64,
    /// Seconds the last evaluation took.
    pub eval_seconds: f64,
    /// The rule's overall state (alerting rules).
    pub state: State,
    /// Active alerts (alerting rules).
    pub alerts: Vec<AlertView>,
}

/// A snapshot of one group for the API.
#[derive(Debug, Clone)]
pub struct GroupView {
    /// The language of its rules.
    pub lang: Lang,
    /// Name.
    pub name: String,
    /// File.
    pub file: String,
    /// Interval.
    pub interval: Duration,
    /// Limit.
    pub limit: u64,
    /// Last evaluation (ms).
    pub last_eval_ms: i64,
    /// Seconds the last evaluation took.
    pub eval_seconds: f64,
    /// Rules.
    pub rules: Vec<RuleView>,
}

/// Evaluates rule groups.
pub struct RuleManager {
    engine: Engine,
    storage: Arc<dyn Storage>,
    notifier: Arc<dyn Notifier>,
    settings: Settings,
    groups: Vec<GroupRt>,
    /// Metric name → groups reading it.
    by_name: HashMap<String, Vec<usize>>,
    /// Groups with a selector of no fixed name: woken by every append.
    any: Vec<usize>,
    timer_evals: AtomicU64,
    eager_evals: AtomicU64,
    failures: AtomicU64,
    /// Set when a reload replaced this manager: its group tasks end.
    stopped: std::sync::atomic::AtomicBool,
    stop: Notify,
}

impl RuleManager {
    /// A manager for `groups`.
    pub fn new(
        engine: Engine,
        storage: Arc<dyn Storage>,
        notifier: Arc<dyn Notifier>,
        settings: Settings,
        groups: Vec<Group>,
    ) -> Arc<RuleManager> {
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        let mut any = Vec::new();
        let mut rts = Vec::new();
        for (i, g) in groups.into_iter().enumerate() {
            let mut wildcard = false;
            let mut names = Vec::new();
            for r in &g.rules {
                // LogQL rules are not woken by metric appends: they run on their interval,
                // like Loki's ruler.
                match &r.expr {
                    RuleExpr::Prom(e) => match metric_names(e) {
                        Some(n) => names.extend(n),
                        None => wildcard = true,
                    },
                    RuleExpr::Log(_) => {}
                }
            }
            // Only groups with alerting rules are evaluated eagerly: a breach must reach its
            // receivers at once, while recording rules exist to precompute at their interval
            // (evaluating them on every batch would multiply the samples they write).
            let alerting = g
                .rules
                .iter()
                .any(|r| matches!(r.kind, RuleKind::Alerting { .. }));
            if alerting && wildcard {
                any.push(i);
            } else if alerting {
                names.sort();
                names.dedup();
                for n in names {
                    by_name.entry(n).or_default().push(i);
                }
            }
            let rules = g
                .rules
                .iter()
                .map(|_| RuleState {
                    alerts: AlertSet::default(),
                    health: Health::Unknown,
                    last_error: String::new(),
                    last_eval_ms: 0,
                    eval_seconds: 0.0,
                    written: HashSet::new(),
                })
                .collect();
            rts.push(GroupRt {
                group: g,
                state: Mutex::new(GroupState {
                    rules,
                    last_eval_ms: 0,
                    eval_seconds: 0.0,
                    restored: false,
                }),
                wake: Notify::new(),
            });
        }
        Arc::new(RuleManager {
            engine,
            storage,
            notifier,
            settings,
            groups: rts,
            by_name,
            any,
            timer_evals: AtomicU64::new(0),
            eager_evals: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            stopped: std::sync::atomic::AtomicBool::new(false),
            stop: Notify::new(),
        })
    }

    /// Ends every group's task (a reload replaced this manager). An evaluation under way
    /// finishes first.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.stop.notify_waiters();
    }

    /// Carries the counters of the manager this one replaces, so they never go backwards.
    pub fn inherit_counters(&self, old: &RuleManager) {
        for (new, old) in [
            (&self.timer_evals, &old.timer_evals),
            (&self.eager_evals, &old.eager_evals),
            (&self.failures, &old.failures),
        ] {
            new.fetch_add(old.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Starts every group's task and, unless disabled, eager evaluation.
    pub fn start(self: &Arc<Self>) {
        if !self.settings.eager_min_interval.is_zero() && !self.groups.is_empty() {
            let me = Arc::downgrade(self);
            self.storage
                .set_append_hook(Arc::new(move |names: &[&str]| {
                    if let Some(m) = me.upgrade() {
                        m.touched(names);
                    }
                }));
        }
        for i in 0..self.groups.len() {
            tokio::spawn(self.clone().run_group(i));
        }
    }

    /// Wakes the groups that read any of `names` — except the group whose own output this
    /// is (its evaluation runs on this thread), which would otherwise wake itself for ever.
    pub fn touched(&self, names: &[&str]) {
        let own = EVALUATING.with(|e| e.get());
        let wake = |i: usize| {
            if own != Some(i) {
                self.groups[i].wake.notify_one();
            }
        };
        self.any.iter().for_each(|&i| wake(i));
        for n in names {
            if let Some(gs) = self.by_name.get(*n) {
                gs.iter().for_each(|&i| wake(i));
            }
        }
    }

    async fn run_group(self: Arc<Self>, i: usize) {
        let interval = self.groups[i].group.interval;
        let gap = self.settings.eager_min_interval;
        let mut next_tick = Instant::now();
        let mut last: Option<Instant> = None;
        loop {
            if self.stopped.load(Ordering::SeqCst) {
                return;
            }
            let eager = tokio::select! {
                _ = tokio::time::sleep_until(next_tick) => false,
                _ = self.groups[i].wake.notified(), if !gap.is_zero() => true,
                _ = self.stop.notified() => return,
            };
            if eager {
                if let Some(l) = last {
                    let since = l.elapsed();
                    if since < gap {
                        tokio::time::sleep(gap - since).await;
                    }
                }
                self.eager_evals.fetch_add(1, Ordering::Relaxed);
            } else {
                self.timer_evals.fetch_add(1, Ordering::Relaxed);
                next_tick += interval;
                let now = Instant::now();
                if next_tick <= now {
                    // Missed ticks (a slow evaluation) are skipped, not bunched.
                    next_tick = now + interval;
                }
            }
            last = Some(Instant::now());
            let me = self.clone();
            let handle = tokio::runtime::Handle::current();
            if let Err(e) =
                tokio::task::spawn_blocking(move || me.eval_group(i, now_ms(), eager, &handle))
                    .await
            {
                tracing::error!(group = %self.groups[i].group.name, error = %e, "rule evaluation panicked");
            }
        }
    }

    /// Evaluates group `i` at `now` (blocking: call from a blocking thread). An `eager`
    /// evaluation writes `ALERTS` only when an alert changed state.
    fn eval_group(&self, i: usize, now: i64, eager: bool, rt: &tokio::runtime::Handle) {
        EVALUATING.with(|e| e.set(Some(i)));
        let _reset = ResetEvaluating;
        let g = &self.groups[i];
        let mut st = g.state.lock().unwrap_or_else(|e| e.into_inner());
        let t = now - g.group.query_offset.as_millis() as i64;
        let started = std::time::Instant::now();
        let restore = !st.restored;
        st.restored = true;
        for (ri, rule) in g.group.rules.iter().enumerate() {
            let r0 = std::time::Instant::now();
            let rs = &mut st.rules[ri];
            let out = match &rule.expr {
                RuleExpr::Prom(e) => match self.engine.instant_expr(e, t, None) {
                    Ok(Value::Vector(v)) => Ok(v.into_iter().map(|(l, s)| (l, s.1)).collect()),
                    Ok(Value::Scalar(s)) => Ok(vec![(Labels::default(), s.1)]),
                    Ok(_) => Err(EvalError::NotVector),
                    Err(e) => Err(EvalError::Query(e)),
                },
                RuleExpr::Log(e) => self.eval_log(e, t),
            };
            let series = match out
                .and_then(|v| self.apply(&g.group, rule, rs, t, now, v, restore, eager))
            {
                Ok(Some(series)) => {
                    rs.health = Health::Ok;
                    rs.last_error.clear();
                    series
                }
                Ok(None) => {
                    rs.health = Health::Ok;
                    rs.last_error.clear();
                    rs.last_eval_ms = now;
                    rs.eval_seconds = r0.elapsed().as_secs_f64();
                    continue;
                }
                Err(e) => {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(group = %g.group.name, rule = %rule.name, error = %e, "rule evaluation failed");
                    rs.health = Health::Err;
                    rs.last_error = e.to_string();
                    Vec::new()
                }
            };
            // Vanished series get a stale marker, like Prometheus writes.
            let now_written: HashSet<Labels> = series.iter().map(|s| s.labels.clone()).collect();
            let mut all = series;
            for l in rs.written.difference(&now_written) {
                all.push(SeriesSamples {
                    labels: l.clone(),
                    samples: vec![Sample(t, f64::from_bits(STALE_NAN_BITS))],
                });
            }
            rs.written = now_written;
            if !all.is_empty() {
                let req = AppendRequest {
                    origin: None,
                    data: AppendData::Series(all),
                };
                if let Err(e) = rt.block_on(self.storage.append(req)) {
                    tracing::warn!(group = %g.group.name, rule = %rule.name, error = %e, "cannot store rule output");
                }
            }
            rs.last_eval_ms = now;
            rs.eval_seconds = r0.elapsed().as_secs_f64();
        }
        st.last_eval_ms = now;
        st.eval_seconds = started.elapsed().as_secs_f64();
        crate::selfmetrics::LATENCY
            .rule_group
            .observe(started.elapsed());
    }

    /// A LogQL metric query's value at `t` (ms): each series' point at that instant.
    fn eval_log(&self, e: &MetricExpr, t: i64) -> Result<Vec<(Labels, f64)>, EvalError> {
        let src = self.settings.logs.as_ref().ok_or(EvalError::NoLogStore)?;
        let t_ns = t.saturating_mul(1_000_000);
        let series = logql::eval::range_metric(src.store.as_ref(), e, t_ns, t_ns, 1, &src.limits)?;
        Ok(series
            .into_iter()
            .filter_map(|s| Some((s.labels, s.points.first()?.1)))
            .collect())
    }

    /// Applies a rule's result; returns the series to write (`None`: leave them as they are).
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        group: &Group,
        rule: &Rule,
        rs: &mut RuleState,
        t: i64,
        now: i64,
        v: Vec<(Labels, f64)>,
        restore: bool,
        eager: bool,
    ) -> Result<Option<Vec<SeriesSamples>>, EvalError> {
        match &rule.kind {
            RuleKind::Recording => {
                let mut out = Vec::with_capacity(v.len());
                let mut seen = HashSet::with_capacity(v.len());
                for (mut l, val) in v {
                    l.set("__name__", &rule.name);
                    for (k, tpl) in &rule.labels {
                        set_or_remove(&mut l, k, tpl.source());
                    }
                    if !seen.insert(l.clone()) {
                        return Err(EvalError::DuplicateLabels { what: "rule" });
                    }
                    out.push(SeriesSamples {
                        labels: l,
                        samples: vec![Sample(t, val)],
                    });
                }
                if group.limit > 0 && out.len() as u64 > group.limit {
                    return Err(EvalError::Limit {
                        limit: group.limit,
                        count: out.len() as u64,
                        what: "series",
                    });
                }
                Ok(Some(out))
            }
            RuleKind::Alerting {
                hold,
                keep_firing_for,
                annotations,
            } => {
                if restore && !hold.is_zero() {
                    rs.alerts.restore_from(self.for_state(&rule.name, *hold, t));
                }
                let engine = &self.engine;
                let query = move |q: &str| template_query(engine, q, t);
                let spec = AlertSpec {
                    query: Some(&query),
                    name: &rule.name,
                    labels: &rule.labels,
                    annotations,
                    hold: *hold,
                    keep_firing_for: *keep_firing_for,
                    limit: group.limit,
                    external_url: &self.settings.external_url,
                };
                let before = rs.alerts.states();
                let applied = rs.alerts.apply(&spec, t, v, &self.settings.external_labels);
                let query =
                    form_urlencoded::byte_serialize(rule.query.as_bytes()).collect::<String>();
                let base = self.settings.external_url.trim_end_matches('/');
                let url = match group.lang {
                    Lang::PromQL => format!("{base}/graph?g0.expr={query}&g0.tab=1"),
                    // The lines behind a log alert: the query over the hour before now.
                    Lang::LogQL => format!(
                        "{base}/loki/api/v1/query_range?query={query}&start={}&end={}",
                        (now - 3_600_000) * 1_000_000,
                        now * 1_000_000
                    ),
                };
                let send = rs.alerts.to_send(now, group.interval, &url);
                if !send.is_empty() {
                    self.notifier.send(send);
                }
                applied?;
                if eager && rs.alerts.states() == before {
                    return Ok(None);
                }
                Ok(Some(rs.alerts.series(t, &rule.labels)))
            }
        }
    }

    /// `active_at` of the alerts of `alertname` from `ALERTS_FOR_STATE`, looking back `for`
    /// plus ten minutes (Prometheus' default grace period).
    fn for_state(&self, alertname: &str, hold: Duration, t: i64) -> HashMap<Labels, i64> {
        let back = hold + Duration::from_secs(600);
        let q = format!(
            "last_over_time(ALERTS_FOR_STATE{{alertname={alertname:?}}}[{}s])",
            back.as_secs()
        );
        let mut out = HashMap::new();
        match self.engine.instant(&q, t) {
            Ok(Value::Vector(v)) => {
                for (mut l, s) in v {
                    l.remove("__name__");
                    out.insert(l, (s.1 * 1000.0) as i64);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(alertname, error = %e, "cannot restore alert state"),
        }
        out
    }

    /// Evaluates every group once at `now` (ms), in order, on the calling thread, which must
    /// not be one of `rt`'s: `rules test` runs rule files on a test clock with it.
    pub fn eval_all_blocking(&self, now: i64, rt: &tokio::runtime::Handle) {
        for i in 0..self.groups.len() {
            self.eval_group(i, now, false, rt);
        }
    }

    /// Evaluates every group once at `now`, with a clock the test chooses.
    #[cfg(test)]
    pub async fn eval_all_at(self: &Arc<Self>, now: i64) {
        for i in 0..self.groups.len() {
            let me = self.clone();
            let handle = tokio::runtime::Handle::current();
            let _ =
                tokio::task::spawn_blocking(move || me.eval_group(i, now, false, &handle)).await;
        }
    }

    /// Snapshots of the groups for `/api/v1/rules` and `/api/v1/alerts`.
    pub fn groups(&self) -> Vec<GroupView> {
        self.groups
            .iter()
            .map(|g| {
                let st = g.state.lock().unwrap_or_else(|e| e.into_inner());
                GroupView {
                    lang: g.group.lang,
                    name: g.group.name.clone(),
                    file: g.group.file.display().to_string(),
                    interval: g.group.interval,
                    limit: g.group.limit,
                    last_eval_ms: st.last_eval_ms,
                    eval_seconds: st.eval_seconds,
                    rules: g
                        .group
                        .rules
                        .iter()
                        .zip(&st.rules)
                        .map(|(r, rs)| RuleView {
                            rule: r.clone(),
                            health: rs.health,
                            last_error: rs.last_error.clone(),
                            last_eval_ms: rs.last_eval_ms,
                            eval_seconds: rs.eval_seconds,
                            state: rs.alerts.state(),
                            alerts: rs
                                .alerts
                                .alerts()
                                .filter(|a| a.state != State::Inactive)
                                .map(|a| AlertView {
                                    labels: a.labels.clone(),
                                    annotations: a.annotations.clone(),
                                    state: a.state,
                                    active_at: a.active_at,
                                    value: a.value,
                                    keep_firing_since: a.keep_firing_since,
                                })
                                .collect(),
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// Renders the manager's counters.
    pub fn render_metrics(&self, out: &mut String) {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let n = names::AGG_RULE_EVALUATIONS;
        let _ = writeln!(
            out,
            "# HELP {n} Rule group evaluations, by what started them.\n# TYPE {n} counter\n{n}{{trigger=\"timer\"}} {}\n{n}{{trigger=\"eager\"}} {}",
            l(&self.timer_evals),
            l(&self.eager_evals)
        );
        counter(
            out,
            names::AGG_RULE_FAILURES,
            "Rule evaluations that failed.",
            l(&self.failures),
        );
    }
}

/// The templates' `query`: an instant query at the rule's evaluation time, as Prometheus'
/// rule manager runs it (a scalar is one sample without labels).
fn template_query(engine: &Engine, q: &str, t: i64) -> Result<Vec<(Labels, f64)>, String> {
    match engine.instant(q, t) {
        Ok(Value::Vector(v)) => Ok(v.into_iter().map(|(l, s)| (l, s.1)).collect()),
        Ok(Value::Scalar(s)) => Ok(vec![(Labels::default(), s.1)]),
        Ok(_) => Err(format!(
            "query {q:?}: the result is not a vector or a scalar"
        )),
        Err(e) => Err(format!("query {q:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Alert;
    use crate::metrics::tsdb::Tsdb;

    #[derive(Default)]
    struct Collect(Mutex<Vec<Alert>>);

    impl Notifier for Collect {
        fn send(&self, alerts: Vec<Alert>) {
            self.0.lock().unwrap().extend(alerts);
        }
    }

    fn setup(
        dir: &std::path::Path,
        rules: &str,
    ) -> (Arc<RuleManager>, Arc<Collect>, Arc<dyn Storage>) {
        setup_with(dir, rules, Lang::PromQL, None)
    }

    fn setup_with(
        dir: &std::path::Path,
        rules: &str,
        lang: Lang,
        logs: Option<LogSource>,
    ) -> (Arc<RuleManager>, Arc<Collect>, Arc<dyn Storage>) {
        let storage: Arc<dyn Storage> = Arc::new(Tsdb::open(dir).unwrap());
        let engine = Engine::new(storage.clone(), Duration::from_secs(300), 1_000_000);
        let groups = crate::rules::file::parse(
            std::path::Path::new("t.yml"),
            rules,
            Duration::from_secs(3600),
            lang,
        )
        .unwrap();
        let sink = Arc::new(Collect::default());
        let m = RuleManager::new(
            engine,
            storage.clone(),
            sink.clone(),
            Settings {
                logs,
                eager_min_interval: Duration::from_millis(50),
                external_labels: Labels::default(),
                external_url: "http://x".into(),
            },
            groups,
        );
        (m, sink, storage)
    }

    async fn put(s: &Arc<dyn Storage>, name: &str, t: i64, v: f64) {
        s.append(AppendRequest {
            origin: None,
            data: AppendData::Series(vec![SeriesSamples {
                labels: Labels::from_pairs([("__name__", name), ("host", "a")]),
                samples: vec![Sample(t, v)],
            }]),
        })
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_breaching_sample_is_evaluated_as_it_arrives_not_at_the_next_tick() {
        let dir = tempfile::tempdir().unwrap();
        // One-hour intervals: only eager evaluation can notice the breach within the test.
        let (m, sink, storage) = setup(
            dir.path(),
            "groups: [{name: g, interval: 1h, rules: [{record: 'x:doubled', expr: 'x * 2'}, {alert: High, expr: 'x:doubled > 10'}, {alert: Direct, expr: 'x > 5'}]}]",
        );
        m.start();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(sink.0.lock().unwrap().is_empty());
        put(&storage, "x", now_ms(), 7.0).await;
        let mut got = Vec::new();
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            got = sink.0.lock().unwrap().clone();
            if got
                .iter()
                .any(|a| a.labels.get("alertname") == Some("High"))
            {
                break;
            }
        }
        let names: Vec<_> = got
            .iter()
            .filter_map(|a| a.labels.get("alertname"))
            .collect();
        assert!(names.contains(&"Direct"), "{names:?}");
        assert!(
            names.contains(&"High"),
            "recorded output feeds the next rule: {names:?}"
        );
        // The group's own appends (x:doubled, ALERTS) do not keep waking it.
        let before = m.eager_evals.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(600)).await;
        let after = m.eager_evals.load(Ordering::Relaxed);
        assert!(after - before <= 1, "self-waking: {before} -> {after}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn for_state_is_restored_from_alerts_for_state_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let rules = "groups: [{name: g, rules: [{alert: Slow, expr: 'x > 5', for: 10m}]}]";
        let t0 = now_ms() - 20 * 60_000;
        {
            let (m, sink, storage) = setup(dir.path(), rules);
            for i in 0..21 {
                put(&storage, "x", t0 + i * 60_000, 9.0).await;
            }
            m.eval_all_at(t0).await;
            m.eval_all_at(t0 + 60_000).await;
            assert!(sink.0.lock().unwrap().is_empty(), "pending is not sent");
            let g = m.groups();
            assert_eq!(g[0].rules[0].alerts[0].state, State::Pending);
            assert_eq!(g[0].rules[0].alerts[0].active_at, t0);
        }
        // A new manager over the same storage: at t0 + 11m the alert fires at once, because
        // its active time comes back from ALERTS_FOR_STATE.
        let (m, sink, _storage) = setup(dir.path(), rules);
        m.eval_all_at(t0 + 11 * 60_000).await;
        let g = m.groups();
        assert_eq!(g[0].rules[0].alerts[0].state, State::Firing);
        assert_eq!(g[0].rules[0].alerts[0].active_at, t0);
        assert_eq!(sink.0.lock().unwrap()[0].starts_at, t0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recording_rules_write_series_and_mark_vanished_ones_stale() {
        let dir = tempfile::tempdir().unwrap();
        let (m, _sink, storage) = setup(
            dir.path(),
            "groups: [{name: g, rules: [{record: 'job:x:sum', expr: 'sum by (host) (x)', labels: {team: a}}]}]",
        );
        let t = now_ms();
        put(&storage, "x", t - 1000, 3.0).await;
        m.eval_all_at(t).await;
        let got = storage
            .select(
                &[crate::labels::Matcher::equal("__name__", "job:x:sum")],
                0,
                i64::MAX,
                100,
            )
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].labels.get("team"), Some("a"));
        assert_eq!(got[0].samples, vec![Sample(t, 3.0)]);
        // x goes stale far past the lookback: the recorded series gets a stale marker.
        m.eval_all_at(t + 10 * 60_000).await;
        let got = storage
            .select(
                &[crate::labels::Matcher::equal("__name__", "job:x:sum")],
                0,
                i64::MAX,
                100,
            )
            .unwrap();
        assert_eq!(got[0].samples.len(), 2);
        assert!(telltale_common::model::is_stale_marker(got[0].samples[1].1));
        assert_eq!(m.groups()[0].rules[0].health, Health::Ok);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn log_rules_alert_and_record_from_the_log_store() {
        use crate::logs::store::{LogAppend, LogAppender};
        use telltale_common::wire::{LogEntry, LogStream};
        let dir = tempfile::tempdir().unwrap();
        let engine = crate::logs::engine::LogEngine::open(
            &dir.path().join("logs"),
            crate::logs::engine::LogOptions::default(),
        )
        .unwrap();
        let logs = Arc::new(engine);
        let t = now_ms();
        // api: 3 lines in the last minute, 2 of them errors; web: 1 line, no error.
        let stream = |app: &str, lines: &[&str]| LogStream {
            labels: vec![("app".to_string(), app.to_string())],
            entries: lines
                .iter()
                .enumerate()
                .map(|(i, l)| LogEntry {
                    t_ns: (t - 30_000 + i as i64) * 1_000_000,
                    line: (*l).into(),
                    metadata: Vec::new(),
                })
                .collect(),
        };
        logs.append(LogAppend {
            origin: None,
            streams: vec![
                stream("api", &["GET / 200", "error: db down", "error: db down"]),
                stream("web", &["GET / 200"]),
            ],
        })
        .await
        .unwrap();
        let rules = r#"
groups:
  - name: logs
    rules:
      - alert: ErrorsLogged
        expr: sum by (app) (count_over_time({app=~".+"} |= "error" [1m])) > 1
        labels: {severity: page}
        annotations: {summary: "{{ $labels.app }}: {{ $value }} errors"}
      - record: app:log_lines:count1m
        expr: sum by (app) (count_over_time({app=~".+"}[1m]))
"#;
        let src = LogSource {
            store: logs.clone(),
            limits: Limits::default(),
        };
        let (m, sink, storage) = setup_with(dir.path(), rules, Lang::LogQL, Some(src));
        m.eval_all_at(t).await;
        let sent = sink.0.lock().unwrap().clone();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].labels.get("alertname"), Some("ErrorsLogged"));
        assert_eq!(sent[0].labels.get("app"), Some("api"));
        assert_eq!(sent[0].labels.get("severity"), Some("page"));
        assert_eq!(sent[0].annotations.get("summary"), Some("api: 2 errors"));
        assert!(
            sent[0]
                .generator_url
                .contains("/loki/api/v1/query_range?query=")
        );
        let g = m.groups();
        assert_eq!(g[0].rules[0].health, Health::Ok);
        assert_eq!(g[0].rules[1].health, Health::Ok);
        // The recording rule's output is a metric like any other.
        let got = storage
            .select(
                &[crate::labels::Matcher::equal(
                    "__name__",
                    "app:log_lines:count1m",
                )],
                0,
                i64::MAX,
                100,
            )
            .unwrap();
        let mut v: Vec<(String, f64)> = got
            .iter()
            .map(|s| {
                (
                    s.labels.get("app").unwrap_or("").to_string(),
                    s.samples[0].1,
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(v, [("api".to_string(), 3.0), ("web".to_string(), 1.0)]);
        // Without a log store the rule fails with a clear error, not silently.
        let (m, sink, _) = setup_with(&dir.path().join("b"), rules, Lang::LogQL, None);
        m.eval_all_at(t).await;
        assert!(sink.0.lock().unwrap().is_empty());
        let g = m.groups();
        assert_eq!(g[0].rules[0].health, Health::Err);
        assert!(
            g[0].rules[0].last_error.contains("no log store"),
            "{}",
            g[0].rules[0].last_error
        );
    }
}
