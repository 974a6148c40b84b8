//! PromQL evaluation on promql-parser's AST, over the [`Storage`] trait only.
//!
//! This first evaluator covers what the core pipeline needs: number and string literals,
//! instant-vector selectors (with `offset` and `@`, the 5-minute lookback and stale markers)
//! and range-vector selectors returning raw samples. Every other expression is refused with a
//! `bad_data` error that says so; the PromQL issue extends this module, not a parallel one.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{self, AtModifier, Expr, Offset, VectorSelector};
use telltale_common::model::{Labels, METRIC_NAME, Sample, is_stale_marker};

use crate::storage::{MatchOp, Matcher, SeriesData, Storage, StorageError};

/// Query errors, each mapped to Prometheus' error types by the API.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query does not parse or is not allowed here (`bad_data`, HTTP 400).
    #[error("{0}")]
    BadData(String),
    /// The query failed while running (`execution`, HTTP 422).
    #[error("{0}")]
    Execution(String),
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
}

fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

fn dur_ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

/// A parsed selector, ready to evaluate at any time.
struct Selector {
    matchers: Vec<Matcher>,
    offset_ms: i64,
    at_ms: Option<i64>,
}

impl Selector {
    fn from_ast(vs: &VectorSelector, start: i64, end: i64) -> Result<Selector, QueryError> {
        if !vs.matchers.or_matchers.is_empty() {
            return Err(QueryError::BadData(
                "`or` inside a selector is not supported yet".into(),
            ));
        }
        let mut matchers = Vec::new();
        if let Some(name) = &vs.name {
            matchers.push(Matcher::equal(METRIC_NAME, name));
        }
        for m in &vs.matchers.matchers {
            let op = match &m.op {
                PMatchOp::Equal => MatchOp::Equal(m.value.clone()),
                PMatchOp::NotEqual => MatchOp::NotEqual(m.value.clone()),
                PMatchOp::Re(r) => MatchOp::Regex(r.clone()),
                PMatchOp::NotRe(r) => MatchOp::NotRegex(r.clone()),
            };
            matchers.push(Matcher {
                name: m.name.clone(),
                op,
            });
        }
        let offset_ms = match &vs.offset {
            Some(Offset::Pos(d)) => dur_ms(*d),
            Some(Offset::Neg(d)) => -dur_ms(*d),
            None => 0,
        };
        let at_ms = match &vs.at {
            Some(AtModifier::Start) => Some(start),
            Some(AtModifier::End) => Some(end),
            Some(AtModifier::At(t)) => Some(to_ms(*t)),
            None => None,
        };
        Ok(Selector {
            matchers,
            offset_ms,
            at_ms,
        })
    }

    fn eval_time(&self, t: i64) -> i64 {
        self.at_ms.unwrap_or(t) - self.offset_ms
    }
}

/// The sample an instant-vector selector sees at `t` within `lookback`: the latest one in
/// `(t - lookback, t]`, unless that is a stale marker.
fn sample_at(samples: &[Sample], t: i64, lookback: i64) -> Option<Sample> {
    let idx = samples.partition_point(|s| s.0 <= t);
    let s = *samples.get(idx.checked_sub(1)?)?;
    (s.0 > t - lookback && !is_stale_marker(s.1)).then_some(s)
}

fn unsupported(what: &str) -> QueryError {
    QueryError::BadData(format!(
        "{what} is not supported yet: this build evaluates selectors and literals only"
    ))
}

fn refuse(e: &Expr) -> QueryError {
    match e {
        Expr::Call(c) => unsupported(&format!("function {}()", c.func.name)),
        Expr::Aggregate(_) => unsupported("aggregation"),
        Expr::Binary(_) => unsupported("binary operator"),
        Expr::Unary(_) => unsupported("unary operator"),
        Expr::Subquery(_) => unsupported("subquery"),
        _ => unsupported("this expression"),
    }
}

fn unwrap_parens(mut e: &Expr) -> &Expr {
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    e
}

impl Engine {
    /// An engine with Prometheus' default 5-minute lookback and a per-query sample limit.
    pub fn new(storage: Arc<dyn Storage>, lookback: Duration, max_samples: usize) -> Engine {
        Engine {
            storage,
            lookback_ms: dur_ms(lookback),
            max_samples,
        }
    }

    /// Parses a query, with Prometheus-like messages.
    pub fn parse(q: &str) -> Result<Expr, QueryError> {
        parser::parse(q)
            .map_err(|e| QueryError::BadData(format!("invalid parameter \"query\": {e}")))
    }

    /// Evaluates `q` at `t_ms`.
    pub fn instant(&self, q: &str, t_ms: i64) -> Result<Value, QueryError> {
        let expr = Self::parse(q)?;
        match unwrap_parens(&expr) {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(Sample(t_ms, n.val))),
            Expr::StringLiteral(s) => Ok(Value::String(t_ms, s.val.clone())),
            Expr::VectorSelector(vs) => {
                let sel = Selector::from_ast(vs, t_ms, t_ms)?;
                let te = sel.eval_time(t_ms);
                let data = self.storage.select(
                    &sel.matchers,
                    te - self.lookback_ms + 1,
                    te,
                    self.max_samples,
                )?;
                let v = data
                    .into_iter()
                    .filter_map(|s| {
                        sample_at(&s.samples, te, self.lookback_ms)
                            .map(|x| (s.labels, Sample(t_ms, x.1)))
                    })
                    .collect();
                Ok(Value::Vector(v))
            }
            Expr::MatrixSelector(ms) => {
                let sel = Selector::from_ast(&ms.vs, t_ms, t_ms)?;
                let te = sel.eval_time(t_ms);
                let range = dur_ms(ms.range);
                let data =
                    self.storage
                        .select(&sel.matchers, te - range + 1, te, self.max_samples)?;
                let m = data
                    .into_iter()
                    .map(|mut s| {
                        s.samples.retain(|x| !is_stale_marker(x.1));
                        s
                    })
                    .filter(|s| !s.samples.is_empty())
                    .collect();
                Ok(Value::Matrix(m))
            }
            other => Err(refuse(other)),
        }
    }

    /// Evaluates `q` at every step from `start` to `end` (inclusive), as a matrix.
    pub fn range(
        &self,
        q: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Vec<SeriesData>, QueryError> {
        let expr = Self::parse(q)?;
        let steps = || {
            (0..)
                .map(move |i| start + i * step)
                .take_while(move |&t| t <= end)
        };
        match unwrap_parens(&expr) {
            Expr::NumberLiteral(n) => Ok(vec![SeriesData {
                labels: Labels::default(),
                samples: steps().map(|t| Sample(t, n.val)).collect(),
            }]),
            Expr::VectorSelector(vs) => {
                let sel = Selector::from_ast(vs, start, end)?;
                let (lo, hi) = (sel.eval_time(start), sel.eval_time(end));
                let data = self.storage.select(
                    &sel.matchers,
                    lo.min(hi) - self.lookback_ms + 1,
                    lo.max(hi),
                    self.max_samples,
                )?;
                Ok(data
                    .into_iter()
                    .filter_map(|s| {
                        let samples: Vec<Sample> = steps()
                            .filter_map(|t| {
                                sample_at(&s.samples, sel.eval_time(t), self.lookback_ms)
                                    .map(|x| Sample(t, x.1))
                            })
                            .collect();
                        (!samples.is_empty()).then_some(SeriesData {
                            labels: s.labels,
                            samples,
                        })
                    })
                    .collect())
            }
            Expr::MatrixSelector(_) | Expr::StringLiteral(_) => Err(QueryError::BadData(
                "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector".into(),
            )),
            other => Err(refuse(other)),
        }
    }
}

/// Parses a series selector (as in `match[]`) into matchers.
pub fn selector_matchers(s: &str) -> Result<Vec<Matcher>, QueryError> {
    match Engine::parse(s)? {
        Expr::VectorSelector(vs) => Ok(Selector::from_ast(&vs, 0, 0)?.matchers),
        _ => Err(QueryError::BadData(format!(
            "invalid parameter \"match[]\": {s:?} is not a series selector"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logstore::LogStore;
    use crate::storage::{AppendData, AppendRequest};
    use telltale_common::model::{STALE_NAN_BITS, SeriesSamples};

    async fn engine(series: Vec<SeriesSamples>) -> (Engine, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path()).unwrap();
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
        match e.instant("m[1m]", 60_000).unwrap() {
            Value::Matrix(m) => {
                assert_eq!(
                    m.len(),
                    1,
                    "the stale marker and the sample at t-1m are excluded"
                );
                assert_eq!(m[0].samples, vec![Sample(60_000, 2.0)]);
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
    async fn unsupported_and_invalid_queries_are_bad_data() {
        let (e, _d) = engine(vec![]).await;
        assert!(matches!(
            e.instant("sum(m)", 0),
            Err(QueryError::BadData(_))
        ));
        assert!(matches!(e.instant("m{", 0), Err(QueryError::BadData(_))));
        assert!(matches!(
            e.range("m[5m]", 0, 10, 1),
            Err(QueryError::BadData(_))
        ));
    }
}
