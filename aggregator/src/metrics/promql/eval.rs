//! The evaluator: one expression at one instant, with selector data loaded once per query and
//! shared by every step of a range query.

use std::collections::HashMap;
use std::sync::Arc;

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{
    AggregateExpr, AtModifier, Call, Expr, LabelModifier, Offset, SubqueryExpr, VectorSelector,
};
use rustc_hash::{FxHashMap, FxHashSet};
use telltale_common::model::{Labels, METRIC_NAME, Sample, is_stale_marker};

mod aggregate;
mod select;

use super::QueryError;
use super::functions as f;
use crate::metrics::storage::{MatchOp, Matcher, Querier, SeriesData};

/// One element of an instant vector: labels, the sample's timestamp and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Elem {
    /// Labels (the metric name included unless an operation dropped it).
    pub labels: Labels,
    /// Timestamp of the sample (the evaluation time for computed values).
    pub t: i64,
    /// Value.
    pub v: f64,
}

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// A number.
    Scalar(f64),
    /// A string.
    Str(String),
    /// An instant vector.
    Vector(Vec<Elem>),
    /// A range vector.
    Matrix(Vec<SeriesData>),
}

fn dur_ms(d: std::time::Duration) -> i64 {
    d.as_millis() as i64
}

pub(super) fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        Some(Offset::Pos(d)) => dur_ms(*d),
        Some(Offset::Neg(d)) => -dur_ms(*d),
        None => 0,
    }
}

fn exec(msg: impl Into<String>) -> QueryError {
    QueryError::Execution(msg.into())
}

/// Fails when an instant vector holds one label set twice (after an operation dropped the
/// metric name, say), as Prometheus does. Every label set an operation returns is either a
/// stored series' own (unique by content, and always named) or one made by `derive`
/// (interned, so equal ones share one identity, and a derivation that leaves a set unchanged
/// interns that very set): equal label sets are therefore the same `Arc`, and checking
/// identities finds every duplicate without hashing label strings.
fn unique_label_sets(v: &Val) -> Result<(), QueryError> {
    if let Val::Vector(elems) = v
        && elems.len() > 1
    {
        let mut seen = rustc_hash::FxHashSet::default();
        if !elems.iter().all(|e| seen.insert(e.labels.share_id())) {
            return Err(exec("vector cannot contain metrics with the same labelset"));
        }
    }
    Ok(())
}

/// Translates a parsed selector into storage matchers.
pub fn matchers(vs: &VectorSelector) -> Result<Vec<Matcher>, QueryError> {
    if !vs.matchers.or_matchers.is_empty() {
        return Err(QueryError::BadData(
            "`or` inside a selector is not supported yet".into(),
        ));
    }
    let mut out = Vec::new();
    if let Some(name) = &vs.name {
        out.push(Matcher::equal(METRIC_NAME, name));
    }
    for m in &vs.matchers.matchers {
        let op = match &m.op {
            PMatchOp::Equal => MatchOp::Equal(m.value.clone()),
            PMatchOp::NotEqual => MatchOp::NotEqual(m.value.clone()),
            PMatchOp::Re(r) => MatchOp::Regex(r.clone()),
            PMatchOp::NotRe(r) => MatchOp::NotRegex(r.clone()),
        };
        out.push(Matcher {
            name: m.name.clone(),
            op,
        });
    }
    Ok(out)
}

/// How far back of an evaluation time an expression reads (ranges and offsets nested in it).
fn reach(e: &Expr) -> i64 {
    match e {
        Expr::MatrixSelector(m) => dur_ms(m.range),
        Expr::Subquery(s) => dur_ms(s.range) + offset_ms(&s.offset).max(0) + reach(&s.expr),
        Expr::Paren(p) => reach(&p.expr),
        Expr::Unary(u) => reach(&u.expr),
        Expr::Binary(b) => reach(&b.lhs).max(reach(&b.rhs)),
        Expr::Aggregate(a) => reach(&a.expr).max(a.param.as_ref().map_or(0, |p| reach(p))),
        Expr::Call(c) => c.args.args.iter().map(|a| reach(a)).max().unwrap_or(0),
        _ => 0,
    }
}

/// Evaluates expressions for one query.
pub struct Evaluator<'a> {
    storage: &'a dyn Querier,
    pub(super) lookback: i64,
    max_samples: usize,
    start: i64,
    end: i64,
    /// The first step of the innermost range being evaluated: the query's start, or a
    /// subquery's first inner step. Prometheus evaluates a step-invariant expression once,
    /// there (see [`step_invariant`]).
    range_start: i64,
    /// The last step of that range.
    range_end: i64,
    /// Subqueries whose inner grid has been evaluated, and whether that grid is one step.
    subquery_grids: FxHashMap<usize, bool>,
    /// How many aggregation parameters are being evaluated (see [`Evaluator::at_time`]).
    in_param: u32,
    /// Per selector: whether two of its series differ only in the metric name.
    name_collisions: FxHashMap<usize, bool>,
    /// Per node and output label set: the series it came from (see [`Evaluator::one_source`]).
    sources: FxHashMap<(usize, Labels), Labels>,
    extra: i64,
    /// Per selector text, the span of sample times the query may read ([`select::read_spans`]).
    spans: HashMap<String, (i64, i64)>,
    /// Selector data by the selector node's address (the AST outlives the evaluator), shared
    /// by every step instead of copied.
    cache: FxHashMap<usize, Arc<Vec<SeriesData>>>,
    /// The same by the selector's text: one read for every occurrence of a selector, so
    /// `x or x * 2` sees one state of `x` even while samples arrive (two reads could differ
    /// by a sample appended between them), and reads it once.
    by_text: HashMap<String, Arc<Vec<SeriesData>>>,
    loaded: usize,
    deadline: Option<std::time::Instant>,
    /// Nodes evaluated so far (the deadline is checked every 64).
    evals: u64,
    /// The stack address of the outermost [`Evaluator::eval`] (0 until the first call) and
    /// how far below it evaluation may recurse (see [`STACK_BUDGET`]).
    stack_top: usize,
    stack_budget: usize,
    /// Compiled regular expressions of `label_replace`, by pattern.
    pub(super) regexes: HashMap<String, regex::Regex>,
    /// Subquery inner results by (subquery node, evaluation time): the windows of consecutive
    /// steps overlap, so each inner step is evaluated once per query.
    subquery_steps: FxHashMap<(usize, i64), Val>,
    /// Label sets derived from another by an operation (a matching signature, an aggregation's
    /// group), by (AST node, which derivation, input identity). The input is kept alive in the
    /// value, so its identity is not reused while cached; equal inputs at every step of a range
    /// query then cost one lookup and share one output `Arc`.
    derived: FxHashMap<(usize, u8, usize), (Labels, Labels)>,
    /// Per selector, whether each of its series holds a stale marker anywhere: windows of the
    /// series that hold none need no filtering, which makes `last_over_time` and
    /// `count_over_time` constant-time per step and halves the scans of the others.
    stale: FxHashMap<usize, Arc<Vec<bool>>>,
    /// Per selector, each series' counter-reset prefix sums ([`f::reset_prefix`]).
    resets: FxHashMap<usize, Arc<Vec<Vec<f64>>>>,
    /// One shared copy of every derived label set.
    interned: rustc_hash::FxHashSet<Labels>,
    /// Per (selector, range): each series' last window, advanced step by step (see [`window`]).
    cursors: FxHashMap<(usize, i64), Vec<Cursor>>,
    /// The range query's step (0 for instant queries).
    step: i64,
    /// Rollup buckets by (selector, resolution) (see `rollups`).
    rollups: FxHashMap<(usize, i64), Arc<Vec<crate::metrics::storage::RollupData>>>,
    /// Per selector, each series' labels without the name, by position: range functions look
    /// them up by index at every step instead of hashing.
    unnamed_by_selector: FxHashMap<usize, Arc<Vec<Labels>>>,
    /// `rate` / `increase` of a range selector at every step of the range query, computed
    /// series by series on first use, by (selector, rate?); `None`: not tabled (see
    /// `rate_table`).
    pub(super) rate_tables: FxHashMap<(usize, bool), Option<Arc<RateTable>>>,
}

/// A range function's value for every step (rows) and series (columns) of a range query.
pub(super) struct RateTable {
    /// Series per step.
    pub(super) width: usize,
    /// `width` values per step; `None` where the series has no value at that step.
    pub(super) values: Vec<Option<f64>>,
}

/// A series' window at the last evaluation time: `(te, lo, hi)`.
pub(super) type Cursor = (i64, usize, usize);

/// Fails with [`QueryError::Timeout`] once `deadline` has passed (for loops that run outside
/// [`Evaluator::eval`], on its thread or others).
pub(super) fn check_deadline(deadline: Option<std::time::Instant>) -> Result<(), QueryError> {
    match deadline {
        Some(d) if std::time::Instant::now() >= d => {
            Err(QueryError::Timeout("expression evaluation"))
        }
        _ => Ok(()),
    }
}

/// Advances `i` while `pred` holds: a few steps one by one (a range query's next step usually
/// moves a window by a sample or two), then a binary search for long jumps.
fn advance(s: &[Sample], mut i: usize, pred: impl Fn(&Sample) -> bool) -> usize {
    for _ in 0..8 {
        match s.get(i) {
            Some(x) if pred(x) => i += 1,
            _ => return i,
        }
    }
    i + s[i..].partition_point(pred)
}

/// The samples of `s` in `[te - range, te]` as `lo..hi`, moving the series' cursor forward
/// from its last window when `te` did not go back (the steps of a range query), searching
/// afresh otherwise.
pub(super) fn window(cur: &mut Cursor, s: &[Sample], te: i64, range: i64) -> (usize, usize) {
    let (last, lo, hi) = *cur;
    let (lo, hi) = if last == i64::MIN || te < last {
        (
            s.partition_point(|x| x.0 < te - range),
            s.partition_point(|x| x.0 <= te),
        )
    } else {
        (
            advance(s, lo, |x| x.0 < te - range),
            advance(s, hi, |x| x.0 <= te),
        )
    };
    let hi = hi.max(lo);
    *cur = (te, lo, hi);
    (lo, hi)
}

impl<'a> Evaluator<'a> {
    /// An evaluator for a query over `[start, end]` (equal for instant queries).
    pub fn new(
        storage: &'a dyn Querier,
        lookback: i64,
        max_samples: usize,
        start: i64,
        end: i64,
        root: &Expr,
    ) -> Self {
        Evaluator {
            storage,
            lookback,
            max_samples,
            start,
            end,
            range_start: start,
            range_end: end,
            subquery_grids: FxHashMap::default(),
            in_param: 0,
            name_collisions: FxHashMap::default(),
            sources: FxHashMap::default(),
            extra: lookback + reach(root),
            spans: select::read_spans(root, start, end, lookback),
            cache: FxHashMap::default(),
            by_text: HashMap::new(),
            loaded: 0,
            deadline: None,
            evals: 0,
            stack_top: 0,
            stack_budget: super::DEFAULT_STACK_BUDGET,
            regexes: HashMap::new(),
            subquery_steps: FxHashMap::default(),
            derived: FxHashMap::default(),
            stale: FxHashMap::default(),
            resets: FxHashMap::default(),
            interned: Default::default(),
            cursors: FxHashMap::default(),
            unnamed_by_selector: FxHashMap::default(),
            rate_tables: FxHashMap::default(),
            step: 0,
            rollups: FxHashMap::default(),
        }
    }

    /// For each series of [`Evaluator::data`]`(vs)`, its counter-reset prefix sums.
    pub(super) fn reset_prefixes(
        &mut self,
        vs: &VectorSelector,
        data: &[SeriesData],
    ) -> Arc<Vec<Vec<f64>>> {
        let key = vs as *const VectorSelector as usize;
        self.resets
            .entry(key)
            .or_insert_with(|| Arc::new(data.iter().map(|s| f::reset_prefix(&s.samples)).collect()))
            .clone()
    }

    /// The cursors of a selector's `n` series for windows of `range` (put them back with
    /// [`Evaluator::put_cursors`]).
    pub(super) fn take_cursors(
        &mut self,
        vs: &VectorSelector,
        range: i64,
        n: usize,
    ) -> Vec<Cursor> {
        let key = (vs as *const VectorSelector as usize, range);
        let mut c = self.cursors.remove(&key).unwrap_or_default();
        c.resize(n, (i64::MIN, 0, 0));
        c
    }

    /// Stores cursors taken with [`Evaluator::take_cursors`].
    pub(super) fn put_cursors(&mut self, vs: &VectorSelector, range: i64, c: Vec<Cursor>) {
        self.cursors
            .insert((vs as *const VectorSelector as usize, range), c);
    }

    /// For each series of [`Evaluator::data`]`(vs)`, its labels without the metric name.
    pub(super) fn unnamed_all(
        &mut self,
        vs: &VectorSelector,
        data: &[SeriesData],
    ) -> Arc<Vec<Labels>> {
        let key = vs as *const VectorSelector as usize;
        if let Some(v) = self.unnamed_by_selector.get(&key) {
            return v.clone();
        }
        let v: Arc<Vec<Labels>> = Arc::new(data.iter().map(|s| self.unnamed(&s.labels)).collect());
        self.unnamed_by_selector.insert(key, v.clone());
        v
    }

    /// Whether two of the selector's series have the same labels once the name is dropped
    /// (`names` from [`Evaluator::unnamed_all`]); computed once per selector.
    pub(super) fn names_collide(&mut self, vs: &VectorSelector, names: &[Labels]) -> bool {
        let key = vs as *const VectorSelector as usize;
        if let Some(&c) = self.name_collisions.get(&key) {
            return c;
        }
        let mut seen = FxHashSet::default();
        let c = !names.iter().all(|l| seen.insert(l));
        self.name_collisions.insert(key, c);
        c
    }

    /// Prometheus checks the whole result of a unary minus or a range-vector function — all
    /// steps of the range — for one label set coming from two series (which differ only by
    /// the dropped name), not each step alone: `labels` at `node` must always come from
    /// `source`.
    pub(super) fn one_source(
        &mut self,
        node: usize,
        labels: &Labels,
        source: &Labels,
    ) -> Result<(), QueryError> {
        match self.sources.get(&(node, labels.clone())) {
            Some(s) if s != source => {
                Err(exec("vector cannot contain metrics with the same labelset"))
            }
            Some(_) => Ok(()),
            None => {
                self.sources.insert((node, labels.clone()), source.clone());
                Ok(())
            }
        }
    }

    /// For each series of [`Evaluator::data`]`(vs)`, whether it holds a stale marker.
    pub(super) fn stale_flags(
        &mut self,
        vs: &VectorSelector,
        data: &[SeriesData],
    ) -> Arc<Vec<bool>> {
        let key = vs as *const VectorSelector as usize;
        self.stale
            .entry(key)
            .or_insert_with(|| {
                Arc::new(
                    data.iter()
                        .map(|s| s.samples.iter().any(|x| is_stale_marker(x.1)))
                        .collect(),
                )
            })
            .clone()
    }

    /// `f(l)`, memoized per (`node`, `tag`, label set) for the query.
    pub(super) fn derive(
        &mut self,
        node: usize,
        tag: u8,
        l: &Labels,
        f: impl FnOnce(&Labels) -> Labels,
    ) -> Labels {
        let key = (node, tag, l.share_id());
        if let Some((_, out)) = self.derived.get(&key) {
            return out.clone();
        }
        // Interned: equal results of different inputs share one `Arc`, so callers can group
        // and match by identity.
        let out = self.intern(f(l));
        self.derived.insert(key, (l.clone(), out.clone()));
        out
    }

    /// The shared copy of `l` for this query (see [`Evaluator::derive`]).
    pub(super) fn intern(&mut self, l: Labels) -> Labels {
        match self.interned.get(&l) {
            Some(existing) => existing.clone(),
            None => {
                self.interned.insert(l.clone());
                l
            }
        }
    }

    /// [`drop_name`], memoized per label set for the query: a range query asks for the same
    /// series' unnamed labels at every step.
    pub(super) fn unnamed(&mut self, l: &Labels) -> Labels {
        self.derive(0, u8::MAX, l, drop_name)
    }

    /// Sets the range query's step (rollups answer coarse steps).
    pub fn set_step(&mut self, step: i64) {
        self.step = step;
    }

    pub(super) fn step(&self) -> i64 {
        self.step
    }

    /// The index of `t` among the range query's steps, if it is one.
    pub(super) fn step_index(&self, t: i64) -> Option<usize> {
        let step = self.step;
        (step > 0 && t >= self.start && t <= self.end && (t - self.start) % step == 0)
            .then(|| ((t - self.start) / step) as usize)
    }

    /// The range query's steps.
    pub(super) fn steps(&self) -> usize {
        if self.step <= 0 || self.end < self.start {
            return 0;
        }
        ((self.end - self.start) / self.step) as usize + 1
    }

    /// The range query's first step.
    pub(super) fn first_step(&self) -> i64 {
        self.start
    }

    /// The span of sample times the query may read for `vs` ([`select::read_spans`]).
    pub(super) fn read_span(&self, vs: &VectorSelector) -> Option<(i64, i64)> {
        self.spans.get(&vs.to_string()).copied()
    }

    pub(super) fn start_ms(&self) -> i64 {
        self.start
    }

    pub(super) fn end_ms(&self) -> i64 {
        self.end
    }

    pub(super) fn storage(&self) -> &dyn Querier {
        self.storage
    }

    pub(super) fn sample_budget(&self) -> usize {
        self.max_samples.saturating_sub(self.loaded)
    }

    pub(super) fn count_loaded(&mut self, n: usize) {
        self.loaded += n;
    }

    /// The error of a query that would hold more than `query_max_samples` points.
    pub(super) fn too_many_samples(&self) -> QueryError {
        super::too_many_samples(self.max_samples)
    }

    /// Counts `n` more points held by the query; fails once they pass the limit.
    pub fn count_points(&mut self, n: usize) -> Result<(), QueryError> {
        self.loaded = self.loaded.saturating_add(n);
        if self.loaded > self.max_samples {
            return Err(self.too_many_samples());
        }
        Ok(())
    }

    pub(super) fn rollup_cache(
        &mut self,
    ) -> &mut FxHashMap<(usize, i64), Arc<Vec<crate::metrics::storage::RollupData>>> {
        &mut self.rollups
    }

    /// How many bytes of stack evaluation may use below its first call: nesting beyond it
    /// fails the query instead of overflowing the thread's stack.
    pub fn set_stack_budget(&mut self, bytes: usize) {
        self.stack_budget = bytes;
    }

    /// Makes evaluation fail with [`QueryError::Timeout`] after `deadline`.
    pub fn set_deadline(&mut self, deadline: std::time::Instant) {
        self.deadline = Some(deadline);
    }

    /// When the query must have finished, if it has a limit.
    pub(super) fn deadline(&self) -> Option<std::time::Instant> {
        self.deadline
    }

    pub(super) fn at_time(&self, at: &Option<AtModifier>) -> Option<i64> {
        select::resolve_at(at, self.start, self.end, self.in_param > 0)
    }

    /// Evaluates `e` at `t` (ms).
    pub fn eval(&mut self, e: &Expr, t: i64) -> Result<Val, QueryError> {
        // Reading the clock costs about as much as evaluating a small node, so it is read at
        // every 64th node: still many times a second in any evaluation that runs long.
        // The first node checks too, so an expired deadline fails at once.
        let n = self.evals;
        self.evals = n.wrapping_add(1);
        let here = std::ptr::addr_of!(n) as usize;
        if self.stack_top == 0 {
            self.stack_top = here;
        }
        if self.stack_top.saturating_sub(here) > self.stack_budget {
            return Err(exec(
                "expression nests too deeply to evaluate (stack budget exhausted)",
            ));
        }
        if n.is_multiple_of(64)
            && self
                .deadline
                .is_some_and(|d| std::time::Instant::now() >= d)
        {
            return Err(QueryError::Timeout("expression evaluation"));
        }
        match e {
            Expr::NumberLiteral(n) => Ok(Val::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Val::Str(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Val::Scalar(v) => Ok(Val::Scalar(-v)),
                Val::Vector(v) => {
                    let node = u as *const _ as usize;
                    let mut out = Vec::with_capacity(v.len());
                    for mut x in v {
                        x.v = -x.v;
                        let unnamed = self.unnamed(&x.labels);
                        self.one_source(node, &unnamed, &x.labels)?;
                        x.labels = unnamed;
                        out.push(x);
                    }
                    let out = Val::Vector(out);
                    unique_label_sets(&out)?;
                    Ok(out)
                }
                _ => Err(exec("unary minus needs a scalar or an instant vector")),
            },
            Expr::VectorSelector(vs) => {
                let te = self.at_time(&vs.at).unwrap_or(t) - offset_ms(&vs.offset);
                let lookback = self.lookback;
                // In an aggregation's parameter Prometheus 2.42 slides an `@` selector on with
                // the steps (see `call_window`): the lookback shrinks by the step's distance
                // from the range's first.
                let reach = match self.at_time(&vs.at) {
                    Some(_) if self.in_param > 0 => {
                        lookback.saturating_sub(t.saturating_sub(self.range_start).max(0))
                    }
                    _ => lookback,
                };
                let data = self.data(vs)?;
                let mut cursors = self.take_cursors(vs, lookback, data.len());
                let out = Val::Vector(
                    data.iter()
                        .zip(cursors.iter_mut())
                        .filter_map(|(s, cur)| {
                            let (_, idx) = window(cur, &s.samples, te, lookback);
                            let x = *s.samples.get(idx.checked_sub(1)?)?;
                            // [te - lookback, te], closed on the left as in Prometheus 2.x, the
                            // compliance reference (3.x opened it).
                            (reach >= 0 && x.0 >= te - reach && !is_stale_marker(x.1)).then(|| {
                                Elem {
                                    labels: s.labels.clone(),
                                    t: x.0,
                                    v: x.1,
                                }
                            })
                        })
                        .collect(),
                );
                self.put_cursors(vs, lookback, cursors);
                Ok(out)
            }
            Expr::MatrixSelector(ms) => {
                let te = self.at_time(&ms.vs.at).unwrap_or(t) - offset_ms(&ms.vs.offset);
                let range = dur_ms(ms.range);
                Ok(Val::Matrix(
                    self.data(&ms.vs)?
                        .iter()
                        .filter_map(|s| {
                            // [te - range, te], closed on the left as in Prometheus 2.x.
                            let lo = s.samples.partition_point(|x| x.0 < te - range);
                            let hi = s.samples.partition_point(|x| x.0 <= te);
                            let samples: Vec<Sample> = s.samples[lo..hi.max(lo)]
                                .iter()
                                .copied()
                                .filter(|x| !is_stale_marker(x.1))
                                .collect();
                            (!samples.is_empty()).then(|| SeriesData {
                                labels: s.labels.clone(),
                                samples,
                            })
                        })
                        .collect(),
                ))
            }
            Expr::Subquery(sq) => self.subquery(sq, t),
            Expr::Call(c) => {
                let v = self.call(c, t)?;
                unique_label_sets(&v)?;
                Ok(v)
            }
            Expr::Aggregate(a) => self.aggregate(a, t),
            Expr::Binary(b) => {
                let v = self.binary(b, t)?;
                unique_label_sets(&v)?;
                Ok(v)
            }
            Expr::Extension(_) => Err(QueryError::BadData(
                "extension expressions are not supported".into(),
            )),
        }
    }

    fn subquery(&mut self, sq: &SubqueryExpr, t: i64) -> Result<Val, QueryError> {
        let off = offset_ms(&sq.offset);
        let range = dur_ms(sq.range);
        let step = subquery_step(sq);
        let key = sq as *const SubqueryExpr as usize;
        let no_labels = Labels::default();
        self.subquery_grid(sq)?;
        // This window: the steps in [te - range, te] (closed on the left as in Prometheus 2.x).
        let te = self.at_time(&sq.at).unwrap_or(t) - off;
        let mut series = Assembly::default();
        self.subquery_steps_into(
            sq,
            key,
            align_up(te.saturating_sub(range), step),
            te,
            step,
            Some(&mut series),
            &no_labels,
        )?;
        // Prometheus evaluates a one-step grid, and a step-invariant inner expression (`x @
        // start()`), as an instant query and keeps that vector's order (`topk`'s best-first
        // order, say), which then decides which of equal values an outer `topk` keeps; any
        // other grid's series come in no defined order (a Go map's), and sorted is as good
        // as any.
        if self.subquery_grids.get(&key) == Some(&true) {
            return Ok(Val::Matrix(series.in_order()));
        }
        Ok(Val::Matrix(series.finish()))
    }

    /// As Prometheus does, the inner expression is evaluated once for the whole range the
    /// subquery covers — from the first window's start to the last window's end (`@` pins
    /// both), on a grid of multiples of the step — the first time the subquery is met; every
    /// window then reads its steps. Steps no window covers are evaluated too, so a query fails
    /// where Prometheus' does.
    fn subquery_grid(&mut self, sq: &SubqueryExpr) -> Result<(), QueryError> {
        let off = offset_ms(&sq.offset);
        let range = dur_ms(sq.range);
        let step = subquery_step(sq);
        let key = sq as *const SubqueryExpr as usize;
        if self.subquery_grids.contains_key(&key) {
            return Ok(());
        }
        let no_labels = Labels::default();
        let (ps, pe) = match self.at_time(&sq.at) {
            Some(at) => (at, at),
            None => (self.range_start, self.range_end),
        };
        let (gs, ge) = (
            align_up(ps.saturating_sub(off).saturating_sub(range), step),
            pe.saturating_sub(off),
        );
        // The number of inner steps is known before anything is allocated: more than the
        // query may hold is refused at once (`sum_over_time(vector(1)[100y:1ms])`).
        let steps = (ge as i128 - gs as i128) / step as i128 + 1;
        if steps > self.max_samples as i128 {
            return Err(self.too_many_samples());
        }
        self.subquery_grids
            .insert(key, steps == 1 || step_invariant(&sq.expr));
        let outer = (self.range_start, self.range_end);
        (self.range_start, self.range_end) = (gs, ge);
        // A step-invariant inner expression is evaluated once even with no step at all.
        // Otherwise a grid without a step evaluates nothing — except that Prometheus
        // evaluates every argument of every node over the range before stepping through it,
        // so a subquery nested inside still covers its own, non-empty range (and fails the
        // query where it fails: `holt_winters` with a smoothing factor of 1), and a
        // step-invariant part (`label_replace(x @ end(), …)` on one side of an operator) is
        // still evaluated once (and fails the query where it fails: duplicate label sets).
        let result = if gs > ge && step_invariant(&sq.expr) {
            self.eval(&sq.expr, gs).map(|_| ())
        } else if gs > ge {
            let mut nested = Vec::new();
            empty_range_work(&sq.expr, &mut nested);
            nested.into_iter().try_for_each(|n| match n {
                EmptyRange::Grid(n) => self.subquery_grid(n),
                EmptyRange::Once(e) => self.eval(e, gs).map(|_| ()),
            })
        } else {
            self.subquery_steps_into(sq, key, gs, ge, step, None, &no_labels)
        };
        (self.range_start, self.range_end) = outer;
        result
    }

    /// The subquery's steps from `ts` to `te`, evaluated unless cached, into `series` if given.
    #[allow(clippy::too_many_arguments)]
    fn subquery_steps_into(
        &mut self,
        sq: &SubqueryExpr,
        key: usize,
        mut ts: i64,
        te: i64,
        step: i64,
        mut series: Option<&mut Assembly>,
        no_labels: &Labels,
    ) -> Result<(), QueryError> {
        while ts <= te {
            let v = match self.subquery_steps.get(&(key, ts)) {
                Some(v) => v.clone(),
                None => {
                    let v = self.eval(&sq.expr, ts)?;
                    // Each inner step is held for the query: it counts as loaded samples.
                    self.count_points(match &v {
                        Val::Vector(v) => v.len().max(1),
                        _ => 1,
                    })?;
                    self.subquery_steps.insert((key, ts), v.clone());
                    v
                }
            };
            match (v, series.as_deref_mut()) {
                (_, None) => {}
                (Val::Vector(v), Some(series)) => {
                    for x in v {
                        series.push(x.labels, Sample(ts, x.v));
                    }
                }
                (Val::Scalar(v), Some(series)) => series.push(no_labels.clone(), Sample(ts, v)),
                _ => return Err(exec("subquery needs an instant vector or a scalar")),
            }
            ts = match ts.checked_add(step) {
                Some(n) => n,
                None => break,
            };
        }
        Ok(())
    }

    pub(super) fn vector(&mut self, e: &Expr, t: i64) -> Result<Vec<Elem>, QueryError> {
        match self.eval(e, t)? {
            Val::Vector(v) => Ok(v),
            _ => Err(exec("expected an instant vector")),
        }
    }

    pub(super) fn matrix(&mut self, e: &Expr, t: i64) -> Result<Vec<SeriesData>, QueryError> {
        match self.eval(e, t)? {
            Val::Matrix(m) => Ok(m),
            _ => Err(exec("expected a range vector")),
        }
    }

    pub(super) fn scalar(&mut self, e: &Expr, t: i64) -> Result<f64, QueryError> {
        match self.eval(e, t)? {
            Val::Scalar(s) => Ok(s),
            _ => Err(exec("expected a scalar")),
        }
    }

    pub(super) fn string(&mut self, e: &Expr, t: i64) -> Result<String, QueryError> {
        match self.eval(e, t)? {
            Val::Str(s) => Ok(s),
            _ => Err(exec("expected a string")),
        }
    }
}

/// Series collected step by step (a range query's result, a subquery's inner steps). Most steps hand back the
/// very label sets of the step before (shared `Arc`s from the selector cache and the memoized
/// derivations), so a series is found by identity first and by value only when that misses.
#[derive(Default)]
pub(super) struct Assembly {
    /// Label-set identity → series index; the label set is held, so the identity stays unique.
    by_id: FxHashMap<usize, (Labels, usize)>,
    by_value: FxHashMap<Labels, usize>,
    series: Vec<SeriesData>,
}

impl Assembly {
    pub(super) fn push(&mut self, labels: Labels, s: Sample) {
        let id = labels.share_id();
        let i = match self.by_id.get(&id) {
            Some((_, i)) => *i,
            None => {
                let i = match self.by_value.get(&labels) {
                    Some(i) => *i,
                    None => {
                        self.series.push(SeriesData {
                            labels: labels.clone(),
                            samples: Vec::new(),
                        });
                        self.by_value.insert(labels.clone(), self.series.len() - 1);
                        self.series.len() - 1
                    }
                };
                self.by_id.insert(id, (labels, i));
                i
            }
        };
        self.series[i].samples.push(s);
    }

    /// The series in the order first seen.
    pub(super) fn in_order(self) -> Vec<SeriesData> {
        self.series
    }

    pub(super) fn finish(mut self) -> Vec<SeriesData> {
        self.series.sort_by(|a, b| a.labels.cmp(&b.labels));
        self.series
    }
}

/// A subquery's step: its own, else the default evaluation interval (1m, as Prometheus').
fn subquery_step(sq: &SubqueryExpr) -> i64 {
    sq.step.map(dur_ms).filter(|s| *s > 0).unwrap_or(60_000)
}

/// The first multiple of `step` at or after `from`.
fn align_up(from: i64, step: i64) -> i64 {
    let ts = from.div_euclid(step).saturating_mul(step);
    if ts < from {
        ts.saturating_add(step)
    } else {
        ts
    }
}

/// What Prometheus still evaluates of an expression over a range without a step.
enum EmptyRange<'e> {
    /// A subquery (not inside another): over its own range.
    Grid(&'e SubqueryExpr),
    /// A step-invariant part: once, at the range's start.
    Once(&'e Expr),
}

/// The parts of `e` Prometheus evaluates over a range without a step, in its order (every
/// argument of every node, left to right): subqueries, and the largest step-invariant parts
/// that are not literals.
fn empty_range_work<'e>(e: &'e Expr, out: &mut Vec<EmptyRange<'e>>) {
    if step_invariant(e) {
        if !matches!(e, Expr::NumberLiteral(_) | Expr::StringLiteral(_)) {
            out.push(EmptyRange::Once(e));
        }
        return;
    }
    match e {
        Expr::Subquery(sq) => out.push(EmptyRange::Grid(sq)),
        Expr::Paren(p) => empty_range_work(&p.expr, out),
        Expr::Unary(u) => empty_range_work(&u.expr, out),
        Expr::Binary(b) => {
            empty_range_work(&b.lhs, out);
            empty_range_work(&b.rhs, out);
        }
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                empty_range_work(p, out);
            }
            empty_range_work(&a.expr, out);
        }
        Expr::Call(c) => c.args.args.iter().for_each(|a| empty_range_work(a, out)),
        _ => {}
    }
}

/// Whether `e` has the same value at every evaluation time, by Prometheus' rule: selectors
/// and subqueries pinned with `@`, literals, and what is built only from those (functions
/// that read the evaluation time excepted).
fn step_invariant(e: &Expr) -> bool {
    match e {
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => true,
        Expr::VectorSelector(vs) => vs.at.is_some(),
        Expr::MatrixSelector(ms) => ms.vs.at.is_some(),
        Expr::Subquery(sq) => sq.at.is_some(),
        Expr::Paren(p) => step_invariant(&p.expr),
        Expr::Unary(u) => step_invariant(&u.expr),
        Expr::Binary(b) => step_invariant(&b.lhs) && step_invariant(&b.rhs),
        // The parameter does not count (Prometheus 2.42 looks at the expression only).
        Expr::Aggregate(a) => step_invariant(&a.expr),
        Expr::Call(c) => call_step_invariant(c),
        _ => false,
    }
}

/// Whether Prometheus 2.42 evaluates the call once for a whole range: its function is `@`-safe
/// (not one that reads the evaluation time) and every argument is step-invariant.
fn call_step_invariant(c: &Call) -> bool {
    !matches!(
        c.func.name,
        "days_in_month"
            | "day_of_month"
            | "day_of_week"
            | "day_of_year"
            | "hour"
            | "minute"
            | "month"
            | "year"
            | "predict_linear"
            | "time"
    ) && c.args.args.iter().all(|a| step_invariant(a))
}

/// The labels without the metric name.
pub fn drop_name(l: &Labels) -> Labels {
    Labels::from_pairs(l.iter().filter(|(k, _)| *k != METRIC_NAME))
}

#[cfg(test)]
mod window_tests {
    use super::*;

    #[test]
    fn cursors_find_the_same_windows_as_a_search_forward_and_back() {
        let s: Vec<Sample> = (0..500)
            .map(|i| Sample(i * 7_000 + (i % 3) * 1_000, i as f64))
            .collect();
        let mut cur: Cursor = (i64::MIN, 0, 0);
        // Forward in small and large steps, then back, then forward again.
        let times: Vec<i64> = (0..200)
            .map(|k| k * 5_000)
            .chain([3_000_000, 2_000_000, 100_000, 100_000, 3_400_000, 3_500_000])
            .collect();
        for range in [0, 60_000, 300_000] {
            for &te in &times {
                let want = (
                    s.partition_point(|x| x.0 < te - range),
                    s.partition_point(|x| x.0 <= te)
                        .max(s.partition_point(|x| x.0 < te - range)),
                );
                assert_eq!(
                    window(&mut cur, &s, te, range),
                    want,
                    "te={te} range={range}"
                );
            }
        }
    }
}
