//! Recording and alerting rules from rule files: Prometheus rules evaluated over the
//! [`crate::metrics::storage::Storage`] trait through the PromQL engine, and Loki ruler rules
//! (LogQL metric queries) over the log store's read interface. Both kinds feed the same alert
//! state machine, `ALERTS` series and notifier, so a log alert is routed, correlated and
//! remediated like any other.
//!
//! - [`file`]: rule files (YAML, Prometheus' shape) validated into groups;
//! - [`alert`]: the alert state machine (inactive → pending → firing → resolved), no I/O;
//! - [`manager`]: the driver — a task per group on its interval, plus *eager* evaluation: the
//!   storage calls back after every durable append with the metric names it stored, and each
//!   group whose expressions read one of them is evaluated at once (at most once per
//!   `eager_min_interval`). A breaching sample therefore reaches the alerting side within
//!   milliseconds of being stored, not at the next tick;
//! - [`unittest`]: `promtool test rules` files run on the manager over a test clock.

pub mod alert;
pub mod file;
pub mod manager;
pub mod unittest;

/// The golden-signal rules the aggregator evaluates built in (`[rules] golden_signals`).
pub const GOLDEN: &str = include_str!("../../config/rules/golden.yml");

use promql_parser::parser::Expr;

use crate::metrics::promql::QueryError;

/// Why one evaluation of a rule failed: its health turns `err` with this as `lastError`, and
/// (like Prometheus) that evaluation leaves no series and no alerts. The messages are
/// Prometheus' own.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The query failed.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// A LogQL rule's query failed.
    #[error(transparent)]
    Log(#[from] crate::logs::logql::eval::EvalError),
    /// A LogQL rule runs where no log store was given.
    #[error("no log store to evaluate a LogQL rule on")]
    NoLogStore,
    /// The query returned a range vector or a string.
    #[error("rule result is not a vector or scalar")]
    NotVector,
    /// Two results have the same labels once the rule's labels are applied (`what`: `rule`
    /// for recording rules, `alert` for alerting rules).
    #[error("vector contains metrics with the same labelset after applying {what} labels")]
    DuplicateLabels {
        /// `rule` or `alert`.
        what: &'static str,
    },
    /// More results than the group's `limit` (`what`: `series` or `alerts`).
    #[error("exceeded limit of {limit} with {count} {what}")]
    Limit {
        /// The group's limit.
        limit: u64,
        /// How many there were.
        count: u64,
        /// `series` or `alerts`.
        what: &'static str,
    },
}

/// The metric names an expression reads; `None` when a selector has no fixed name (it may
/// read any metric).
pub fn metric_names(expr: &Expr) -> Option<Vec<String>> {
    let mut out: Vec<String> = selectors(expr)?.into_iter().map(|(n, _)| n).collect();
    out.sort();
    out.dedup();
    Some(out)
}

/// The selectors of an expression as `(metric name, value of an equality matcher on job)`;
/// `None` when a selector has no fixed name.
pub fn selectors(expr: &Expr) -> Option<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    if walk(expr, &mut out) {
        out.sort();
        out.dedup();
        Some(out)
    } else {
        None
    }
}

fn walk(e: &Expr, out: &mut Vec<(String, Option<String>)>) -> bool {
    use promql_parser::label::MatchOp;
    let vs = |v: &promql_parser::parser::VectorSelector,
              out: &mut Vec<(String, Option<String>)>|
     -> bool {
        let job = v
            .matchers
            .matchers
            .iter()
            .find(|m| m.name == "job" && matches!(m.op, MatchOp::Equal))
            .map(|m| m.value.clone());
        if let Some(n) = &v.name {
            out.push((n.clone(), job));
            return true;
        }
        for m in &v.matchers.matchers {
            if m.name == "__name__" && matches!(m.op, MatchOp::Equal) {
                out.push((m.value.clone(), job));
                return true;
            }
        }
        false
    };
    match e {
        Expr::VectorSelector(v) => vs(v, out),
        Expr::MatrixSelector(m) => vs(&m.vs, out),
        Expr::Subquery(s) => walk(&s.expr, out),
        Expr::Paren(p) => walk(&p.expr, out),
        Expr::Unary(u) => walk(&u.expr, out),
        Expr::Binary(b) => walk(&b.lhs, out) & walk(&b.rhs, out),
        Expr::Aggregate(a) => walk(&a.expr, out) & a.param.as_ref().is_none_or(|p| walk(p, out)),
        Expr::Call(c) => c.args.args.iter().fold(true, |ok, a| walk(a, out) & ok),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => true,
        Expr::Extension(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_of_expressions() {
        let p = |q: &str| promql_parser::parser::parse(q).expect("parses");
        assert_eq!(
            metric_names(&p("rate(a_total[5m]) / on(x) group_left sum(b) > 1")),
            Some(vec!["a_total".to_string(), "b".to_string()])
        );
        assert_eq!(
            metric_names(&p("{__name__=\"c\", job=\"x\"}")),
            Some(vec!["c".to_string()])
        );
        assert_eq!(metric_names(&p("{__name__=~\"node_.*\"}")), None);
        assert_eq!(metric_names(&p("vector(1)")), Some(vec![]));
    }
}
