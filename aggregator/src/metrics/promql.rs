//! PromQL evaluation on promql-parser's AST, over the [`Querier`] trait only.
//!
//! - [`eval`]: the evaluator (selectors with `offset` and `@`, lookback and stale markers,
//!   range vectors, subqueries, aggregations) — selector data is loaded once per query and
//!   shared by all steps of a range query;
//! - [`binary`]: operators and vector matching;
//! - [`call`] and [`functions`]: the functions.
//!
//! Semantics follow Prometheus; the differential compliance test against a real Prometheus is
//! the PromQL issue's next step.

mod binary;
mod call;
pub mod eval;
pub mod format;
pub mod functions;
pub mod gomath;
pub mod gosort;
pub mod limits;
mod prepare;
mod rate;
mod regexes;
mod rollups;
pub mod script;

use std::sync::Arc;
use std::time::Duration;

use promql_parser::parser::Expr;
use telltale_common::model::{Labels, Sample};

use crate::metrics::storage::{Matcher, Querier, SeriesData, StorageError};
use eval::{Assembly, Evaluator, Val};

/// Query errors, each mapped to Prometheus' error types by the API.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query does not parse or is not allowed here (`bad_data`, HTTP 400).
    #[error("{0}")]
    BadData(String),
    /// The query failed while running (`execution`, HTTP 422).
    #[error("{0}")]
    Execution(String),
    /// The query ran past its deadline (`timeout`, HTTP 503).
    #[error("query timed out in {0}")]
    Timeout(&'static str),
}

/// The earliest and latest time a query works with (ms): about ±73 million years, so that
/// sums and differences of times, offsets and ranges never overflow.
pub const TIME_LIMIT_MS: i64 = 1 << 61;

/// `t` (ms) within ±[`TIME_LIMIT_MS`].
pub fn clamp_time(t: i128) -> i64 {
    t.clamp(-(TIME_LIMIT_MS as i128), TIME_LIMIT_MS as i128) as i64
}

/// The error of a query that would hold more points than `query_max_samples` (Prometheus'
/// message, plus the limit's name and value).
pub fn too_many_samples(limit: usize) -> QueryError {
    QueryError::Execution(format!(
        "query processing would load too many samples into memory in query execution \
         (query_max_samples = {limit})"
    ))
}

impl From<StorageError> for QueryError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::TooManySamples { limit } => too_many_samples(limit),
            other => QueryError::Execution(other.to_string()),
        }
    }
}

/// The value of an expression at one instant.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Instant vector: one sample per series.
    Vector(Vec<(Labels, Sample)>),
    /// Range vector: samples per series.
    Matrix(Vec<SeriesData>),
    /// A number at a time.
    Scalar(Sample),
    /// A string at a time.
    String(i64, String),
}

/// How far below its first call evaluation may recurse on a thread of unknown size (tokio's
/// and Rust's default threads have 2 MiB; [`SERVER_THREAD_STACK`] is the server's).
pub const DEFAULT_STACK_BUDGET: usize = 1 << 20;
/// The stack of the aggregator's runtime threads, which evaluate queries and rules: a debug
/// build spends up to 12 KiB per level of the syntax tree, a release build a fraction of it,
/// and [`limits::MAX_DEPTH`] levels must fit. Only the pages used are ever committed.
pub const SERVER_THREAD_STACK: usize = 48 << 20;
/// The evaluation budget on [`SERVER_THREAD_STACK`]: the rest is left to the frames around.
pub const SERVER_STACK_BUDGET: usize = 40 << 20;

/// Evaluates queries against a storage.
#[derive(Clone)]
pub struct Engine {
    storage: Arc<dyn Querier>,
    lookback_ms: i64,
    max_samples: usize,
    timeout: Option<Duration>,
    stack_budget: usize,
}

fn query_param(e: QueryError) -> QueryError {
    QueryError::BadData(format!("invalid parameter \"query\": {e}"))
}

impl Engine {
    /// An engine with a lookback (Prometheus: 5 minutes) and a per-query sample limit.
    pub fn new(storage: Arc<dyn Querier>, lookback: Duration, max_samples: usize) -> Engine {
        Engine {
            storage,
            lookback_ms: lookback.as_millis() as i64,
            max_samples,
            timeout: None,
            stack_budget: DEFAULT_STACK_BUDGET,
        }
    }

    /// The same engine for threads with a larger stack: evaluation may use `bytes` of it.
    pub fn with_stack_budget(mut self, bytes: usize) -> Engine {
        self.stack_budget = bytes;
        self
    }

    /// The same engine with a per-query time limit.
    pub fn with_timeout(mut self, timeout: Duration) -> Engine {
        self.timeout = Some(timeout);
        self
    }

    /// How far back an instant selector looks for a sample (ms).
    pub fn lookback_ms(&self) -> i64 {
        self.lookback_ms
    }

    /// The most samples one query may load.
    pub fn max_samples(&self) -> usize {
        self.max_samples
    }

    /// The engine's per-query time limit, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    fn evaluator<'a>(
        &'a self,
        start: i64,
        end: i64,
        expr: &Expr,
        timeout: Option<Duration>,
    ) -> Evaluator<'a> {
        let limit = match (self.timeout, timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut ev = Evaluator::new(
            self.storage.as_ref(),
            self.lookback_ms,
            self.max_samples,
            start,
            end,
            expr,
        );
        ev.set_stack_budget(self.stack_budget);
        if let Some(l) = limit {
            ev.set_deadline(std::time::Instant::now() + l);
        }
        ev
    }

    /// Parses a query, with Prometheus-like messages.
    pub fn parse(q: &str) -> Result<Expr, QueryError> {
        limits::parse(q).map_err(query_param)
    }

    /// Parses a query for printing it ([`limits::parse_syntax`]), with Prometheus-like
    /// messages.
    pub fn parse_syntax(q: &str) -> Result<Expr, QueryError> {
        limits::parse_syntax(q).map_err(query_param)
    }

    /// Evaluates `q` at `t_ms`.
    pub fn instant(&self, q: &str, t_ms: i64) -> Result<Value, QueryError> {
        self.instant_with_timeout(q, t_ms, None)
    }

    /// Evaluates `q` at `t_ms`, within `timeout` if it is shorter than the engine's.
    pub fn instant_with_timeout(
        &self,
        q: &str,
        t_ms: i64,
        timeout: Option<Duration>,
    ) -> Result<Value, QueryError> {
        let expr = Self::parse(q)?;
        self.instant_expr(&expr, t_ms, timeout)
    }

    /// Evaluates a parsed expression at `t_ms` (rules parse theirs once, at load).
    pub fn instant_expr(
        &self,
        expr: &Expr,
        t_ms: i64,
        timeout: Option<Duration>,
    ) -> Result<Value, QueryError> {
        let mut ev = self.evaluator(t_ms, t_ms, expr, timeout);
        Ok(match ev.eval(expr, t_ms)? {
            Val::Scalar(v) => Value::Scalar(Sample(t_ms, v)),
            Val::Str(s) => Value::String(t_ms, s),
            Val::Vector(v) => Value::Vector(
                v.into_iter()
                    .map(|e| (e.labels, Sample(t_ms, e.v)))
                    .collect(),
            ),
            Val::Matrix(m) => Value::Matrix(m),
        })
    }

    /// Evaluates `q` at every step from `start` to `end` (inclusive), as a matrix.
    pub fn range(
        &self,
        q: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Vec<SeriesData>, QueryError> {
        self.range_with_timeout(q, start, end, step, None)
    }

    /// [`Engine::range`] within `timeout` if it is shorter than the engine's.
    pub fn range_with_timeout(
        &self,
        q: &str,
        start: i64,
        end: i64,
        step: i64,
        timeout: Option<Duration>,
    ) -> Result<Vec<SeriesData>, QueryError> {
        let expr = Self::parse(q)?;
        let mut ev = self.evaluator(start, end, &expr, timeout);
        ev.set_step(step);
        if let Some(series) = ev.counter_rate_range(&expr)? {
            return Ok(series);
        }
        let mut out = Assembly::default();
        // One empty label set for every step's scalar, so they share one identity.
        let no_labels = Labels::default();
        let mut t = start;
        while t <= end {
            match ev.eval(&expr, t)? {
                Val::Scalar(v) => {
                    ev.count_points(1)?;
                    out.push(no_labels.clone(), Sample(t, v))
                }
                Val::Vector(v) => {
                    // The result's points are held until the query ends: they count.
                    ev.count_points(v.len())?;
                    for e in v {
                        out.push(e.labels, Sample(t, e.v));
                    }
                }
                other @ (Val::Matrix(_) | Val::Str(_)) => {
                    let kind = match other {
                        Val::Str(_) => "string",
                        _ => "range vector",
                    };
                    return Err(QueryError::BadData(format!(
                        "invalid expression type \"{kind}\" for range query, must be Scalar or instant Vector"
                    )));
                }
            }
            t = match t.checked_add(step) {
                Some(n) => n,
                None => break,
            };
        }
        Ok(out.finish())
    }
}

/// Parses a series selector (as in `match[]`) into matchers.
pub fn selector_matchers(s: &str) -> Result<Vec<Matcher>, QueryError> {
    let e = limits::parse(s).map_err(|e| {
        // Prometheus' API words the empty selector its own way.
        let e = e.to_string().replace(
            "vector selector must contain at least one non-empty matcher",
            "match[] must contain at least one non-empty matcher",
        );
        QueryError::BadData(format!("invalid parameter \"match[]\": {e}"))
    })?;
    match e {
        Expr::VectorSelector(vs) => eval::matchers(&vs),
        _ => Err(QueryError::BadData(format!(
            "invalid parameter \"match[]\": {s:?} is not a series selector"
        ))),
    }
}

/// The matchers of every series selector in a query (what `/api/v1/query_exemplars` and
/// Prometheus' exemplar API look up), in the order they appear.
pub fn query_selectors(q: &str) -> Result<Vec<Vec<Matcher>>, QueryError> {
    let e = Engine::parse(q)?;
    let mut out = Vec::new();
    let mut stack = vec![&e];
    while let Some(x) = stack.pop() {
        match x {
            Expr::VectorSelector(vs) => out.push(eval::matchers(vs)?),
            Expr::MatrixSelector(ms) => out.push(eval::matchers(&ms.vs)?),
            other => {
                let mut c = limits::children(other);
                c.reverse();
                stack.extend(c);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::storage::memory::MemStorage;
    use crate::metrics::storage::{AppendData, AppendRequest};
    use telltale_common::model::{STALE_NAN_BITS, SeriesSamples};

    /// An engine over the in-memory storage holding `series`. (The second element stands
    /// where a data directory would be kept alive.)
    async fn engine(series: Vec<SeriesSamples>) -> (Engine, ()) {
        let store = MemStorage::new();
        store.append_now(AppendRequest {
            origin: None,
            data: AppendData::Series(series),
        });
        (
            Engine::new(Arc::new(store), Duration::from_secs(300), 1_000_000),
            (),
        )
    }

    fn ss(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> SeriesSamples {
        SeriesSamples {
            labels: Labels::from_pairs(labels.iter().copied()),
            samples: samples.iter().map(|&(t, v)| Sample(t, v)).collect(),
        }
    }

    #[tokio::test]
    async fn selectors_respect_lookback_staleness_offset_and_matchers() {
        let stale = f64::from_bits(STALE_NAN_BITS);
        let (e, _d) = engine(vec![
            ss(
                &[("__name__", "m"), ("job", "a")],
                &[(0, 1.0), (60_000, 2.0)],
            ),
            ss(
                &[("__name__", "m"), ("job", "b")],
                &[(0, 5.0), (30_000, stale)],
            ),
        ])
        .await;
        let v = |q: &str, t: i64| match e.instant(q, t).unwrap() {
            Value::Vector(v) => v
                .into_iter()
                .map(|(l, s)| (l.get("job").unwrap_or("").to_string(), s.1))
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(v("m", 10_000).len(), 2);
        assert_eq!(v("m", 40_000), vec![("a".into(), 1.0)]);
        assert_eq!(v("m{job=~\"a|b\"}", 70_000), vec![("a".into(), 2.0)]);
        assert_eq!(v("m{job!=\"a\"}", 70_000), vec![]);
        assert_eq!(v("m", 360_001), vec![]);
        assert_eq!(v("m offset 1m", 120_000), vec![("a".into(), 2.0)]);
        assert_eq!(v("m @ 10", 999_999).len(), 2);
        // Range windows are [t - range, t] (closed on the left, as in Prometheus 2.x); stale
        // markers are not samples.
        match e.instant("m[1m]", 60_000).unwrap() {
            Value::Matrix(mut m) => {
                m.sort_by(|x, y| x.labels.cmp(&y.labels));
                assert_eq!(m.len(), 2);
                assert_eq!(m[0].samples, vec![Sample(0, 1.0), Sample(60_000, 2.0)]);
                assert_eq!(
                    m[1].samples,
                    vec![Sample(0, 5.0)],
                    "the stale marker is dropped"
                );
            }
            other => panic!("{other:?}"),
        }
        let r = e.range("m{job=\"a\"}", 0, 120_000, 30_000).unwrap();
        let got: Vec<_> = r[0].samples.iter().map(|s| (s.0, s.1)).collect();
        assert_eq!(
            got,
            vec![
                (0, 1.0),
                (30_000, 1.0),
                (60_000, 2.0),
                (90_000, 2.0),
                (120_000, 2.0)
            ]
        );
    }

    /// A gauge every 15 s for 4 hours: a value that moves (the step's index squared, mod 97).
    async fn four_hours() -> (Engine, ()) {
        let samples: Vec<(i64, f64)> = (0..=960)
            .map(|k| (k * 15_000, ((k * k) % 97) as f64))
            .collect();
        engine(vec![ss(&[("__name__", "m"), ("job", "a")], &samples)]).await
    }

    fn one_value(v: Value) -> Option<f64> {
        match v {
            Value::Vector(v) => v.first().map(|x| x.1.1),
            Value::Scalar(s) => Some(s.1),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn selectors_are_read_wherever_a_subquery_moves_them() {
        let (e, _d) = four_hours().await;
        let h = 3_600_000;
        let at = |q: &str, t: i64| one_value(e.instant(q, t).unwrap());
        // `@` on a subquery pins its inner steps, before or after the query's own time: the
        // inner selector must be read there (it was read around the query's time only).
        let pinned = "max_over_time(m[10m:1m] @ 9000)";
        let want = at(pinned, 9_000_000);
        assert!(want.is_some());
        for t in [0, h, 2 * h + 1234, 4 * h] {
            assert_eq!(at(pinned, t), want, "{pinned} at {t}");
        }
        // A negative offset on a subquery reads after the query's time.
        assert_eq!(
            at("min_over_time(m[5m:30s] offset -1h)", h),
            at("min_over_time(m[5m:30s])", 2 * h)
        );
        // Inside a subquery whose inner steps fall on rollup boundaries (a range query at a
        // 5-minute step may read rollups): every step as the instant query answers it.
        for q in [
            "max_over_time(avg_over_time(m[5m])[1h:5m])",
            "sum_over_time(max_over_time(m[10m])[30m:5m] offset -30m)",
        ] {
            let r = e.range(q, 2 * h, 3 * h, 300_000).unwrap();
            assert_eq!(r.len(), 1, "{q}");
            assert_eq!(r[0].samples.len(), 13, "{q}");
            for p in &r[0].samples {
                // Rollups add bucket sums: alike to the last bits, not in them.
                let want = at(q, p.0).unwrap_or(f64::NAN);
                assert!(
                    (p.1 - want).abs() <= 1e-9 * want.abs(),
                    "{q} at {}: {} vs {want}",
                    p.0,
                    p.1
                );
            }
        }
    }

    #[tokio::test]
    async fn an_at_range_argument_slides_only_where_prometheus_2_42_slides_it() {
        let (e, _d) = four_hours().await;
        let at = |q: &str, t: i64| one_value(e.instant(q, t).unwrap());
        let (s, step) = (3_600_000, 60_000);
        // Step-invariant calls read the window at `@` at every step.
        for q in [
            "quantile_over_time(0.5, m[5m] @ 9000)",
            "holt_winters(m[5m] @ 9000, 0.5, 0.5)",
        ] {
            let r = e.range(q, s, s + 10 * step, step).unwrap();
            let want = at(q, s);
            assert!(r[0].samples.iter().all(|p| Some(p.1) == want), "{q}: {r:?}");
        }
        // The others (Prometheus 2.42's answers, measured): at step k the window still ends at
        // `@` but starts k steps later — an instant query over a range k steps shorter — and
        // is empty once k steps pass the range.
        for (q, short) in [
            (
                "predict_linear(m[5m] @ 9000, 60)",
                "predict_linear(m[{r}s] @ 9000, 60)",
            ),
            (
                "quantile_over_time(scalar(m), m[5m] @ 9000)",
                "quantile_over_time(scalar(m), m[{r}s] @ 9000)",
            ),
        ] {
            let r = e.range(q, s, s + 10 * step, step).unwrap();
            let got: Vec<(i64, f64)> = r[0].samples.iter().map(|p| (p.0, p.1)).collect();
            let want: Vec<(i64, f64)> = (0..5)
                .filter_map(|k| {
                    let shorter = short.replace("{r}", &(300 - 60 * k).to_string());
                    let t = s + k * step;
                    at(&shorter, t).map(|v| (t, v))
                })
                .collect();
            // Step 5's window is the one sample at `@`; later ones are empty.
            assert!(
                got.len() <= 6 && got.iter().all(|p| p.0 <= s + 5 * step),
                "{q}: {got:?}"
            );
            assert_eq!(got[..5], want[..5], "{q}");
        }
    }

    #[tokio::test]
    async fn an_at_selector_in_an_aggregation_parameter_slides_as_in_prometheus_2_42() {
        let (e, _d) = four_hours().await;
        let (s, step) = (3_600_000, 60_000);
        // The parameter's selector keeps its value while the slide stays within the lookback
        // (5 minutes), then has none: `scalar` is NaN and `topk` refuses it (measured on 2.42).
        let q = "topk(scalar(m @ 9000), m)";
        assert!(e.range(q, s, s + 5 * step, step).is_ok());
        let err = e.range(q, s, s + 10 * step, step).expect_err(q);
        assert!(err.to_string().contains("NaN"), "{err}");
        // An instant query, and a parameter of an aggregation over a step-invariant
        // expression (taken at the first step), never slide.
        assert!(e.instant(q, s + 10 * step).is_ok());
        assert!(
            e.range("topk(scalar(m @ 9000), m @ 9000)", s, s + 10 * step, step)
                .is_ok()
        );
        // A range argument in a parameter slides too: `rate` over a minute has two samples
        // left at the first step and one a minute later (no rate: NaN, refused).
        let q = "topk(scalar(sum(rate(m[1m] @ 9000))), m)";
        assert!(e.range(q, s, s, step).is_ok());
        assert!(e.range(q, s, s + step, step).is_err());
    }

    #[tokio::test]
    async fn functions_refuse_results_with_equal_label_sets() {
        let (e, _d) = counters().await;
        let t = 600_000;
        // Two series that differ only in their name, once the name is dropped.
        let dup = e.instant(
            "abs(label_replace(reqs_total{instance=\"a\",job=\"api\"}, \"instance\", \"\", \"instance\", \".*\") or on(__name__) limit{job=\"api\"})",
            t,
        );
        assert!(dup.is_err(), "{dup:?}");
        // label_replace making two series equal: the unchanged one and the rewritten one.
        let q = "sort(label_replace(reqs_total, \"instance\", \"a\", \"instance\", \"b\"))";
        assert!(matches!(e.instant(q, t), Err(QueryError::Execution(_))));
        // Still fine when they stay distinct, over every step of a range query.
        let ok = e.range("abs(reqs_total)", 0, t, 60_000).unwrap();
        assert_eq!(ok.len(), 4);
    }

    #[tokio::test]
    async fn a_query_past_its_deadline_times_out() {
        let (e, _d) = counters().await;
        let e = e.with_timeout(Duration::ZERO);
        assert!(matches!(
            e.instant("sum(rate(reqs_total[1m]))", 600_000),
            Err(QueryError::Timeout(_))
        ));
    }

    #[tokio::test]
    async fn invalid_queries_are_bad_data() {
        let (e, _d) = engine(vec![]).await;
        assert!(matches!(e.instant("m{", 0), Err(QueryError::BadData(_))));
        assert!(matches!(
            e.range("m[5m]", 0, 10, 1),
            Err(QueryError::BadData(_))
        ));
        assert!(matches!(e.instant("1 > 2", 0), Err(QueryError::BadData(_))));
    }

    fn vec_of(v: Value) -> Vec<(String, f64)> {
        match v {
            Value::Vector(v) => {
                let mut out: Vec<_> = v
                    .into_iter()
                    .map(|(l, s)| {
                        let key = l
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(",");
                        // Rounded: the assertions below compare with exact decimal values.
                        (key, (s.1 * 1e9).round() / 1e9)
                    })
                    .collect();
                out.sort_by(|a, b| a.0.cmp(&b.0));
                out
            }
            Value::Scalar(s) => vec![(String::new(), s.1)],
            other => panic!("{other:?}"),
        }
    }

    /// A counter per (job, instance) growing by 1/s, 2/s, 3/s, 4/s, sampled every 15 s for 10 min.
    async fn counters() -> (Engine, ()) {
        let mut series = Vec::new();
        for (i, (job, inst)) in [("api", "a"), ("api", "b"), ("db", "a"), ("db", "b")]
            .iter()
            .enumerate()
        {
            let samples: Vec<(i64, f64)> = (0..=40)
                .map(|k| (k * 15_000, (k * 15) as f64 * (i + 1) as f64))
                .collect();
            series.push(ss(
                &[("__name__", "reqs_total"), ("job", job), ("instance", inst)],
                &samples,
            ));
        }
        series.push(ss(
            &[("__name__", "limit"), ("job", "api")],
            &[(0, 10.0), (590_000, 10.0)],
        ));
        series.push(ss(
            &[("__name__", "limit"), ("job", "db")],
            &[(0, 100.0), (590_000, 100.0)],
        ));
        engine(series).await
    }

    #[tokio::test]
    async fn rate_and_aggregations() {
        let (e, _d) = counters().await;
        let t = 600_000;
        assert_eq!(
            vec_of(e.instant("sum by (job) (rate(reqs_total[1m]))", t).unwrap()),
            vec![("job=api".into(), 3.0), ("job=db".into(), 7.0)]
        );
        assert_eq!(
            vec_of(e.instant("count(reqs_total)", t).unwrap()),
            vec![(String::new(), 4.0)]
        );
        assert_eq!(
            vec_of(e.instant("max without (instance) (reqs_total)", t).unwrap()),
            vec![("job=api".into(), 1200.0), ("job=db".into(), 2400.0)]
        );
        let top = vec_of(e.instant("topk(1, reqs_total)", t).unwrap());
        assert_eq!(
            top,
            vec![("__name__=reqs_total,instance=b,job=db".into(), 2400.0)]
        );
        assert_eq!(
            vec_of(
                e.instant("increase(reqs_total{job=\"api\",instance=\"a\"}[5m])", t)
                    .unwrap()
            )[0]
            .1,
            300.0
        );
        assert_eq!(
            vec_of(e.instant("avg(irate(reqs_total[1m]))", t).unwrap()),
            vec![(String::new(), 2.5)]
        );
        let q = vec_of(e.instant("quantile(0.5, reqs_total)", t).unwrap());
        assert_eq!(q, vec![(String::new(), 1500.0)]);
    }

    #[tokio::test]
    async fn binary_operators_and_matching() {
        let (e, _d) = counters().await;
        let t = 600_000;
        assert_eq!(
            vec_of(e.instant("2 * 3 + 1", t).unwrap()),
            vec![(String::new(), 7.0)]
        );
        assert_eq!(
            vec_of(e.instant("reqs_total{instance=\"a\"} > 1000", t).unwrap()),
            vec![("__name__=reqs_total,instance=a,job=db".into(), 1800.0)]
        );
        assert_eq!(
            vec_of(
                e.instant("reqs_total{instance=\"a\"} > bool 1000", t)
                    .unwrap()
            ),
            vec![
                ("instance=a,job=api".into(), 0.0),
                ("instance=a,job=db".into(), 1.0)
            ]
        );
        // many-to-one with group_left: each instance divided by its job's limit.
        let r = vec_of(
            e.instant("reqs_total / on (job) group_left limit", t)
                .unwrap(),
        );
        assert_eq!(r.len(), 4);
        assert_eq!(r[0], ("instance=a,job=api".into(), 60.0));
        // one-to-one is an error when one side matches several series.
        assert!(matches!(
            e.instant("limit / on (job) reqs_total", t),
            Err(QueryError::Execution(_))
        ));
        assert_eq!(
            vec_of(
                e.instant("reqs_total and on (job) limit{job=\"db\"}", t)
                    .unwrap()
            )
            .len(),
            2
        );
        assert_eq!(
            vec_of(
                e.instant("reqs_total unless on (job) limit{job=\"db\"}", t)
                    .unwrap()
            )
            .len(),
            2
        );
    }

    #[tokio::test]
    async fn functions_and_subqueries() {
        let (e, _d) = counters().await;
        let t = 600_000;
        assert_eq!(
            vec_of(e.instant("absent(nope{job=\"x\"})", t).unwrap()),
            vec![("job=x".into(), 1.0)]
        );
        assert!(vec_of(e.instant("absent(reqs_total)", t).unwrap()).is_empty());
        assert_eq!(
            vec_of(e.instant("scalar(limit{job=\"api\"})", t).unwrap()),
            vec![(String::new(), 10.0)]
        );
        assert_eq!(
            vec_of(e.instant("time()", t).unwrap()),
            vec![(String::new(), 600.0)]
        );
        let r = vec_of(
            e.instant(
                "label_replace(limit, \"team\", \"t-$1\", \"job\", \"(.*)\")",
                t,
            )
            .unwrap(),
        );
        assert_eq!(r[0].0, "__name__=limit,job=api,team=t-api");
        assert_eq!(
            vec_of(
                e.instant(
                    "max_over_time(reqs_total{job=\"api\",instance=\"a\"}[1m])",
                    t
                )
                .unwrap()
            )[0]
            .1,
            600.0
        );
        let sub = vec_of(
            e.instant(
                "max_over_time(rate(reqs_total{job=\"api\",instance=\"a\"}[1m])[5m:1m])",
                t,
            )
            .unwrap(),
        );
        assert!((sub[0].1 - 1.0).abs() < 1e-9, "{sub:?}");
        assert_eq!(
            vec_of(e.instant("clamp_max(limit, 50)", t).unwrap()),
            vec![("job=api".into(), 10.0), ("job=db".into(), 50.0)]
        );
        let r = e
            .range("sum(rate(reqs_total[1m]))", 300_000, 600_000, 60_000)
            .unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].samples.len(), 6);
        assert!(
            r[0].samples.iter().all(|s| (s.1 - 10.0).abs() < 1e-9),
            "{:?}",
            r[0].samples
        );
    }

    /// The largest shapes the limits let through parse, evaluate and drop on a 2 MiB stack
    /// (tokio's thread size), and the shapes that aborted the process are refused.
    #[test]
    fn deep_and_long_expressions_are_bounded_not_a_crash() {
        let (e, _d) = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(engine(vec![ss(&[("__name__", "up")], &[(0, 1.0)])]));
        let e = e.with_stack_budget(SERVER_STACK_BUDGET);
        let run = move || {
            let ok = |q: String| {
                let v = e
                    .instant(&q, 0)
                    .map_err(|err| format!("{q:.60}: {err}"))
                    .unwrap();
                drop(v);
            };
            let bad = |q: String, what: &str| match e.instant(&q, 0) {
                Err(QueryError::BadData(m)) => assert!(m.contains(what), "{m}"),
                other => panic!("{q:.60}: {other:?}"),
            };
            // Depth 100 and 1,000 terms answer (the floor)...
            ok(format!("{}up{}", "(".repeat(100), ")".repeat(100)));
            ok(vec!["1"; 1000].join("+"));
            // ... and so do the largest shapes the limits accept.
            let n = limits::MAX_NESTING - 1;
            ok(format!("{}up{}", "abs(".repeat(n), ")".repeat(n)));
            ok(format!("{}up{}", "sum(".repeat(n), ")".repeat(n)));
            ok(format!("{}1{}", "(".repeat(n), ")".repeat(n)));
            ok(vec!["up"; limits::MAX_OPERATORS + 1].join(" * "));
            ok(format!("{}up{}", "-(".repeat(n / 2), ")".repeat(n / 2)));
            ok(format!(
                "{}{}{}",
                "(".repeat(n / 2),
                vec!["1"; limits::MAX_OPERATORS - 10].join("-"),
                ")".repeat(n / 2)
            ));
            // What crashed the aggregator: a clear bad_data instead.
            bad(vec!["1"; 3000].join("+"), "operators");
            bad(
                format!("{}1{}", "(".repeat(40_000), ")".repeat(40_000)),
                "nest",
            );
            bad("(".repeat(40_000), "nest");
            assert!(selector_matchers(&format!("{}up", "{".repeat(40_000))).is_err());
        };
        std::thread::Builder::new()
            .stack_size(SERVER_THREAD_STACK)
            .spawn(run)
            .unwrap()
            .join()
            .expect("evaluated within the server's stack");
    }

    /// On an ordinary 2 MiB thread, the largest accepted shapes parse and drop, and evaluation
    /// past the default budget fails the query instead of the process.
    #[test]
    fn a_small_stack_fails_the_query_not_the_process() {
        let (e, _d) = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(engine(vec![ss(&[("__name__", "up")], &[(0, 1.0)])]));
        let run = move || {
            let n = limits::MAX_NESTING;
            // Parentheses are cheap: 256 levels fit in the default budget.
            assert!(
                e.instant(&format!("{}1{}", "(".repeat(n), ")".repeat(n)), 0)
                    .is_ok()
            );
            for q in [
                format!("{}up{}", "abs(".repeat(n), ")".repeat(n)),
                vec!["up"; limits::MAX_OPERATORS].join(" * "),
            ] {
                let expr = limits::parse(&q).expect("within the limits");
                drop(expr);
                match e.instant(&q, 0) {
                    Err(QueryError::Execution(m)) => assert!(m.contains("too deeply"), "{m}"),
                    other => panic!("{q:.40}: {other:?}"),
                }
            }
        };
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(run)
            .unwrap()
            .join()
            .expect("no stack overflow");
    }

    /// Subquery steps, range results and loaded samples all count against one limit, checked
    /// before the subquery allocates: the bomb fails at once with the limit's name.
    #[tokio::test]
    async fn every_point_a_query_holds_counts_against_max_samples() {
        let (e, _d) = engine(vec![ss(&[("__name__", "up")], &[(0, 1.0)])]).await;
        let e = Engine::new(e.storage.clone(), Duration::from_secs(300), 10_000);
        let started = std::time::Instant::now();
        for q in [
            "sum_over_time(vector(1)[100y:1ms])",
            "sum_over_time(vector(1)[10000d:1ms])",
            "count_over_time(up[1d:1s])",
        ] {
            match e.instant(q, 86_400_000) {
                Err(QueryError::Execution(m)) => {
                    assert!(m.contains("query_max_samples = 10000"), "{q}: {m}")
                }
                other => panic!("{q}: {other:?}"),
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "refused before working"
        );
        // Under the limit it answers.
        assert!(e.instant("sum_over_time(vector(1)[1h:1s])", 0).is_ok());
        // A range query's result counts too: 5,001 steps of one series is within 10,000,
        // 3 series (1 + 2 from `or`) over 5,001 steps is not.
        assert!(e.range("vector(1)", 0, 5_000_000, 1_000).is_ok());
        let q = "vector(1) or label_replace(vector(2), \"a\", \"b\", \"\", \"\") or label_replace(vector(3), \"a\", \"c\", \"\", \"\")";
        assert!(matches!(
            e.range(q, 0, 5_000_000, 1_000),
            Err(QueryError::Execution(_))
        ));
        // Times at the ends of i64 neither overflow nor loop for ever.
        assert!(e.range("vector(1)", i64::MAX - 10, i64::MAX, 3).is_ok());
        assert!(e.instant("up @ 1e18", 0).is_ok());
        assert!(e.instant("rate(up[5m] @ -1e18)", 0).is_ok());
        assert!(
            e.instant("sum_over_time(vector(1)[1m:1s] @ 1e18)", 0)
                .is_ok()
        );
    }

    /// `rate`, `increase` and `delta` over windows with counter resets, jittered samples and
    /// offsets equal their definition (Prometheus' extrapolation to
    /// `[t - offset - range, t - offset]`) on every window; the fast path (prefix sums of the
    /// resets) included. With an offset, the extrapolation used to be anchored at `t`, which
    /// gave negative increases.
    #[tokio::test]
    async fn rate_family_equals_its_definition_with_resets_and_offsets() {
        let mut samples = Vec::new();
        let (mut v, mut rng) = (0.0f64, 0x9E3779B97F4A7C15u64);
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for i in 0..120i64 {
            let jitter = (next() % 51) as i64 - 25;
            v = if next() % 9 == 0 {
                (next() % 7) as f64
            } else {
                v + (next() % 100) as f64 / 3.0
            };
            samples.push((i * 15_000 + jitter, v));
        }
        let (e, _d) = engine(vec![ss(&[("__name__", "x")], &samples)]).await;
        let pts: Vec<Sample> = samples.iter().map(|&(t, v)| Sample(t, v)).collect();
        let mut checked = 0;
        for t in (400_000..1_700_000).step_by(37_000) {
            for off in [0i64, 60_000, 300_000] {
                for range in [15_000i64, 60_000, 120_000, 300_000] {
                    let end = t - off;
                    let window: Vec<Sample> = pts
                        .iter()
                        .copied()
                        .filter(|s| s.0 >= end - range && s.0 <= end)
                        .collect();
                    let o = if off == 0 {
                        String::new()
                    } else {
                        format!(" offset {}s", off / 1000)
                    };
                    for (func, counter, rate) in [
                        ("rate", true, true),
                        ("increase", true, false),
                        ("delta", false, false),
                    ] {
                        let q = format!("{func}(x[{}s]{o})", range / 1000);
                        let got = match e.instant(&q, t).unwrap() {
                            Value::Vector(v) => v.first().map(|x| x.1.1),
                            other => panic!("{other:?}"),
                        };
                        let want = functions::extrapolated(&window, end, range, counter, rate);
                        match (got, want) {
                            (None, None) => {}
                            (Some(g), Some(w)) => {
                                assert!(
                                    (g - w).abs() <= 1e-9 * w.abs().max(1.0),
                                    "{q} at {t}: {g} != {w}"
                                );
                                if counter {
                                    assert!(g >= 0.0, "{q} at {t}: negative {g}");
                                }
                                checked += 1;
                            }
                            other => panic!("{q} at {t}: {other:?}"),
                        }
                    }
                }
            }
        }
        assert!(checked > 500, "{checked}");
    }

    /// Errors Prometheus raises: an invalid `count_values` label, duplicate label sets after
    /// an operation dropped the name, a `k` that is not an int64; and `holt_winters` exists,
    /// with Prometheus' algorithm and its argument checks.
    #[tokio::test]
    async fn prometheus_errors_and_holt_winters() {
        let (e, _d) = engine(vec![
            ss(
                &[("__name__", "a"), ("job", "demo")],
                &[(0, 1.0), (15_000, 3.0), (30_000, 4.0), (45_000, 8.0)],
            ),
            ss(&[("__name__", "b"), ("job", "demo")], &[(0, 2.0)]),
        ])
        .await;
        let exec_err = |q: &str, want: &str| match e.instant(q, 45_000) {
            Err(QueryError::Execution(m)) => assert!(m.contains(want), "{q}: {m}"),
            other => panic!("{q}: {other:?}"),
        };
        exec_err(
            "count_values(\"bad-label\", a)",
            "invalid label name \"bad-label\"",
        );
        exec_err("-{job=\"demo\"}", "same labelset");
        exec_err("{job=\"demo\"} - 100", "same labelset");
        // A subquery without a step in its window (10s back from 45s, steps at multiples of
        // 1m) still evaluates a step-invariant part once, as Prometheus does, and fails with
        // it; without the `@` nothing is evaluated and the answer is empty.
        exec_err(
            "count_over_time((a + (-{job=\"demo\"} @ 45))[10s:1m])",
            "same labelset",
        );
        match e.instant("count_over_time((a + (-{job=\"demo\"}))[10s:1m])", 45_000) {
            Ok(Value::Vector(v)) => assert!(v.is_empty(), "{v:?}"),
            other => panic!("{other:?}"),
        }
        exec_err(
            "topk(scalar(vector(NaN)), a)",
            "Scalar value NaN overflows int64",
        );
        exec_err("bottomk(1e300, a)", "Scalar value 1e+300 overflows int64");
        // The value as Go's %v writes it, as Prometheus 2.42 answered each of these.
        for (k, shown) in [
            ("1e19", "1e+19"),
            ("-1e19", "-1e+19"),
            ("12345678901234567890", "1.2345678901234567e+19"),
            ("9.3e18", "9.3e+18"),
            ("123456789012345678901234", "1.2345678901234569e+23"),
            ("Inf", "+Inf"),
        ] {
            exec_err(
                &format!("topk({k}, a)"),
                &format!("Scalar value {shown} overflows int64"),
            );
        }
        // Where the name stays, or the sets differ, it answers.
        assert!(e.instant("{job=\"demo\"} > 0", 45_000).is_ok());
        assert!(e.instant("-a", 45_000).is_ok());
        assert!(e.instant("count_values(\"v\", a)", 45_000).is_ok());
        // holt_winters: s = 0.5·x + 0.5·(s + b), b = 0.5·(s - s_prev) + 0.5·b, from s = 1,
        // b = 2: s1 = 0.5·3 + 0.5·3 = 3; b = 0.5·2 + 0.5·2 = 2, s2 = 2 + 2.5 = 4.5;
        // b = 0.5·1.5 + 0.5·2 = 1.75, s3 = 4 + 0.5·6.25 = 7.125.
        let v = vec_of(e.instant("holt_winters(a[1m], 0.5, 0.5)", 45_000).unwrap());
        assert_eq!(v, vec![("job=demo".to_string(), 7.125)]);
        exec_err(
            "holt_winters(a[1m], 1, 0.5)",
            "invalid smoothing factor. Expected: 0 < sf < 1, got: 1.000000",
        );
        exec_err(
            "holt_winters(a[1m], 0.5, 0)",
            "invalid trend factor. Expected: 0 < tf < 1, got: 0.000000",
        );
        // Checked where a series' window is computed: with no sample in any window, bad
        // factors are no error (as in Prometheus).
        assert_eq!(
            vec_of(
                e.instant("holt_winters(nothing_here[1m], 1, 0.5)", 45_000)
                    .unwrap()
            ),
            vec![]
        );
        // Duplicates on one side of a match are no error while the other side is empty.
        let dup_right = "nothing_here + on(job) {job=\"demo\"}";
        assert_eq!(vec_of(e.instant(dup_right, 45_000).unwrap()), vec![]);
        let dup_left = "nothing_here + on(job) group_left() {job=\"demo\"}";
        assert_eq!(vec_of(e.instant(dup_left, 45_000).unwrap()), vec![]);
        exec_err("a + on(job) {job=\"demo\"}", "many-to-many");
    }

    /// A subquery whose window holds no step of its grid evaluates nothing of its own, but
    /// Prometheus still evaluates the subqueries nested in it over their ranges — so a
    /// failing function there fails the query (found by the differential fuzzer:
    /// `holt_winters` with a smoothing factor of 1 two subqueries down).
    #[tokio::test]
    async fn a_subquery_without_steps_still_runs_the_subqueries_inside_it() {
        let samples: Vec<(i64, f64)> = (0..40).map(|i| (i * 10_000, i as f64)).collect();
        let (e, _d) = engine(vec![ss(&[("__name__", "c")], &samples)]).await;
        // [125 s, 135 s] holds no multiple of 1m: the outer subquery has no step.
        let q = |sf: &str| {
            format!(
                "count_over_time((sum_over_time((holt_winters(c[1m], {sf}, 0.5))[5m:1m]))[10s:1m])"
            )
        };
        let err = e
            .instant(&q("1"), 135_000)
            .expect_err("the nested subquery runs");
        assert!(
            err.to_string().contains("invalid smoothing factor"),
            "{err}"
        );
        assert_eq!(vec_of(e.instant(&q("0.5"), 135_000).unwrap()), vec![]);
    }

    /// Six counters at 15 s with jitter and random resets, from `seed`: a gap in `i3`, `i4`
    /// starting late, a stale marker in `i2`, and `d{instance="i0"}` with the labels of
    /// `c{instance="i0"}` but the name (the two collide once the name is dropped).
    fn jittered_counters(seed: u64) -> Vec<SeriesSamples> {
        let mut rng = seed;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut series = Vec::new();
        for s in 0..6 {
            let (mut v, mut samples) = (0.0f64, Vec::new());
            for i in 0..300i64 {
                if (s == 3 && (80..100).contains(&i)) || (s == 4 && i < 150) {
                    continue;
                }
                v = if next() % 23 == 0 {
                    0.0
                } else {
                    v + (next() % 1000) as f64 / 100.0
                };
                samples.push((i * 15_000 + (next() % 51) as i64 - 25, v));
                if s == 2 && i == 120 {
                    samples.push((i * 15_000 + 7_000, f64::from_bits(STALE_NAN_BITS)));
                }
            }
            let name = if s == 5 { "d" } else { "c" };
            let inst = format!("i{}", s % 5);
            let job = if s % 5 % 2 == 0 { "a" } else { "b" };
            series.push(ss(
                &[
                    ("__name__", name),
                    ("instance", inst.as_str()),
                    ("job", job),
                ],
                &samples,
            ));
        }
        series
    }

    /// A range query computes `rate` / `increase` of a selector series by series — alone
    /// into the answer, inside expressions into a table read at each step; an instant query
    /// computes them on the spot. At every step both give the same series with the same
    /// values, bit for bit — alone, in aggregations, arithmetic, comparisons, subqueries
    /// (whose inner steps fall on and off the grid), with offsets, `@`, resets, gaps, stale
    /// markers, and names that collide once dropped (left to the step-by-step path, which
    /// fails where both series have a value).
    #[tokio::test]
    async fn tabled_rate_equals_instant_queries_inside_expressions() {
        let (e, _d) = engine(jittered_counters(0xD1B5_4A32_D192_ED03)).await;
        for q in [
            "rate(c[2m])",
            "increase(c[1m])",
            "rate(c[30s])",
            "rate(c[5m] offset 3m)",
            "increase(c[2m] @ 2000)",
            "rate(c{instance=~\"i[12]\"}[1m])",
            "rate(nothing[1m])",
            "rate({__name__=~\"c|d\"}[1m])",
            "sum by (job) (rate(c[2m]))",
            "rate(c[1m]) * 2 > 0.1",
            "increase(c[5m] offset 3m) / on(instance, job) rate(c[5m])",
            "max_over_time(rate(c[1m])[5m:30s])",
            "max_over_time(rate(c[1m])[5m:7s])",
            "topk(2, increase(c[2m] @ 2000))",
            "sum(rate({__name__=~\"c|d\"}[1m]))",
        ] {
            for step in [15_000i64, 20_000, 30_000, 60_000, 3_600_000] {
                let (start, end) = (0i64, 4_600_000i64);
                let range = e.range(q, start, end, step).map_err(|x| x.to_string());
                assert_eq!(
                    range.is_err(),
                    q.contains("c|d"),
                    "{q}: {:?}",
                    range.as_ref().err()
                );
                let mut t = start;
                while t <= end {
                    let inst = match e.instant(q, t) {
                        Ok(Value::Vector(v)) => Ok(v
                            .into_iter()
                            .map(|(l, s)| (l, s.1.to_bits()))
                            .collect::<Vec<_>>()),
                        Ok(other) => panic!("{other:?}"),
                        Err(x) => Err(x.to_string()),
                    };
                    let at_t = range.as_ref().map(|r| {
                        let mut v: Vec<_> = r
                            .iter()
                            .filter_map(|s| {
                                s.samples
                                    .iter()
                                    .find(|p| p.0 == t)
                                    .map(|p| (s.labels.clone(), p.1.to_bits()))
                            })
                            .collect();
                        v.sort();
                        v
                    });
                    match (&inst, &at_t) {
                        (Ok(i), Ok(r)) => {
                            let mut i = i.clone();
                            i.sort();
                            assert_eq!(&i, r, "{q} step {step} at {t}");
                        }
                        // A range query fails as a whole where one of its steps fails.
                        (Err(_), Err(_)) | (Ok(_), Err(_)) => {}
                        (Err(x), Ok(_)) => panic!("{q} at {t}: instant fails ({x}), range not"),
                    }
                    t += step;
                }
            }
        }
    }

    /// A range query's value at each step equals the instant query at that time: the
    /// cursors and prefix sums a range query reuses between steps change nothing.
    #[tokio::test]
    async fn range_steps_equal_instant_queries() {
        let mut series = Vec::new();
        let mut rng = 0x2545F4914F6CDD1Du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for s in 0..4 {
            let (mut v, mut samples) = (0.0f64, Vec::new());
            for i in 0..200i64 {
                if s == 3 && (80..100).contains(&i) {
                    continue; // a gap
                }
                v = if next() % 17 == 0 {
                    0.0
                } else {
                    v + (next() % 1000) as f64 / 100.0
                };
                samples.push((i * 15_000 + (next() % 51) as i64 - 25, v));
            }
            if s == 2 {
                samples.push((200 * 15_000, f64::from_bits(STALE_NAN_BITS)));
            }
            let inst = format!("i{s}");
            series.push(ss(
                &[("__name__", "c"), ("instance", inst.as_str())],
                &samples,
            ));
        }
        let (e, _d) = engine(series).await;
        for q in [
            "rate(c[2m])",
            "increase(c[1m])",
            "rate(c[30s])",
            "delta(c[2m] offset 1m)",
            "resets(c[5m])",
            "irate(c[1m])",
            "max_over_time(rate(c[1m])[2m:15s])",
            "rate(c[1m] @ 1500)",
        ] {
            for step in [15_000i64, 30_000, 60_000] {
                let (start, end) = (600_000i64, 2_900_000i64);
                let range = e.range(q, start, end, step).unwrap();
                for s in &range {
                    for p in &s.samples {
                        let inst = match e.instant(q, p.0).unwrap() {
                            Value::Vector(v) => v
                                .into_iter()
                                .find(|(l, _)| *l == s.labels)
                                .map(|(_, x)| x.1),
                            other => panic!("{other:?}"),
                        };
                        let i = inst.unwrap_or_else(|| panic!("{q} at {}: only in range", p.0));
                        assert!(
                            (i - p.1).abs() <= 1e-9 * i.abs().max(1.0)
                                || (i.is_nan() && p.1.is_nan()),
                            "{q} step {step} at {}: range {} vs instant {i}",
                            p.0,
                            p.1
                        );
                    }
                }
            }
        }
    }

    /// NaN samples rank as Prometheus ranks them: last for `topk` and `bottomk`, first in the
    /// sorted values of `quantile` and `quantile_over_time` (Go's `sort.Float64s`).
    #[tokio::test]
    async fn nan_ranks_as_in_prometheus() {
        let (e, _d) = engine(vec![
            ss(&[("__name__", "g"), ("i", "a")], &[(0, f64::NAN)]),
            ss(&[("__name__", "g"), ("i", "b")], &[(0, 1.0)]),
            ss(&[("__name__", "g"), ("i", "c")], &[(0, 2.0)]),
            ss(
                &[("__name__", "h")],
                &[(0, 3.0), (10_000, f64::NAN), (20_000, 1.0)],
            ),
        ])
        .await;
        let one = |q: &str| vec_of(e.instant(q, 20_000).unwrap());
        assert_eq!(one("topk(1, g)"), vec![("__name__=g,i=c".to_string(), 2.0)]);
        assert_eq!(
            one("bottomk(1, g)"),
            vec![("__name__=g,i=b".to_string(), 1.0)]
        );
        assert_eq!(one("quantile(0.5, g)"), vec![(String::new(), 1.0)]);
        assert!(one("quantile(0, g)")[0].1.is_nan());
        assert_eq!(
            one("quantile_over_time(0.5, h[1m])"),
            vec![(String::new(), 1.0)]
        );
        // clamp keeps NaN (Go's math.Min/Max), where Rust's min/max would drop it.
        let c = one("clamp_max(g, 50)");
        assert!(c.iter().any(|(l, v)| l == "i=a" && v.is_nan()), "{c:?}");
        assert!(one("clamp_min(g, 0)").iter().any(|(_, v)| v.is_nan()));
    }

    /// Which of equal values `topk`/`bottomk` keep, and the order of the input, follow
    /// Prometheus: series in label order (whatever order they were written in), each group's
    /// elements through Go's heap (a tie never displaces a kept element; a pop removes the
    /// root, which need not be the latest of equal ones).
    #[tokio::test]
    async fn ties_resolve_as_in_prometheus() {
        // Written in reverse label order: the engine must still see a, b, c, d.
        let (e, _d) = engine(vec![
            ss(&[("__name__", "g"), ("i", "d")], &[(0, 2.0)]),
            ss(&[("__name__", "g"), ("i", "c")], &[(0, 1.0)]),
            ss(&[("__name__", "g"), ("i", "b")], &[(0, 1.0)]),
            ss(&[("__name__", "g"), ("i", "a")], &[(0, 1.0)]),
        ])
        .await;
        let one = |q: &str| vec_of(e.instant(q, 0).unwrap());
        let names = |q: &str| one(q).into_iter().map(|x| x.0).collect::<Vec<_>>();
        // topk(2): heap [a]; b joins; c ties the root and stays out; d beats the root, so the
        // root (a, after the pop's swap) leaves: b and d remain — not a and d.
        assert_eq!(names("topk(2, g)"), ["__name__=g,i=b", "__name__=g,i=d"]);
        // k = 1 replaces in place only when strictly better: the first of the ties stays.
        assert_eq!(names("bottomk(1, g)"), ["__name__=g,i=a"]);
        assert_eq!(names("bottomk(2, g)"), ["__name__=g,i=a", "__name__=g,i=b"]);
        assert_eq!(names("topk(1, g < 2)"), ["__name__=g,i=a"]);
    }

    /// Windows add up as Prometheus adds them, with compensated (Kahan–Neumaier) sums: a
    /// naive sum of 1e16, 1, -1e16 is 0; means are incremental (no overflow).
    #[tokio::test]
    async fn sums_are_compensated_as_in_prometheus() {
        let (e, _d) = engine(vec![ss(
            &[("__name__", "x")],
            &[(0, 1e16), (10_000, 1.0), (20_000, -1e16)],
        )])
        .await;
        let one = |q: &str| vec_of(e.instant(q, 20_000).unwrap())[0].1;
        assert_eq!(one("sum_over_time(x[1m])"), 1.0);
        // The mean is incremental: two samples of 1e308 average to 1e308, not +Inf.
        match e
            .instant("avg_over_time((x * 0 + 1e308)[1m:10s])", 20_000)
            .unwrap()
        {
            Value::Vector(v) => assert_eq!(v[0].1.1, 1e308),
            other => panic!("{other:?}"),
        }
        assert_eq!(one("stdvar_over_time(vector(1)[1m:10s])"), 0.0);
        assert_eq!(
            functions::kahan_mean([f64::INFINITY, 1.0, 2.0].into_iter()),
            f64::INFINITY
        );
        assert_eq!(functions::incremental_mean(2.0, 2, 4.0), 3.0);
        // deriv from integer millisecond offsets: exact on an exact line.
        let pts: Vec<Sample> = (0..20)
            .map(|i| Sample(1_700_000_000_000 + i * 15_000, i as f64 * 3.0))
            .collect();
        let slope = functions::linear_regression(&pts, pts[0].0).map_or(f64::NAN, |r| r.0);
        assert!((slope - 0.2).abs() < 1e-15, "{slope}");
    }

    /// `timestamp()` gives a sample's own time only for a vector selector; a computed vector
    /// is stamped with the evaluation time (Prometheus' rule), so `timestamp(x offset 1m)`
    /// and `timestamp((x offset 1m) unless y)` differ.
    #[tokio::test]
    async fn timestamp_of_a_computed_vector_is_the_evaluation_time() {
        let (e, _d) = engine(vec![ss(&[("__name__", "x")], &[(0, 1.0), (5_000, 2.0)])]).await;
        let one = |q: &str| vec_of(e.instant(q, 65_000).unwrap())[0].1;
        assert_eq!(one("timestamp(x offset 1m)"), 5.0);
        assert_eq!(one("timestamp((x offset 1m))"), 5.0);
        assert_eq!(one("timestamp((x offset 1m) unless absent(x))"), 65.0);
        assert_eq!(one("timestamp(-(x offset 1m))"), 65.0);
    }

    /// A store where a new sample lands between any two reads, as an agent's does while a
    /// query runs (the value is the number of reads before it).
    struct Arriving(std::sync::atomic::AtomicUsize);

    impl crate::metrics::storage::Querier for Arriving {
        fn select(
            &self,
            _: &[crate::metrics::storage::Matcher],
            _: i64,
            _: i64,
            _: usize,
        ) -> Result<Vec<crate::metrics::storage::SeriesData>, crate::metrics::storage::StorageError>
        {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(vec![crate::metrics::storage::SeriesData {
                labels: Labels::from_pairs([("__name__", "x")]),
                samples: vec![Sample(0, n as f64)],
            }])
        }

        fn series(&self, _: &[crate::metrics::storage::Matcher], _: i64, _: i64) -> Vec<Labels> {
            Vec::new()
        }
    }

    /// One query sees one state of a selector it names several times, however samples
    /// arrive meanwhile (found by the live peer detector: `x or label_replace(x * 0.99, …)`
    /// once compared a host with its own older value), and reads it once.
    #[test]
    fn a_selector_named_twice_is_one_read() {
        let store = Arc::new(Arriving(std::sync::atomic::AtomicUsize::new(0)));
        let e = Engine::new(store.clone(), Duration::from_secs(300), 1_000_000);
        assert_eq!(vec_of(e.instant("x - x", 0).unwrap())[0].1, 0.0);
        let v = vec_of(
            e.instant("x or label_replace(x * 2, \"i\", \"b\", \"\", \"\")", 0)
                .unwrap(),
        );
        assert_eq!(v.iter().map(|x| x.1).collect::<Vec<_>>(), vec![1.0, 2.0]);
        assert_eq!(
            store.0.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "one read a query"
        );
        // Different selectors are different reads.
        assert_eq!(
            vec_of(e.instant("x - x offset 1s", 1000).unwrap())[0]
                .1
                .abs(),
            1.0
        );
    }

    /// With both `@` and `offset`, `timestamp()` reads the sample at the `@` time among those
    /// of the offset's window, as Prometheus 2.42 does (probed there: 122 of 122 answers
    /// alike): a negative offset is not a look into the future, a positive one shortens
    /// the lookback.
    #[tokio::test]
    async fn timestamp_with_at_and_offset_as_prometheus_reads_it() {
        let pts: Vec<(i64, f64)> = (0..20).map(|i| (i * 60_000, i as f64)).collect();
        let (e, _d) = engine(vec![ss(&[("__name__", "x")], &pts)]).await;
        let ts = |q: &str| vec_of(e.instant(q, 600_000).unwrap()).first().map(|x| x.1);
        // Without `@`, an offset moves the lookup either way.
        assert_eq!(ts("timestamp(x offset -2m)"), Some(720.0));
        assert_eq!(ts("timestamp(x offset 2m)"), Some(480.0));
        // With it, a negative offset reads at the `@` time, in a window 2m shorter.
        assert_eq!(ts("timestamp(x @ 630 offset -2m)"), Some(600.0));
        assert_eq!(ts("timestamp((x @ 630 offset -2m))"), Some(600.0));
        assert_eq!(ts("timestamp(x @ 630 offset -4m)"), Some(600.0));
        assert_eq!(ts("timestamp(x @ 645 offset -4m30s)"), None);
        assert_eq!(ts("timestamp(x @ 630 offset -6m)"), None);
        // A positive one reads at @ − offset, within the lookback of `@`.
        assert_eq!(ts("timestamp(x @ 630 offset 2m)"), Some(480.0));
        assert_eq!(ts("timestamp(x @ 630 offset 4m30s)"), Some(360.0));
        assert_eq!(ts("timestamp(x @ 630 offset 5m30s)"), None);
        // The value itself is read with the offset, as everywhere else.
        assert_eq!(
            vec_of(e.instant("x @ 630 offset -2m", 0).unwrap())[0].1,
            12.0
        );
    }

    /// `count_values` counts per group and value in the order values are first seen, and
    /// refuses a bad label name even with nothing to count.
    #[tokio::test]
    async fn count_values_as_in_prometheus() {
        let (e, _d) = engine(vec![
            ss(&[("__name__", "g"), ("i", "a")], &[(0, 2.0)]),
            ss(&[("__name__", "g"), ("i", "b")], &[(0, 1.0)]),
            ss(&[("__name__", "g"), ("i", "c")], &[(0, 2.0)]),
        ])
        .await;
        let got = vec_of(e.instant("count_values(\"v\", g)", 0).unwrap());
        assert_eq!(
            got,
            vec![("v=1".to_string(), 1.0), ("v=2".to_string(), 2.0)]
        );
        assert!(e.instant("count_values(\"bad-name\", nothing)", 0).is_err());
    }

    /// One-to-one matching refuses two left-hand elements for one match group only among
    /// the elements a comparison keeps (Prometheus filters first).
    #[tokio::test]
    async fn matching_conflicts_count_only_what_a_filter_keeps() {
        let (e, _d) = engine(vec![
            ss(&[("__name__", "a"), ("i", "1"), ("m", "x")], &[(0, 1.0)]),
            ss(&[("__name__", "a"), ("i", "1"), ("m", "y")], &[(0, 5.0)]),
            ss(&[("__name__", "b"), ("i", "1")], &[(0, 3.0)]),
        ])
        .await;
        assert_eq!(
            vec_of(e.instant("a > ignoring(m) b", 0).unwrap()),
            vec![("__name__=a,i=1".to_string(), 5.0)]
        );
        assert!(e.instant("a + ignoring(m) b", 0).is_err());
        assert!(e.instant("a > bool ignoring(m) b", 0).is_err());
    }

    /// `atan2` keeps the metric name (Prometheus leaves it out of the name-dropping
    /// operators), and a `k` that is not an int64 is refused even when nothing is ranked.
    #[tokio::test]
    async fn atan2_names_and_k_checked_on_empty_input() {
        let (e, _d) = engine(vec![ss(&[("__name__", "a"), ("i", "1")], &[(0, 1.0)])]).await;
        assert_eq!(
            vec_of(e.instant("a atan2 0", 0).unwrap())[0].0,
            "__name__=a,i=1"
        );
        assert_eq!(vec_of(e.instant("a + 0", 0).unwrap())[0].0, "i=1");
        assert!(e.instant("topk(scalar(nothing), nothing)", 0).is_err());
        assert!(e.instant("topk(0, nothing)", 0).is_ok());
    }

    /// A unary minus or a range-vector function whose result, over all steps of a range
    /// query, holds one label set from two series (they differed only by name) is an error,
    /// as in Prometheus — even when the two never meet at one step.
    #[tokio::test]
    async fn same_labelset_is_checked_across_steps() {
        let (e, _d) = engine(vec![
            ss(&[("__name__", "a"), ("i", "1")], &[(0, 1.0), (15_000, 2.0)]),
            ss(
                &[("__name__", "b"), ("i", "1")],
                &[(600_000, 1.0), (615_000, 2.0)],
            ),
        ])
        .await;
        let q = |s: &str, start: i64, end: i64| e.range(s, start, end, 15_000);
        // Apart in time: each step alone is fine, the whole range is not.
        assert!(q("-{__name__=~\"a|b\"}", 0, 0).is_ok());
        assert!(q("-{__name__=~\"a|b\"}", 0, 615_000).is_err());
        assert!(q("rate({__name__=~\"a|b\"}[1m])", 15_000, 615_000).is_err());
        assert!(q("rate({__name__=~\"a|b\"}[1m])", 15_000, 30_000).is_ok());
        assert!(q("last_over_time({__name__=~\"a|b\"}[1m])", 15_000, 615_000).is_ok());
    }

    /// In an aggregation's parameter `@ start()` and `@ end()` are ignored, as Prometheus
    /// 2.42 does (it resolves them in a pass that skips parameters); `@ <time>` still holds.
    #[tokio::test]
    async fn start_and_end_are_ignored_in_parameters() {
        let (e, _d) = engine(vec![
            ss(&[("__name__", "k")], &[(0, 1.0), (100_000, 2.0)]),
            ss(
                &[("__name__", "y"), ("i", "a")],
                &[(0, 1.0), (100_000, 1.0)],
            ),
            ss(
                &[("__name__", "y"), ("i", "b")],
                &[(0, 2.0), (100_000, 2.0)],
            ),
            ss(
                &[("__name__", "y"), ("i", "c")],
                &[(0, 3.0), (100_000, 3.0)],
            ),
        ])
        .await;
        let at_first = |q: &str| {
            let m = e.range(q, 0, 100_000, 100_000).unwrap();
            m.iter()
                .filter(|s| s.samples.iter().any(|x| x.0 == 0))
                .count()
        };
        assert_eq!(at_first("topk(scalar(k @ end()), y)"), 1);
        assert_eq!(at_first("topk(scalar(k @ 100), y)"), 2);
        // Outside a parameter, end() holds: at the first step k @ end() is 2.
        assert_eq!(at_first("y > scalar(k @ end())"), 1);
    }

    #[tokio::test]
    async fn a_subquery_over_a_step_invariant_vector_keeps_its_order() {
        // The label order ranks `a` first; topk's best-first order ranks `c`. Prometheus
        // keeps the inner vector's order for a step-invariant (or one-step) subquery, so of
        // the equal `changes` the outer topk keeps `c`'s.
        let (e, _d) = engine(
            ["a", "b", "c"]
                .iter()
                .zip([1.0, 2.0, 3.0])
                .map(|(i, v)| ss(&[("__name__", "y"), ("i", i)], &[(0, v), (300_000, v)]))
                .collect(),
        )
        .await;
        let kept = |m: Vec<SeriesData>| -> Vec<String> {
            m.iter()
                .map(|s| s.labels.get("i").unwrap_or("").to_string())
                .collect()
        };
        let q = "topk(1, changes((topk(2, y @ start()))[15s:15s]))";
        assert_eq!(kept(e.range(q, 0, 240_000, 60_000).unwrap()), ["c"]);
        // A grid of one step, as an instant query over a non-invariant inner vector.
        match e
            .instant("topk(1, changes((topk(2, y))[10s:15s]))", 60_000)
            .unwrap()
        {
            Value::Vector(v) => assert_eq!(v[0].0.get("i"), Some("c")),
            other => panic!("{other:?}"),
        }
    }

    /// A range query's `rate` / `increase` (swept series by series, split across threads past
    /// a few hundred thousand samples) gives, at every step, what an instant query there does
    /// — on counters with resets, gaps, NaNs and stale markers.
    #[tokio::test]
    async fn rates_swept_across_threads_are_the_instant_rates() {
        let stale = f64::from_bits(STALE_NAN_BITS);
        let mut series = Vec::new();
        let mut x: u64 = 7;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % 1000
        };
        for i in 0..300 {
            let (mut v, mut samples) = (0.0, Vec::new());
            for k in 0..1000i64 {
                let r = next();
                if r < 5 {
                    continue; // a missed scrape
                }
                v = if r < 8 { 0.0 } else { v + r as f64 / 10.0 }; // a reset now and then
                let value = match r {
                    8 if i % 3 == 0 => stale,
                    9 => f64::NAN,
                    _ => v,
                };
                samples.push((k * 10_000 + (r as i64 % 25), value));
            }
            let name = i.to_string();
            series.push(ss(&[("__name__", "c"), ("i", &name)], &samples));
        }
        let (e, _d) = engine(series).await;
        for q in ["rate(c[5m])", "increase(c[2m])", "rate(c[1m]) * 2"] {
            let r = e.range(q, 0, 10_000_000, 60_000).unwrap();
            let mut by_step: std::collections::BTreeMap<(i64, String), u64> = Default::default();
            for s in &r {
                for p in &s.samples {
                    by_step.insert((p.0, s.labels.get("i").unwrap_or("").into()), p.1.to_bits());
                }
            }
            let mut want: std::collections::BTreeMap<(i64, String), u64> = Default::default();
            for t in (0..=10_000_000).step_by(60_000) {
                match e.instant(q, t).unwrap() {
                    Value::Vector(v) => {
                        for (l, p) in v {
                            want.insert((t, l.get("i").unwrap_or("").into()), p.1.to_bits());
                        }
                    }
                    other => panic!("{other:?}"),
                }
            }
            assert!(want.len() > 40_000, "{q}: {} points", want.len());
            assert!(
                by_step == want,
                "{q}: the range query differs from the instant ones"
            );
        }
    }
}
