//! Evaluates LogQL over the store's read interface: the selector and the `|=` needles go to
//! the store, every other stage runs here, line by line.

use std::collections::{BTreeMap, HashMap};

use telltale_common::model::Labels;

use super::parse::{duration_ns, number};
use super::{
    AggOp, Cmp, Grouping, LabelFilter, LineFilter, LogExpr, MetricExpr, PatternPart, RangeFn, Stage,
};
use crate::logs::store::{LogQuerier, LogStoreError, Selection};

mod binary;
use binary::Operand;

/// The bounds of one query.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of lines a query may read.
    pub max_bytes: u64,
    /// Series a metric query may return.
    pub max_series: usize,
    /// Points (steps) of a range query.
    pub max_points: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 1 << 30,
            max_series: 10_000,
            max_points: 11_000,
        }
    }
}

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The store refused (too much data) or failed.
    #[error(transparent)]
    Store(#[from] LogStoreError),
    /// A limit of the query was exceeded (422).
    #[error("{0}")]
    Limit(String),
    /// The two sides of a binary operator do not match one to one (422).
    #[error("{0}")]
    Matching(String),
}

/// The order of lines: newest first (Loki's default) or oldest first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Direction {
    /// Oldest first.
    Forward,
    /// Newest first.
    Backward,
}

/// A stream of a log query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamResult {
    /// Its labels after the pipeline.
    pub labels: Labels,
    /// `(ns, line)` in the requested direction.
    pub entries: Vec<(i64, String)>,
}

/// A series of a metric query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its labels.
    pub labels: Labels,
    /// `(ns, value)` by time.
    pub points: Vec<(i64, f64)>,
}

/// A line going through the pipeline.
struct Line {
    labels: BTreeMap<String, String>,
    line: String,
    value: Option<f64>,
}

/// Adds a parsed label; a name the stream already has gets `_extracted`, as in Loki.
fn add(l: &mut Line, stream: &Labels, k: &str, v: String) {
    let k = telltale_common::model::label_name_from(k);
    let k = if stream.get(&k).is_some() {
        format!("{k}_extracted")
    } else {
        k
    };
    l.labels.insert(k, v);
}

fn flatten(l: &mut Line, stream: &Labels, prefix: &str, v: &serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}_{k}")
                };
                flatten(l, stream, &key, x);
            }
        }
        // Loki skips arrays.
        Value::Array(_) => {}
        Value::String(s) => add(l, stream, prefix, s.clone()),
        Value::Null => add(l, stream, prefix, String::new()),
        other => add(l, stream, prefix, other.to_string()),
    }
}

fn pattern_match(parts: &[PatternPart], line: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = line;
    for (i, p) in parts.iter().enumerate() {
        match p {
            PatternPart::Lit(s) => {
                if i == 0 {
                    rest = rest.strip_prefix(s.as_str())?;
                } else {
                    // Reached only after a capture, which consumed up to here.
                    rest = rest.strip_prefix(s.as_str())?;
                }
            }
            PatternPart::Capture(name) => {
                let value = match parts.get(i + 1) {
                    Some(PatternPart::Lit(next)) => {
                        let at = rest.find(next.as_str())?;
                        let v = &rest[..at];
                        rest = &rest[at..];
                        v
                    }
                    _ => std::mem::take(&mut rest),
                };
                if let Some(n) = name {
                    out.push((n.clone(), value.to_string()));
                }
            }
        }
    }
    Some(out)
}

fn label_filter(f: &LabelFilter, l: &Line) -> bool {
    match f {
        LabelFilter::Str(m) => m.matches(l.labels.get(&m.name).map(|s| s.as_str()).unwrap_or("")),
        LabelFilter::Num { name, cmp, value } => {
            let Some(v) = l.labels.get(name).and_then(|s| number(s)) else {
                return false;
            };
            match cmp {
                Cmp::Eq => v == *value,
                Cmp::Ne => v != *value,
                Cmp::Gt => v > *value,
                Cmp::Ge => v >= *value,
                Cmp::Lt => v < *value,
                Cmp::Le => v <= *value,
            }
        }
        LabelFilter::And(a, b) => label_filter(a, l) && label_filter(b, l),
        LabelFilter::Or(a, b) => label_filter(a, l) || label_filter(b, l),
    }
}

fn line_format(t: &str, l: &Line) -> String {
    let mut out = String::with_capacity(t.len());
    let mut rest = t;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let Some(end) = rest[i..].find("}}") else {
            out.push_str(&rest[i..]);
            return out;
        };
        let inner = rest[i + 2..i + end].trim();
        if let Some(name) = inner.strip_prefix('.') {
            out.push_str(l.labels.get(name).map(|s| s.as_str()).unwrap_or(""));
        } else if inner == "__line__" {
            out.push_str(&l.line);
        }
        rest = &rest[i + end + 2..];
    }
    out.push_str(rest);
    out
}

/// Runs a line through the pipeline; `None` when a stage drops it. The line's structured
/// metadata (`trace_id`, OTLP attributes...) are labels from the start, as in Loki: label
/// filters and formats see them, and results carry them (a stream label of the same name
/// wins). Metric queries drop them again from their series (see `samples`).
fn run(
    stages: &[Stage],
    stream: &Labels,
    metadata: &[(String, String)],
    line: &str,
) -> Option<Line> {
    let mut labels: BTreeMap<String, String> = metadata
        .iter()
        .filter(|(k, v)| !v.is_empty() && telltale_common::model::valid_label_name(k))
        .cloned()
        .collect();
    labels.extend(stream.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut l = Line {
        labels,
        line: line.to_string(),
        value: None,
    };
    for s in stages {
        match s {
            Stage::Line(f) => {
                let keep = match f {
                    LineFilter::Contains(x) => l.line.contains(x.as_str()),
                    LineFilter::NotContains(x) => !l.line.contains(x.as_str()),
                    LineFilter::Regex(r) => r.is_match(&l.line),
                    LineFilter::NotRegex(r) => !r.is_match(&l.line),
                };
                if !keep {
                    return None;
                }
            }
            Stage::Json => match serde_json::from_str::<serde_json::Value>(&l.line) {
                Ok(v @ serde_json::Value::Object(_)) => flatten(&mut l, stream, "", &v),
                _ => {
                    l.labels.insert("__error__".into(), "JSONParserErr".into());
                }
            },
            Stage::Logfmt => match telltale_common::logfmt::parse(&l.line) {
                Some(kv) => {
                    for (k, v) in kv {
                        add(&mut l, stream, &k, v);
                    }
                }
                None => {
                    l.labels
                        .insert("__error__".into(), "LogfmtParserErr".into());
                }
            },
            Stage::Regexp(re) => {
                if let Some(c) = re.captures(&l.line) {
                    let found: Vec<(String, String)> = re
                        .capture_names()
                        .flatten()
                        .filter_map(|n| c.name(n).map(|m| (n.to_string(), m.as_str().to_string())))
                        .collect();
                    for (k, v) in found {
                        add(&mut l, stream, &k, v);
                    }
                }
            }
            Stage::Pattern(parts) => {
                if let Some(kv) = pattern_match(parts, &l.line) {
                    for (k, v) in kv {
                        add(&mut l, stream, &k, v);
                    }
                }
            }
            Stage::Label(f) => {
                if !label_filter(f, &l) {
                    return None;
                }
            }
            Stage::LineFormat(t) => l.line = line_format(t, &l),
            Stage::Drop(names) => l.labels.retain(|k, _| !names.contains(k)),
            Stage::Keep(names) => l.labels.retain(|k, _| names.contains(k)),
            Stage::Unwrap { name, conv } => {
                let raw = l.labels.get(name)?;
                let v = match conv.as_deref() {
                    Some("duration" | "duration_seconds") => duration_ns(raw)? as f64 / 1e9,
                    Some("bytes") => telltale_common::config::parse_bytes(raw).ok()? as f64,
                    _ => raw.trim().parse::<f64>().ok()?,
                };
                l.value = Some(v);
                l.labels.remove(name);
            }
        }
    }
    l.labels.retain(|_, v| !v.is_empty());
    Some(l)
}

fn to_labels(m: BTreeMap<String, String>) -> Labels {
    Labels::from_pairs(m)
}

/// One line of a stream through a log query's pipeline (the selector is not checked): its
/// labels and text after it, or `None` when a stage drops it. Live tailing uses it.
pub fn pipeline(expr: &LogExpr, stream: &Labels, line: &str) -> Option<(Labels, String)> {
    let l = run(&expr.stages, stream, &[], line)?;
    Some((to_labels(l.labels), l.line))
}

/// A log query: the `limit` lines nearest the start (forward) or end (backward) of the range,
/// grouped by their labels after the pipeline.
pub fn select_logs(
    store: &dyn LogQuerier,
    expr: &LogExpr,
    start_ns: i64,
    end_ns: i64,
    limit: usize,
    dir: Direction,
    limits: &Limits,
) -> Result<Vec<StreamResult>, EvalError> {
    let needles = expr.needles();
    let sel = store.select(&Selection {
        matchers: &expr.matchers,
        start_ns,
        end_ns,
        needles: &needles,
        max_bytes: limits.max_bytes,
    })?;
    let mut lines: Vec<(i64, Labels, String)> = Vec::new();
    let mut cache: HashMap<BTreeMap<String, String>, Labels> = HashMap::new();
    for s in sel {
        for e in &s.entries {
            if let Some(l) = run(&expr.stages, &s.labels, &e.metadata, &e.line) {
                let labels = cache
                    .entry(l.labels.clone())
                    .or_insert_with(|| to_labels(l.labels))
                    .clone();
                lines.push((e.t_ns, labels, l.line));
            }
        }
    }
    match dir {
        Direction::Forward => lines.sort_by_key(|x| x.0),
        Direction::Backward => lines.sort_by_key(|x| std::cmp::Reverse(x.0)),
    }
    lines.truncate(limit);
    let mut out: Vec<StreamResult> = Vec::new();
    let mut at: HashMap<Labels, usize> = HashMap::new();
    for (t, labels, line) in lines {
        let i = *at.entry(labels.clone()).or_insert_with(|| {
            out.push(StreamResult {
                labels,
                entries: Vec::new(),
            });
            out.len() - 1
        });
        out[i].entries.push((t, line));
    }
    Ok(out)
}

fn group_key(labels: &Labels, g: Option<&Grouping>) -> Labels {
    match g {
        None => Labels::default(),
        Some(g) if g.without => Labels::from_pairs(
            labels
                .iter()
                .filter(|(k, _)| !g.labels.iter().any(|x| x == k))
                .map(|(k, v)| (k.to_string(), v.to_string())),
        ),
        Some(g) => Labels::from_pairs(
            labels
                .iter()
                .filter(|(k, _)| g.labels.iter().any(|x| x == k))
                .map(|(k, v)| (k.to_string(), v.to_string())),
        ),
    }
}

/// The samples a range function reads: per label set, `(ns, value)` by time (`value` is the
/// unwrapped number, or the line's bytes).
fn samples(
    store: &dyn LogQuerier,
    log: &LogExpr,
    func: RangeFn,
    grouping: Option<&Grouping>,
    start_ns: i64,
    end_ns: i64,
    limits: &Limits,
) -> Result<HashMap<Labels, Vec<(i64, f64)>>, EvalError> {
    let needles = log.needles();
    let selection = Selection {
        matchers: &log.matchers,
        start_ns,
        end_ns,
        needles: &needles,
        max_bytes: limits.max_bytes,
    };
    let mut out: HashMap<Labels, Vec<(i64, f64)>> = HashMap::new();
    let sel = store.select(&selection)?;
    let mut cache: HashMap<BTreeMap<String, String>, Labels> = HashMap::new();
    for s in sel {
        for e in &s.entries {
            let Some(mut l) = run(&log.stages, &s.labels, &e.metadata, &e.line) else {
                continue;
            };
            // Metric series are labelled by the stream and what the pipeline extracted, never
            // by structured metadata (a trace id per line would make a series per line; and
            // counting from the block index, which knows no metadata, must agree).
            for (k, v) in &e.metadata {
                if s.labels.get(k).is_none() && l.labels.get(k) == Some(v) {
                    l.labels.remove(k);
                }
            }
            let v = match func {
                RangeFn::BytesOverTime | RangeFn::BytesRate => l.line.len() as f64,
                RangeFn::CountOverTime | RangeFn::Rate => 1.0,
                _ => match l.value {
                    Some(v) => v,
                    None => continue,
                },
            };
            let mut labels = cache
                .entry(l.labels.clone())
                .or_insert_with(|| to_labels(l.labels))
                .clone();
            if grouping.is_some() {
                labels = group_key(&labels, grouping);
            }
            out.entry(labels).or_default().push((e.t_ns, v));
            if out.len() > limits.max_series {
                return Err(EvalError::Limit(format!(
                    "maximum of series ({}) reached for a single query",
                    limits.max_series
                )));
            }
        }
    }
    for v in out.values_mut() {
        v.sort_by_key(|x| x.0);
    }
    Ok(out)
}

fn range_value(func: RangeFn, w: &[(i64, f64)], range_ns: i64) -> Option<f64> {
    if w.is_empty() {
        return None;
    }
    let secs = range_ns as f64 / 1e9;
    let sum: f64 = w.iter().map(|x| x.1).sum();
    Some(match func {
        RangeFn::CountOverTime => w.len() as f64,
        RangeFn::Rate => w.len() as f64 / secs,
        RangeFn::BytesOverTime | RangeFn::SumOverTime => sum,
        RangeFn::BytesRate => sum / secs,
        RangeFn::AvgOverTime => sum / w.len() as f64,
        RangeFn::MinOverTime => w.iter().map(|x| x.1).fold(f64::INFINITY, f64::min),
        RangeFn::MaxOverTime => w.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max),
        RangeFn::FirstOverTime => w[0].1,
        RangeFn::LastOverTime => w[w.len() - 1].1,
    })
}

fn aggregate(op: AggOp, g: Option<&Grouping>, input: Vec<(Labels, f64)>) -> Vec<(Labels, f64)> {
    let mut groups: BTreeMap<Labels, Vec<(Labels, f64)>> = BTreeMap::new();
    for (l, v) in input {
        groups.entry(group_key(&l, g)).or_default().push((l, v));
    }
    let mut out = Vec::new();
    for (key, mut members) in groups {
        let vals = members.iter().map(|x| x.1);
        match op {
            AggOp::Sum => out.push((key, vals.sum())),
            AggOp::Avg => out.push((key, vals.sum::<f64>() / members.len() as f64)),
            AggOp::Min => out.push((key, vals.fold(f64::INFINITY, f64::min))),
            AggOp::Max => out.push((key, vals.fold(f64::NEG_INFINITY, f64::max))),
            AggOp::Count => out.push((key, members.len() as f64)),
            AggOp::Topk(k) | AggOp::Bottomk(k) => {
                members.sort_by(|a, b| {
                    let o = a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal);
                    if matches!(op, AggOp::Topk(_)) {
                        o.reverse()
                    } else {
                        o
                    }
                });
                members.truncate(k);
                out.extend(members);
            }
        }
    }
    out
}

/// The value of every series of `e` at each step `start, start + step, ... <= end` (ns).
pub fn range_metric(
    store: &dyn LogQuerier,
    e: &MetricExpr,
    start_ns: i64,
    end_ns: i64,
    step_ns: i64,
    limits: &Limits,
) -> Result<Vec<Series>, EvalError> {
    let step_ns = step_ns.max(1);
    // Saturating: the times are whatever a client sent (i64's ends panicked in debug).
    let points = (end_ns.saturating_sub(start_ns) / step_ns).saturating_add(1);
    if end_ns < start_ns || points as usize > limits.max_points {
        return Err(EvalError::Limit(format!(
            "exceeded maximum resolution of {} points per time series: try a larger step",
            limits.max_points
        )));
    }
    let steps: Vec<i64> = (0..points)
        .map(|k| start_ns.saturating_add(k.saturating_mul(step_ns)))
        .collect();
    let per_step = eval_steps(store, e, &steps, limits)?;
    let mut out: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
    for (t, vals) in steps.iter().zip(per_step) {
        for (l, v) in vals {
            out.entry(l).or_default().push((*t, v));
        }
    }
    Ok(out
        .into_iter()
        .map(|(labels, points)| Series { labels, points })
        .collect())
}

/// The series of `e` at each step (a number is one series without labels).
fn eval_steps(
    store: &dyn LogQuerier,
    e: &MetricExpr,
    steps: &[i64],
    limits: &Limits,
) -> Result<Vec<Vec<(Labels, f64)>>, EvalError> {
    Ok(operands(store, e, steps, limits)?
        .into_iter()
        .map(|o| match o {
            Operand::Vector(v) => v,
            Operand::Scalar(x) => vec![(Labels::default(), x)],
        })
        .collect())
}

fn operands(
    store: &dyn LogQuerier,
    e: &MetricExpr,
    steps: &[i64],
    limits: &Limits,
) -> Result<Vec<Operand>, EvalError> {
    match e {
        MetricExpr::Number(x) => Ok(vec![Operand::Scalar(*x); steps.len()]),
        MetricExpr::Binary {
            op,
            bool_mod,
            matching,
            lhs,
            rhs,
        } => {
            let l = operands(store, lhs, steps, limits)?;
            let r = operands(store, rhs, steps, limits)?;
            l.into_iter()
                .zip(r)
                .map(|(l, r)| binary::apply(*op, *bool_mod, matching, l, r))
                .collect()
        }
        MetricExpr::Range {
            func,
            log,
            range_ns,
            grouping,
        } => {
            // Counting lines or bytes of a bare selector needs no line: the store tallies
            // them (Grafana's log-volume histogram is such a query).
            if log.stages.is_empty() && !func.unwraps() {
                return tallied(store, log, *func, *range_ns, steps, limits);
            }
            let (first, last) = (steps[0], steps[steps.len() - 1]);
            // Windows are (t - range, t]: the store's range is [from, to).
            let series = samples(
                store,
                log,
                *func,
                grouping.as_ref(),
                first.saturating_sub(*range_ns).saturating_add(1),
                last.saturating_add(1),
                limits,
            )?;
            let mut out = vec![Vec::new(); steps.len()];
            for (labels, pts) in series {
                let (mut lo, mut hi) = (0usize, 0usize);
                for (i, &t) in steps.iter().enumerate() {
                    while hi < pts.len() && pts[hi].0 <= t {
                        hi += 1;
                    }
                    while lo < hi && pts[lo].0 <= t.saturating_sub(*range_ns) {
                        lo += 1;
                    }
                    if let Some(v) = range_value(*func, &pts[lo..hi], *range_ns) {
                        out[i].push((labels.clone(), v));
                    }
                }
            }
            Ok(out.into_iter().map(Operand::Vector).collect())
        }
        MetricExpr::Agg {
            op,
            grouping,
            inner,
        } => Ok(eval_steps(store, inner, steps, limits)?
            .into_iter()
            .map(|v| Operand::Vector(aggregate(*op, grouping.as_ref(), v)))
            .collect()),
    }
}

/// A range function that counts lines or bytes of a bare selector at each step, from the
/// store's tally over the windows' edges (every window `(t - range, t]` is a run of whole
/// intervals between them).
fn tallied(
    store: &dyn LogQuerier,
    log: &LogExpr,
    func: RangeFn,
    range_ns: i64,
    steps: &[i64],
    limits: &Limits,
) -> Result<Vec<Operand>, EvalError> {
    let mut edges: Vec<i64> = steps
        .iter()
        .flat_map(|&t| [t.saturating_sub(range_ns), t])
        .collect();
    edges.sort_unstable();
    edges.dedup();
    let tallies = store.tally(&log.matchers, &edges, limits.max_bytes)?;
    if tallies.len() > limits.max_series {
        return Err(EvalError::Limit(format!(
            "maximum of series ({}) reached for a single query",
            limits.max_series
        )));
    }
    let secs = range_ns as f64 / 1e9;
    let mut out = vec![Vec::new(); steps.len()];
    for t in tallies {
        // Prefix sums: a window is the difference of two.
        let mut lines = vec![0u64; edges.len()];
        let mut bytes = vec![0u64; edges.len()];
        for j in 0..edges.len() - 1 {
            lines[j + 1] = lines[j] + t.lines[j];
            bytes[j + 1] = bytes[j] + t.bytes[j];
        }
        for (i, &step) in steps.iter().enumerate() {
            let lo = edges.partition_point(|&e| e < step.saturating_sub(range_ns));
            let hi = edges.partition_point(|&e| e < step);
            let n = lines[hi] - lines[lo];
            if n == 0 {
                continue;
            }
            let b = (bytes[hi] - bytes[lo]) as f64;
            let v = match func {
                RangeFn::Rate => n as f64 / secs,
                RangeFn::BytesOverTime => b,
                RangeFn::BytesRate => b / secs,
                _ => n as f64,
            };
            out[i].push((t.labels.clone(), v));
        }
    }
    Ok(out.into_iter().map(Operand::Vector).collect())
}

#[cfg(test)]
mod tests;
