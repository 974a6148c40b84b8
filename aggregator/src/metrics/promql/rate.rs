//! `rate` and `increase` of a range selector across a range query's steps, series by series:
//! each series' samples are swept once, in order, for all steps — step by step, every
//! series was visited at every step (a cache miss each on a large query).

use std::sync::Arc;

use promql_parser::parser::Expr;
use telltale_common::model::Sample;

use super::QueryError;
use super::eval::{Cursor, Elem, Evaluator, RateTable, Val, check_deadline, offset_ms, window};
use super::functions as f;
use crate::metrics::storage::SeriesData;

impl Evaluator<'_> {
    /// A range query of `rate` / `increase` of a plain range selector — the commonest panel
    /// — series by series: each series' samples are swept once, in order, for all steps,
    /// where step by step every series was visited at every step (a cache miss each on a
    /// large query) and every point was filed under its series by hash. The same points as
    /// [`Self::counter_rate`] at each step (`rate_point` is shared); `None` for any other
    /// expression, or when series would collide once their names are dropped (the general
    /// path reports that per step).
    pub(crate) fn counter_rate_range(
        &mut self,
        e: &Expr,
    ) -> Result<Option<Vec<SeriesData>>, QueryError> {
        let Expr::Call(c) = e else {
            return Ok(None);
        };
        let rate = match c.func.name {
            "rate" => true,
            "increase" => false,
            _ => return Ok(None),
        };
        let Some(Expr::MatrixSelector(ms)) = c.args.args.first().map(|a| a.as_ref()) else {
            return Ok(None);
        };
        let data = self.data(&ms.vs)?;
        let names = self.unnamed_all(&ms.vs, &data);
        if self.steps() == 0 || self.names_collide(&ms.vs, &names) {
            return Ok(None);
        }
        let (first, step) = (self.first_step(), self.step());
        let mut points: Vec<Vec<Sample>> = vec![Vec::new(); data.len()];
        self.sweep(ms, rate, |i, k, v| {
            points[i].push(Sample(first + k as i64 * step, v));
        })?;
        self.count_points(points.iter().map(Vec::len).sum())?;
        let mut out: Vec<SeriesData> = points
            .into_iter()
            .zip(names.iter())
            .filter(|(p, _)| !p.is_empty())
            .map(|(samples, l)| SeriesData {
                labels: l.clone(),
                samples,
            })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(Some(out))
    }

    /// [`Self::counter_rate`] at a step of the range query from the selector's table: the
    /// first step computes every step, series by series (a value depends on the step's time
    /// only, so a subquery's inner step on the grid reads the same table). Untabled — `None`
    /// — off the grid, when names collide once dropped (checked point by point there), or
    /// past `RATE_TABLE_MAX` values.
    pub(super) fn rate_from_table(
        &mut self,
        ms: &promql_parser::parser::MatrixSelector,
        t: i64,
        rate: bool,
    ) -> Result<Option<Val>, QueryError> {
        let Some(k) = self.step_index(t) else {
            return Ok(None);
        };
        let key = (ms as *const _ as usize, rate);
        let table = match self.rate_tables.get(&key) {
            Some(t) => t.clone(),
            None => {
                let t = self.rate_table(ms, rate)?.map(Arc::new);
                self.rate_tables.insert(key, t.clone());
                t
            }
        };
        let Some(table) = table else {
            return Ok(None);
        };
        let data = self.data(&ms.vs)?;
        let names = self.unnamed_all(&ms.vs, &data);
        let row = &table.values[k * table.width..(k + 1) * table.width];
        let out = row
            .iter()
            .zip(names.iter())
            .filter_map(|(v, l)| {
                v.map(|v| Elem {
                    labels: l.clone(),
                    t,
                    v,
                })
            })
            .collect();
        Ok(Some(Val::Vector(out)))
    }

    fn rate_table(
        &mut self,
        ms: &promql_parser::parser::MatrixSelector,
        rate: bool,
    ) -> Result<Option<RateTable>, QueryError> {
        let data = self.data(&ms.vs)?;
        let names = self.unnamed_all(&ms.vs, &data);
        let (steps, width) = (self.steps(), data.len());
        if self.names_collide(&ms.vs, &names) || steps.saturating_mul(width) > RATE_TABLE_MAX {
            return Ok(None);
        }
        let mut values = vec![None; steps * width];
        self.sweep(ms, rate, |i, k, v| values[k * width + i] = Some(v))?;
        Ok(Some(RateTable { width, values }))
    }

    /// Sweeps each series of `ms` once through every step of the range query, handing
    /// `emit(series, step, value)` the steps where it has a value. Series are split across
    /// the cores when there are many (the sweep is pure arithmetic over samples already
    /// read); `emit` is called in series order either way.
    fn sweep(
        &mut self,
        ms: &promql_parser::parser::MatrixSelector,
        rate: bool,
        mut emit: impl FnMut(usize, usize, f64),
    ) -> Result<(), QueryError> {
        let data = self.data(&ms.vs)?;
        let stale = self.stale_flags(&ms.vs, &data);
        let (at, off) = (self.at_time(&ms.vs.at), offset_ms(&ms.vs.offset));
        let grid = Grid {
            first: self.first_step(),
            step: self.step(),
            steps: self.steps(),
            range: ms.range.as_millis() as i64,
            at,
            off,
            rate,
        };
        let deadline = self.deadline();
        let check = || check_deadline(deadline);
        // (series, step, value) of the series `run` (indices as u32: a point is 16 bytes).
        let part = |run: Vec<usize>| -> Result<Vec<Swept>, QueryError> {
            let mut out = Vec::new();
            // One series' prefix sums at a time (the step-by-step path keeps every
            // series' for the whole query: as many values as samples were read), in one
            // buffer.
            let mut prefix = Vec::new();
            for i in run {
                check()?;
                grid.series(&data[i], stale[i], &mut prefix, |k, v| {
                    out.push((i as u32, k as u32, v));
                });
            }
            Ok(out)
        };
        let samples: usize = data.iter().map(|s| s.samples.len()).sum();
        let threads = telltale_common::parallel::threads();
        if threads <= 1 || samples < SWEEP_SPLIT || data.len() > u32::MAX as usize {
            // No buffer in between: emitted as computed.
            let mut prefix = Vec::new();
            for (i, s) in data.iter().enumerate() {
                check()?;
                grid.series(s, stale[i], &mut prefix, |k, v| emit(i, k, v));
            }
            return Ok(());
        }
        let parts =
            telltale_common::parallel::split((0..data.len()).collect(), threads, part, || {
                QueryError::Execution("a rate thread panicked".into())
            });
        for p in parts {
            for (i, k, v) in p? {
                emit(i as usize, k as usize, v);
            }
        }
        Ok(())
    }
}

/// A point a sweep's thread found: (series, step, value).
type Swept = (u32, u32, f64);

/// Samples past which a sweep is split across threads (a thread's start costs about what
/// sweeping a few thousand samples does).
const SWEEP_SPLIT: usize = 200_000;

/// The steps a sweep visits and the window it reads at each.
struct Grid {
    first: i64,
    step: i64,
    steps: usize,
    range: i64,
    at: Option<i64>,
    off: i64,
    rate: bool,
}

impl Grid {
    /// One series through every step: `emit(step, value)` where it has one.
    fn series(
        &self,
        s: &SeriesData,
        has_stale: bool,
        prefix: &mut Vec<f64>,
        mut emit: impl FnMut(usize, f64),
    ) {
        f::reset_prefix_into(&s.samples, prefix);
        let mut cur: Cursor = (i64::MIN, 0, 0);
        for k in 0..self.steps {
            let te = self.at.unwrap_or(self.first + k as i64 * self.step) - self.off;
            if let Some(v) = rate_point(
                &s.samples, has_stale, prefix, &mut cur, te, self.range, self.rate,
            ) {
                emit(k, v);
            }
        }
    }
}

/// The most values a range query tables per `rate` / `increase` (steps × series, 16 bytes
/// each: 64 MiB at most; 7 320 series × 361 steps is 2.6 M).
const RATE_TABLE_MAX: usize = 4_000_000;

/// `rate` / `increase` of one series' window ending at `te` (see [`Evaluator::counter_rate`]).
pub(super) fn rate_point(
    samples: &[Sample],
    has_stale: bool,
    prefix: &[f64],
    cur: &mut Cursor,
    te: i64,
    range: i64,
    rate: bool,
) -> Option<f64> {
    // Prometheus extrapolates to the window the data comes from: `[te - range, te]`.
    let (lo, hi) = window(cur, samples, te, range);
    // A series with stale markers somewhere has them in few of its windows: only those are
    // copied without them (the prefix sums hold for a window without one).
    let stale_here = has_stale
        && samples[lo..hi]
            .iter()
            .any(|x| telltale_common::model::is_stale_marker(x.1));
    if stale_here {
        let window: Vec<Sample> = samples[lo..hi]
            .iter()
            .copied()
            .filter(|x| !telltale_common::model::is_stale_marker(x.1))
            .collect();
        return f::extrapolated(&window, te, range, true, rate);
    }
    if hi - lo < 2 {
        return None;
    }
    let (first, last) = (samples[lo], samples[hi - 1]);
    // Without a reset in the window, the prefix sums say so in O(1); with one, the
    // corrections are added one by one, in Prometheus' order, so the result is the same to
    // the last bit.
    let mut result = last.1 - first.1;
    if prefix[hi - 1] != prefix[lo] {
        let mut prev = first.1;
        for p in &samples[lo + 1..hi] {
            if p.1 < prev {
                result += prev;
            }
            prev = p.1;
        }
    }
    Some(f::extrapolate(
        first,
        last,
        hi - lo,
        result,
        te,
        range,
        true,
        rate,
    ))
}
