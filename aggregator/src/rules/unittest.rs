//! Rule unit tests in `promtool test rules`' file format, run on Telltale's own rule manager
//! and PromQL engine over a test clock: the same file can be checked by both, so a rule
//! file's alert timeline is Prometheus' and Telltale's alike.
//!
//! Read: `rule_files` (relative to the test file), `evaluation_interval` (default 1m),
//! `group_eval_order` (groups named there run in that order, those not named share the first
//! one's place, as promtool sorts them; without it promtool's order is Go's map order, so a file whose rules
//! read another group's output should give one), and per test `interval`,
//! `input_series` (values in the expanding notation: `0+10x5`, `1x3`, `_`, `_x2`, `stale`),
//! `alert_rule_test` (`eval_time`, `alertname`, `exp_alerts` with `exp_labels` and
//! `exp_annotations`: the alerts *firing* then, compared as sets), `promql_expr_test`
//! (`expr`, `eval_time`, `exp_samples` with `labels` and `value`, compared exactly, as
//! promtool does),
//! `external_labels`, `external_url` and `name`. As in promtool, every group is evaluated
//! at every `evaluation_interval` from 0 to the last `eval_time`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use telltale_common::config::Invalid;
use telltale_common::model::{Labels, Sample, SeriesSamples};

use super::file::{Lang, RuleKind};
use super::manager::{RuleManager, Settings};
use crate::alert::{Alert, Notifier, prom_duration};
use crate::metrics::promql::script::{expand, series_labels};
use crate::metrics::promql::{Engine, Value};
use crate::metrics::storage::memory::MemStorage;
use crate::metrics::storage::{AppendData, AppendRequest, Storage};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    rule_files: Vec<String>,
    #[serde(default)]
    evaluation_interval: Option<String>,
    #[serde(default)]
    group_eval_order: Vec<String>,
    #[serde(default)]
    tests: Vec<TestGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestGroup {
    #[serde(default)]
    name: String,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    input_series: Vec<InputSeries>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
    #[serde(default)]
    promql_expr_test: Vec<ExprTest>,
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
    #[serde(default)]
    external_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSeries {
    series: String,
    values: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertTest {
    eval_time: String,
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpAlert {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    exp_annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExprTest {
    expr: String,
    eval_time: String,
    #[serde(default)]
    exp_samples: Vec<ExpSample>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpSample {
    labels: String,
    value: f64,
}

/// Alerts go nowhere in a unit test.
struct Nowhere;

impl Notifier for Nowhere {
    fn send(&self, _alerts: Vec<Alert>) {}
}

fn ms(s: &str) -> Result<i64, String> {
    prom_duration(s)
        .map(|d| d.as_millis() as i64)
        .map_err(|e| e.0)
}

/// An instant query's samples, labels as a map, or why it failed.
pub type ExprResult = Result<Vec<(BTreeMap<String, String>, f64)>, String>;

/// An alert as compared (and observed): labels without `alertname`, and annotations.
pub type Got = (BTreeMap<String, String>, BTreeMap<String, String>);

fn pairs(l: &Labels) -> BTreeMap<String, String> {
    l.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What Telltale's rule manager and engine give for one test group: for each
/// `alert_rule_test` the alerts firing then, for each `promql_expr_test` the samples or the
/// error, in the file's order. A fuzzer writes these as the expectations of a file that
/// `promtool test rules` then checks (tests/src/rulefuzz.rs).
pub struct Observed {
    /// Per `alert_rule_test`: the alerts firing at its `eval_time`, sorted.
    pub alerts: Vec<Vec<Got>>,
    /// Per `promql_expr_test`: the samples at its `eval_time`, or the query's error.
    pub exprs: Vec<ExprResult>,
}

/// A parsed test file with its rule files found.
struct Loaded {
    spec: TestFile,
    every: i64,
    rule_files: Vec<PathBuf>,
    rt: tokio::runtime::Runtime,
}

fn load(file: &Path) -> Result<Loaded, Invalid> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read: {e}"))?;
    let spec: TestFile = serde_saphyr::from_str(&text).map_err(|e| e.to_string())?;
    let every = ms(spec.evaluation_interval.as_deref().unwrap_or("1m"))?.max(1);
    for (i, g) in spec.group_eval_order.iter().enumerate() {
        if spec.group_eval_order[..i].contains(g) {
            return Err(format!("group name repeated in evaluation order: {g}").into());
        }
    }
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut rule_files: Vec<PathBuf> = Vec::new();
    for f in &spec.rule_files {
        let p = dir.join(f);
        let p = p.to_string_lossy().to_string();
        rule_files.extend(super::file::expand_glob(&p).map_err(|e| e.0)?);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    Ok(Loaded {
        spec,
        every,
        rule_files,
        rt,
    })
}

fn name(t: &TestGroup, i: usize) -> String {
    if t.name.is_empty() {
        format!("test {i}")
    } else {
        t.name.clone()
    }
}

/// Runs one test file; `Ok` holds the failures (none: it passed), `Err` why it could not run.
pub fn run(file: &Path) -> Result<Vec<String>, Invalid> {
    let l = load(file)?;
    let mut failures = Vec::new();
    for (i, t) in l.spec.tests.iter().enumerate() {
        let name = name(t, i);
        let seen = group(t, &l, &l.rt).map_err(|e| format!("{name}: {e}"))?;
        for (a, got) in t.alert_rule_test.iter().zip(seen.alerts) {
            if let Some(f) = check_alerts(a, got) {
                failures.push(format!("{name}: {f}"));
            }
        }
        for (e, got) in t.promql_expr_test.iter().zip(seen.exprs) {
            if let Some(f) = check_expr(e, got).map_err(|e| format!("{name}: {e}"))? {
                failures.push(format!("{name}: {f}"));
            }
        }
    }
    Ok(failures)
}

/// Runs one test file's groups without comparing: what Telltale observes, group by group.
pub fn observe(file: &Path) -> Result<Vec<Observed>, Invalid> {
    let l = load(file)?;
    let mut out = Vec::new();
    for (i, t) in l.spec.tests.iter().enumerate() {
        out.push(group(t, &l, &l.rt).map_err(|e| format!("{}: {e}", name(t, i)))?);
    }
    Ok(out)
}

fn group(t: &TestGroup, l: &Loaded, rt: &tokio::runtime::Runtime) -> Result<Observed, String> {
    let every = l.every;
    let interval = t.interval.as_deref().map_or(Ok(every), ms)?.max(1);
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let mut series = Vec::new();
    for s in &t.input_series {
        let labels = series_labels(&s.series)?;
        let values = expand(&s.values).map_err(|e| format!("{}: {}", s.series, e.0))?;
        let samples: Vec<Sample> = values
            .iter()
            .enumerate()
            .filter_map(|(k, v)| v.map(|v| Sample(k as i64 * interval, v)))
            .collect();
        series.push(SeriesSamples { labels, samples });
    }
    rt.block_on(storage.append(AppendRequest {
        origin: None,
        data: AppendData::Series(series),
    }))
    .map_err(|e| format!("cannot load the input series: {e}"))?;
    let mut groups = Vec::new();
    for f in &l.rule_files {
        groups.extend(
            super::file::load(f, Duration::from_millis(every as u64), Lang::PromQL)
                .map_err(|e| e.to_string())?,
        );
    }
    let order = &l.spec.group_eval_order;
    groups.sort_by_key(|g| order.iter().position(|n| *n == g.name).unwrap_or(0));
    let engine = Engine::new(storage.clone(), Duration::from_secs(300), 50_000_000);
    let manager = RuleManager::new(
        engine.clone(),
        storage.clone(),
        Arc::new(Nowhere),
        Settings {
            logs: None,
            eager_min_interval: Duration::ZERO,
            external_labels: Labels::from_pairs(t.external_labels.clone()),
            external_url: t
                .external_url
                .clone()
                // promtool's default: none.
                .unwrap_or_default(),
        },
        groups,
    );
    // The alert checks by time: (eval_time, test index).
    let mut checks: Vec<(i64, usize)> = Vec::new();
    for (i, a) in t.alert_rule_test.iter().enumerate() {
        checks.push((ms(&a.eval_time)?, i));
    }
    checks.sort();
    let mut last = checks.last().map_or(0, |c| c.0);
    for e in &t.promql_expr_test {
        last = last.max(ms(&e.eval_time)?);
    }
    let mut alerts = vec![Vec::new(); t.alert_rule_test.len()];
    let mut next = checks.iter().peekable();
    let mut now = 0;
    while now <= last {
        manager.eval_all_blocking(now, rt.handle());
        // A check between two ticks sees the alerts of the tick before it, as in promtool.
        let upto = now + every;
        while let Some(&&(at, i)) = next.peek() {
            if at >= upto {
                break;
            }
            next.next();
            alerts[i] = firing(&manager, &t.alert_rule_test[i].alertname);
        }
        now += every;
    }
    let mut exprs = Vec::new();
    for e in &t.promql_expr_test {
        exprs.push(eval_expr(&engine, e)?);
    }
    Ok(Observed { alerts, exprs })
}

/// The alerts of rules named `alertname` firing now, sorted.
fn firing(manager: &RuleManager, alertname: &str) -> Vec<Got> {
    let mut got: Vec<Got> = Vec::new();
    for g in manager.groups() {
        for r in &g.rules {
            if r.rule.name != alertname || !matches!(r.rule.kind, RuleKind::Alerting { .. }) {
                continue;
            }
            for al in &r.alerts {
                if al.state.as_str() == "firing" {
                    let mut l = pairs(&al.labels);
                    l.remove("alertname");
                    got.push((l, pairs(&al.annotations)));
                }
            }
        }
    }
    got.sort();
    got
}

fn check_alerts(a: &AlertTest, got: Vec<Got>) -> Option<String> {
    let mut exp: Vec<Got> = a
        .exp_alerts
        .iter()
        .map(|e| (e.exp_labels.clone(), e.exp_annotations.clone()))
        .collect();
    exp.sort();
    if got == exp {
        return None;
    }
    let show = |v: &[Got]| {
        let mut s = String::new();
        for (l, an) in v {
            let _ = write!(s, "\n        labels: {l:?} annotations: {an:?}");
        }
        if s.is_empty() {
            s.push_str(" none");
        }
        s
    };
    Some(format!(
        "alertname: {}, time: {}\n      exp:{}\n      got:{}",
        a.alertname,
        a.eval_time,
        show(&exp),
        show(&got)
    ))
}

fn eval_expr(engine: &Engine, e: &ExprTest) -> Result<ExprResult, String> {
    let t = ms(&e.eval_time)?;
    Ok(match engine.instant(&e.expr, t) {
        Ok(Value::Vector(v)) => Ok(v.into_iter().map(|(l, s)| (pairs(&l), s.1)).collect()),
        Ok(Value::Scalar(s)) => Ok(vec![(BTreeMap::new(), s.1)]),
        Ok(_) => Err("not a vector or scalar".to_string()),
        Err(err) => Err(err.to_string()),
    })
}

fn check_expr(e: &ExprTest, got: ExprResult) -> Result<Option<String>, String> {
    let got = match got {
        Ok(got) => got,
        Err(err) => {
            return Ok(Some(format!(
                "expr: {:?}, time: {}: {err}",
                e.expr, e.eval_time
            )));
        }
    };
    let mut exp = Vec::new();
    for s in &e.exp_samples {
        exp.push((pairs(&series_labels(&s.labels)?), s.value));
    }
    // Exact, as promtool compares: a value one ulp off is a different answer.
    let close = |a: f64, b: f64| a == b || (a.is_nan() && b.is_nan());
    let mut left = got.clone();
    let matched = exp.len() == got.len()
        && exp.iter().all(|(l, v)| {
            match left.iter().position(|(gl, gv)| gl == l && close(*gv, *v)) {
                Some(i) => {
                    left.remove(i);
                    true
                }
                None => false,
            }
        });
    Ok((!matched).then(|| {
        format!(
            "expr: {:?}, time: {}\n      exp: {exp:?}\n      got: {got:?}",
            e.expr, e.eval_time
        )
    }))
}
