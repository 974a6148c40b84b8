//! LogQL, the query language of Loki: the subset users write most, parsed into [`Query`] and
//! evaluated over [`super::store::LogQuerier`] ([`eval`]).
//!
//! - log queries: a stream selector `{app="api", env=~"prod|staging"}` and a pipeline of
//!   line filters (`|= "x"`, `!= "x"`, `|~ "re"`, `!~ "re"`), parsers (`| json`, `| logfmt`,
//!   `| regexp "(?P<name>re)"`, `| pattern "<ip> - <_> <status>"`), label filters
//!   (`| level="error"`, `| status >= 500`, `| duration > 1.5`, combined with `and`/`or`/`,`),
//!   `| line_format "{{.label}} ..."`, `| drop a, b`, `| keep a, b`, `| unwrap label`;
//! - metric queries: `count_over_time`, `rate`, `bytes_over_time`, `bytes_rate`, and over an
//!   `unwrap`: `sum_over_time`, `avg_over_time`, `min_over_time`, `max_over_time`,
//!   `first_over_time`, `last_over_time` — with `[range]`; aggregated by `sum`, `avg`, `min`,
//!   `max`, `count`, `topk(k, ...)`, `bottomk(k, ...)` with `by (...)` / `without (...)`;
//! - binary operators between metric queries and numbers, with Prometheus' precedence and
//!   matching: `+ - * / % ^`, comparisons (filtering, or 0/1 with `bool`), `and`, `or`,
//!   `unless`, one-to-one matching with `on (...)` / `ignoring (...)`.
//!
//! Anything else is a parse error shaped like Loki's (`parse error at line 1, col 9: ...`),
//! answered with 400.

pub mod eval;
mod parse;

use crate::labels::Matcher;

pub use parse::{duration_ns as parse_duration_ns, parse};

/// A parse error, located like Loki's.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("parse error at line {line}, col {col}: {message}")]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

/// A query.
#[derive(Debug, Clone)]
pub enum Query {
    /// Returns lines.
    Log(LogExpr),
    /// Returns numbers.
    Metric(MetricExpr),
}

/// A stream selector and its pipeline.
#[derive(Debug, Clone)]
pub struct LogExpr {
    /// The selector's matchers.
    pub matchers: Vec<Matcher>,
    /// The pipeline, in order.
    pub stages: Vec<Stage>,
}

impl LogExpr {
    /// The substrings every kept line contains (the `|=` filters before any stage that
    /// rewrites the line): the store skips chunks without them.
    pub fn needles(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.stages {
            match s {
                Stage::Line(LineFilter::Contains(x)) => out.push(x.clone()),
                Stage::LineFormat(_) => break,
                _ => {}
            }
        }
        out
    }
}

/// A line filter.
#[derive(Debug, Clone)]
pub enum LineFilter {
    /// `|= "x"`
    Contains(String),
    /// `!= "x"`
    NotContains(String),
    /// `|~ "re"`
    Regex(regex::Regex),
    /// `!~ "re"`
    NotRegex(regex::Regex),
}

/// A comparison of a label with a number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cmp {
    /// `==` (or `=` with a number)
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

/// A label filter.
#[derive(Debug, Clone)]
pub enum LabelFilter {
    /// A string matcher (`=`, `!=`, `=~`, `!~`).
    Str(Matcher),
    /// A number compared (`status >= 500`, `latency > 250ms`, `size < 1KB`).
    Num {
        /// The label.
        name: String,
        /// The comparison.
        cmp: Cmp,
        /// The number (durations in seconds, sizes in bytes).
        value: f64,
    },
    /// Both.
    And(Box<LabelFilter>, Box<LabelFilter>),
    /// Either.
    Or(Box<LabelFilter>, Box<LabelFilter>),
}

/// A pipeline stage.
#[derive(Debug, Clone)]
pub enum Stage {
    /// A line filter.
    Line(LineFilter),
    /// `| json`: every field of a JSON object line becomes a label (nested keys joined by
    /// `_`).
    Json,
    /// `| logfmt`
    Logfmt,
    /// `| regexp "..."`: named groups become labels.
    Regexp(regex::Regex),
    /// `| pattern "..."`: `<name>` captures, `<_>` skips; literal text between them.
    Pattern(Vec<PatternPart>),
    /// A label filter.
    Label(LabelFilter),
    /// `| line_format "..."`: `{{.name}}` replaced by the label's value.
    LineFormat(String),
    /// `| drop a, b`
    Drop(Vec<String>),
    /// `| keep a, b`
    Keep(Vec<String>),
    /// `| unwrap name` (optionally `bytes(name)` or `duration(name)`): the value metric
    /// queries aggregate.
    Unwrap {
        /// The label.
        name: String,
        /// `bytes` or `duration` conversion.
        conv: Option<String>,
    },
}

/// A part of a `pattern` expression.
#[derive(Debug, Clone, PartialEq)]
pub enum PatternPart {
    /// Literal text.
    Lit(String),
    /// A capture (`None` for `<_>`).
    Capture(Option<String>),
}

/// A range function.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RangeFn {
    /// Lines in the range.
    CountOverTime,
    /// Lines per second.
    Rate,
    /// Bytes of lines in the range.
    BytesOverTime,
    /// Bytes per second.
    BytesRate,
    /// Sum of unwrapped values.
    SumOverTime,
    /// Average of unwrapped values.
    AvgOverTime,
    /// Smallest unwrapped value.
    MinOverTime,
    /// Largest unwrapped value.
    MaxOverTime,
    /// First unwrapped value.
    FirstOverTime,
    /// Last unwrapped value.
    LastOverTime,
}

impl RangeFn {
    /// Whether the function needs `| unwrap`.
    pub fn unwraps(self) -> bool {
        !matches!(
            self,
            RangeFn::CountOverTime | RangeFn::Rate | RangeFn::BytesOverTime | RangeFn::BytesRate
        )
    }
}

/// A vector aggregation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AggOp {
    /// `sum`
    Sum,
    /// `avg`
    Avg,
    /// `min`
    Min,
    /// `max`
    Max,
    /// `count`
    Count,
    /// `topk(k, ...)`
    Topk(usize),
    /// `bottomk(k, ...)`
    Bottomk(usize),
}

/// `by (...)` or `without (...)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Grouping {
    /// `without` rather than `by`.
    pub without: bool,
    /// The labels.
    pub labels: Vec<String>,
}

/// A metric query.
#[derive(Debug, Clone)]
pub enum MetricExpr {
    /// `fn(log-query [range])`
    Range {
        /// The function.
        func: RangeFn,
        /// What it reads.
        log: LogExpr,
        /// The range (ns).
        range_ns: i64,
        /// `by`/`without` of unwrapped range functions.
        grouping: Option<Grouping>,
    },
    /// `op by (...) (inner)`
    Agg {
        /// The aggregation.
        op: AggOp,
        /// Its grouping (everything into one series without one).
        grouping: Option<Grouping>,
        /// What it aggregates.
        inner: Box<MetricExpr>,
    },
    /// A number.
    Number(f64),
    /// `lhs op [bool] [on|ignoring (...)] rhs`
    Binary {
        /// The operator.
        op: BinOp,
        /// `bool`: comparisons return 0 or 1 instead of filtering.
        bool_mod: bool,
        /// How series of the two sides are matched.
        matching: Matching,
        /// Left side.
        lhs: Box<MetricExpr>,
        /// Right side.
        rhs: Box<MetricExpr>,
    },
}

/// A binary operator between metric expressions (Prometheus' set, as in Loki).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `^`
    Pow,
    /// A comparison (`==`, `!=`, `>`, `>=`, `<`, `<=`).
    Cmp(Cmp),
    /// `and`
    And,
    /// `or`
    Or,
    /// `unless`
    Unless,
}

impl BinOp {
    /// `and`, `or` or `unless`.
    pub fn is_set(self) -> bool {
        matches!(self, BinOp::And | BinOp::Or | BinOp::Unless)
    }
}

/// Which labels two series must share to match (`on (...)` or `ignoring (...)`); without
/// one, all labels.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Matching {
    /// `on` rather than `ignoring`.
    pub on: bool,
    /// The labels.
    pub labels: Vec<String>,
}

impl MetricExpr {
    /// Whether the expression is a number (no series): `2`, `1 + 1`.
    pub fn is_scalar(&self) -> bool {
        match self {
            MetricExpr::Number(_) => true,
            MetricExpr::Binary { lhs, rhs, .. } => lhs.is_scalar() && rhs.is_scalar(),
            _ => false,
        }
    }
}
