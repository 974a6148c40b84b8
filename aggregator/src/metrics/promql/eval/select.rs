//! Reading a selector's series from storage, once per query.

use std::collections::HashMap;
use std::sync::Arc;

use promql_parser::parser::{AtModifier, Call, Expr, MatrixSelector, VectorSelector};

use super::{
    Evaluator, QueryError, SeriesData, call_step_invariant, dur_ms, matchers, offset_ms,
    subquery_step,
};

/// Per selector text, the span of sample times a query over `[start, end]` may read for it:
/// every evaluation time the selector can be met at (an enclosing subquery moves them back by
/// its range and offset, an `@` on it pins them — before or after the query's own range, and a
/// negative offset moves them later), less the selector's own offset and lookback or range.
/// Several occurrences of one text share one span, the hull of theirs.
pub(in crate::metrics::promql) fn read_spans(
    root: &Expr,
    start: i64,
    end: i64,
    lookback: i64,
) -> HashMap<String, (i64, i64)> {
    let mut out = HashMap::new();
    let mut stack: Vec<(&Expr, (i64, i64), bool)> = vec![(root, (start, end), false)];
    let pinned = |at: &Option<AtModifier>, span: (i64, i64), param: bool| match resolve_at(
        at, start, end, param,
    ) {
        Some(t) => (t, t),
        None => span,
    };
    while let Some((e, span, param)) = stack.pop() {
        let selector = match e {
            Expr::VectorSelector(vs) => Some((vs, lookback)),
            Expr::MatrixSelector(ms) => Some((&ms.vs, lookback.saturating_add(dur_ms(ms.range)))),
            _ => None,
        };
        if let Some((vs, back)) = selector {
            let (a, b) = pinned(&vs.at, span, param);
            let off = offset_ms(&vs.offset);
            let (lo, hi) = (
                a.saturating_sub(off).saturating_sub(back),
                b.saturating_sub(off),
            );
            let hull = out.entry(vs.to_string()).or_insert((lo, hi));
            *hull = (hull.0.min(lo), hull.1.max(hi));
            continue;
        }
        match e {
            Expr::Subquery(sq) => {
                let (a, b) = pinned(&sq.at, span, param);
                let off = offset_ms(&sq.offset);
                // Steps from the first multiple of the step in the window to its end; an
                // empty window is still evaluated once at that first multiple, at most a
                // step past the end.
                let inner = (
                    a.saturating_sub(off).saturating_sub(dur_ms(sq.range)),
                    b.saturating_sub(off).saturating_add(subquery_step(sq)),
                );
                stack.push((&sq.expr, inner, param));
            }
            Expr::Aggregate(a) => {
                stack.push((&a.expr, span, param));
                if let Some(p) = &a.param {
                    stack.push((p, span, true));
                }
            }
            Expr::Paren(p) => stack.push((&p.expr, span, param)),
            Expr::Unary(u) => stack.push((&u.expr, span, param)),
            Expr::Binary(b) => {
                stack.push((&b.lhs, span, param));
                stack.push((&b.rhs, span, param));
            }
            Expr::Call(c) => stack.extend(c.args.args.iter().map(|a| (a.as_ref(), span, param))),
            _ => {}
        }
    }
    out
}

/// The time an `@` names, in a query over `[start, end]`. Prometheus 2.42 resolves `start()`
/// and `end()` in a pass that does not visit an aggregation's parameter: there (`in_param`)
/// they are ignored, as if absent.
pub(in crate::metrics::promql) fn resolve_at(
    at: &Option<AtModifier>,
    start: i64,
    end: i64,
    in_param: bool,
) -> Option<i64> {
    match at {
        Some(AtModifier::Start | AtModifier::End) if in_param => None,
        Some(AtModifier::Start) => Some(start),
        Some(AtModifier::End) => Some(end),
        Some(AtModifier::At(t)) => Some(super::super::clamp_time(
            match t.duration_since(std::time::UNIX_EPOCH) {
                Ok(d) => i128::try_from(d.as_millis()).unwrap_or(i128::MAX),
                Err(e) => -i128::try_from(e.duration().as_millis()).unwrap_or(i128::MAX),
            },
        )),
        None => None,
    }
}

impl Evaluator<'_> {
    /// The window `(te, range)` — samples in `[te - range, te]` — a call `c` reads of its range
    /// selector argument `ms` at `t`; `None` when it reads nothing.
    ///
    /// Prometheus 2.42 turns an `@` into an offset from the first step of the range being
    /// evaluated (the query's, or a subquery's). A step-invariant call is evaluated once, at
    /// that step, so its window sits at `@`. Any other call with an `@` range argument
    /// (`predict_linear`, or a parameter that is not constant, as in
    /// `quantile_over_time(scalar(y), x[5m] @ t)`), and any call inside an aggregation's
    /// parameter (a part of the tree 2.42's step-invariance pass does not visit), slides the
    /// window on with every step, over
    /// series read only up to `@`: the window keeps its end at `@`, loses `t - first step`
    /// from its start, and is empty once that passes the range. Instant queries never see it.
    pub(in crate::metrics::promql) fn call_window(
        &self,
        c: &Call,
        ms: &MatrixSelector,
        t: i64,
    ) -> Option<(i64, i64)> {
        let range = dur_ms(ms.range);
        let te = self
            .at_time(&ms.vs.at)
            .unwrap_or(t)
            .saturating_sub(offset_ms(&ms.vs.offset));
        match self.slide(c, &ms.vs.at, t) {
            None => Some((te, range)),
            Some(by) => {
                let slid = range.saturating_sub(by);
                (slid >= 0).then_some((te, slid))
            }
        }
    }

    /// How far a call's `@` range argument has slid at `t` ([`Evaluator::call_window`]);
    /// `None` where it does not slide (no `@`, or a step-invariant call outside a parameter).
    pub(in crate::metrics::promql) fn slide(
        &self,
        c: &Call,
        at: &Option<AtModifier>,
        t: i64,
    ) -> Option<i64> {
        self.at_time(at)?;
        if call_step_invariant(c) && self.in_param == 0 {
            return None;
        }
        Some(t.saturating_sub(self.range_start).max(0))
    }

    /// The series of `vs` with their samples over every time the query can read them at
    /// ([`read_spans`]), read once per selector text and shared.
    pub(in crate::metrics::promql) fn data(
        &mut self,
        vs: &VectorSelector,
    ) -> Result<Arc<Vec<SeriesData>>, QueryError> {
        let key = vs as *const VectorSelector as usize;
        if let Some(d) = self.cache.get(&key) {
            return Ok(d.clone());
        }
        let text = vs.to_string();
        if let Some(d) = self.by_text.get(&text) {
            let d = d.clone();
            self.cache.insert(key, d.clone());
            return Ok(d);
        }
        // Every selector of the tree has its span; one met elsewhere (none is, today) reads
        // what an unpinned selector of the query would.
        let (lo, hi) = match self.spans.get(&text) {
            Some(&span) => span,
            None => {
                let off = offset_ms(&vs.offset);
                let t = self.at_time(&vs.at);
                (
                    t.unwrap_or(self.start) - off - self.extra,
                    t.unwrap_or(self.end) - off,
                )
            }
        };
        let budget = self.max_samples.saturating_sub(self.loaded);
        let mut d = self.storage.select(&matchers(vs)?, lo, hi, budget)?;
        self.loaded += d.iter().map(|s| s.samples.len()).sum::<usize>();
        // In label order, as Prometheus hands series to its engine: the order decides which
        // of equal values `topk` keeps and in what order sums add up.
        d.sort_by(|a, b| a.labels.cmp(&b.labels));
        let d = Arc::new(d);
        self.cache.insert(key, d.clone());
        self.by_text.insert(text, d.clone());
        Ok(d)
    }
}
