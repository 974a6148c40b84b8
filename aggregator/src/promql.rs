//! PromQL evaluation on promql-parser's AST, over the [`Storage`] trait only.
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
pub mod functions;
mod rollups;

use std::sync::Arc;
use std::time::Duration;

use promql_parser::parser::{self, Expr};
use telltale_common::model::{Labels, Sample};

use crate::storage::{Matcher, SeriesData, Storage, StorageError};
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

impl From<StorageError> for QueryError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::TooManySamples { .. } => QueryError::Execution(
                "query processing would load too many samples into memory in query execution"
                    .into(),
            ),
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

/// Evaluates queries against a storage.
#[derive(Clone)]
pub struct Engine {
    storage: Arc<dyn Storage>,
    lookback_ms: i64,
    max_samples: usize,
    timeout: Option<Duration>,
}

impl Engine {
    /// An engine with a lookback (Prometheus: 5 minutes) and a per-query sample limit.
    pub fn new(storage: Arc<dyn Storage>, lookback: Duration, max_samples: usize) -> Engine {
        Engine {
            storage,
            lookback_ms: lookback.as_millis() as i64,
            max_samples,
            timeout: None,
        }
    }

    /// The same engine with a per-query time limit.
    pub fn with_timeout(mut self, timeout: Duration) -> Engine {
        self.timeout = Some(timeout);
        self
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
        if let Some(l) = limit {
            ev.set_deadline(std::time::Instant::now() + l);
        }
        ev
    }

    /// Parses a query, with Prometheus-like messages.
    pub fn parse(q: &str) -> Result<Expr, QueryError> {
        parser::parse(q)
            .map_err(|e| QueryError::BadData(format!("invalid parameter \"query\": {e}")))
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
        let mut out = Assembly::default();
        // One empty label set for every step's scalar, so they share one identity.
        let no_labels = Labels::default();
        let mut t = start;
        while t <= end {
            match ev.eval(&expr, t)? {
                Val::Scalar(v) => out.push(no_labels.clone(), Sample(t, v)),
                Val::Vector(v) => {
                    for e in v {
                        out.push(e.labels, Sample(t, e.v));
                    }
                }
                Val::Matrix(_) | Val::Str(_) => {
                    return Err(QueryError::BadData(
                        "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector".into(),
                    ));
                }
            }
            t += step;
        }
        Ok(out.finish())
    }
}

/// Parses a series selector (as in `match[]`) into matchers.
pub fn selector_matchers(s: &str) -> Result<Vec<Matcher>, QueryError> {
    match Engine::parse(s)? {
        Expr::VectorSelector(vs) => eval::matchers(&vs),
        _ => Err(QueryError::BadData(format!(
            "invalid parameter \"match[]\": {s:?} is not a series selector"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{AppendData, AppendRequest};
    use crate::tsdb::Tsdb;
    use telltale_common::model::{STALE_NAN_BITS, SeriesSamples};

    async fn engine(series: Vec<SeriesSamples>) -> (Engine, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        // The cases use timestamps near 1970: keep them past the default retention.
        let opts = crate::tsdb::Options {
            retention: Duration::from_secs(100 * 365 * 86_400),
            ..Default::default()
        };
        let store = Tsdb::open_with(dir.path(), opts).unwrap();
        store
            .append(AppendRequest {
                origin: None,
                data: AppendData::Series(series),
            })
            .await
            .unwrap();
        (
            Engine::new(Arc::new(store), Duration::from_secs(300), 1_000_000),
            dir,
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
    async fn counters() -> (Engine, tempfile::TempDir) {
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
}
