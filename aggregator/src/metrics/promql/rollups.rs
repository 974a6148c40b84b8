//! Answering `min/max/sum/count/avg/last_over_time` from rollups when a range query is
//! coarse enough: the step, the range and every evaluation time (after `offset`) are
//! multiples of a rollup resolution (1 hour preferred, else 5 minutes) and the step is at
//! least that resolution. The results equal the raw computation (see
//! `crate::metrics::storage::rollup`) — sums and averages to the last bits only, since raw windows are
//! summed with compensation as Prometheus sums them and rollups add bucket sums; the storage reads pre-computed buckets for compacted windows,
//! so a 30-day panel at a 1-hour step reads 720 buckets per series instead of 259 200
//! samples — and keeps answering after raw retention has deleted the samples.

use std::sync::Arc;

use promql_parser::parser::{Call, Expr, MatrixSelector};

use super::QueryError;
use super::eval::{Elem, Evaluator, Val, matchers, offset_ms};
use crate::metrics::storage::RollupData;
use crate::metrics::storage::rollup::{self, Agg, RESOLUTIONS};

impl Evaluator<'_> {
    /// The resolution a call may use, if any.
    fn rollup_resolution(&self, ms: &MatrixSelector) -> Option<i64> {
        let step = self.step();
        if step <= 0 || ms.vs.at.is_some() {
            return None;
        }
        let off = offset_ms(&ms.vs.offset);
        let range = ms.range.as_millis() as i64;
        RESOLUTIONS.into_iter().find(|&r| {
            step >= r
                && step % r == 0
                && range % r == 0
                && (self.start_ms() - off).rem_euclid(r) == 0
        })
    }

    /// `c` evaluated from rollups at `t`, or `None` when the query is not eligible.
    pub(super) fn over_time_from_rollups(
        &mut self,
        c: &Call,
        t: i64,
    ) -> Result<Option<Val>, QueryError> {
        let Some(agg) = Agg::for_function(c.func.name) else {
            return Ok(None);
        };
        let Some(Expr::MatrixSelector(ms)) = c.args.args.first().map(|a| a.as_ref()) else {
            return Ok(None);
        };
        let Some(res) = self.rollup_resolution(ms) else {
            return Ok(None);
        };
        let off = offset_ms(&ms.vs.offset);
        let range = ms.range.as_millis() as i64;
        let te = t - off;
        if te.rem_euclid(res) != 0 {
            // A subquery's inner steps need not be aligned: raw samples answer those.
            return Ok(None);
        }
        let data = self.rollup_data(ms, res, range, off)?;
        let keep_name = agg == Agg::Last;
        let mut out = Vec::with_capacity(data.len());
        for d in data.iter() {
            if let Some(v) = rollup::window(&d.buckets, te, range, agg) {
                let labels = if keep_name {
                    d.labels.clone()
                } else {
                    self.unnamed(&d.labels)
                };
                out.push(Elem { labels, t, v });
            }
        }
        Ok(Some(Val::Vector(out)))
    }

    fn rollup_data(
        &mut self,
        ms: &MatrixSelector,
        res: i64,
        range: i64,
        off: i64,
    ) -> Result<Arc<Vec<RollupData>>, QueryError> {
        let key = (&ms.vs as *const _ as usize, res);
        if let Some(d) = self.rollup_cache().get(&key) {
            return Ok(d.clone());
        }
        // Every time the selector can be read at: a subquery's inner steps reach back past
        // the query's start by its range (and an offset or `@` on it moves them).
        let (lo, hi) = self
            .read_span(&ms.vs)
            .unwrap_or((self.start_ms() - off - range, self.end_ms() - off));
        let budget = self.sample_budget();
        let mut d = self
            .storage()
            .select_rollup(&matchers(&ms.vs)?, lo, hi, res, budget)?;
        // In label order, as raw series are read: which of equal values `topk` keeps, or
        // `sort` puts first, follows this order.
        d.sort_by(|a, b| a.labels.cmp(&b.labels));
        self.count_loaded(d.iter().map(|s| s.buckets.len()).sum());
        let d = Arc::new(d);
        self.rollup_cache().insert(key, d.clone());
        Ok(d)
    }
}
