//! Function calls.

use promql_parser::parser::{Call, Expr, VectorSelector};
use telltale_common::model::{Labels, METRIC_NAME, Sample, is_stale_marker, valid_label_name};

use super::QueryError;
use super::eval::{Elem, Evaluator, Val, matchers, offset_ms, window};
use super::functions as f;
use super::gomath as g;
use super::rate::rate_point;
use crate::metrics::storage::MatchOp;

/// `(year, month, day, hour, minute, weekday, day of year)` of Unix seconds, UTC — as
/// Prometheus computes them with Go's `time.Unix(int64(v), 0).UTC()`: the value truncated
/// toward zero, NaN, infinities and values out of range becoming `math.MinInt64` (what the
/// conversion gives on amd64), and Go's calendar arithmetic on wrapping 64-bit seconds, so
/// even those give Prometheus' dates.
fn civil(secs: f64) -> (i64, i64, i64, i64, i64, i64, i64) {
    const DAY: u64 = 86_400;
    const DAYS_PER_400: u64 = 365 * 400 + 97;
    const DAYS_PER_100: u64 = 365 * 100 + 24;
    const DAYS_PER_4: u64 = 365 * 4 + 1;
    const ABSOLUTE_ZERO_YEAR: i64 = -292_277_022_399;
    // Go's unixToInternal + internalToAbsolute.
    const UNIX_TO_ABSOLUTE: u64 = 9_223_372_028_715_321_600;
    const DAYS_BEFORE: [i64; 13] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365];
    let sec = if secs.is_nan() || !(i64::MIN as f64..i64::MAX as f64).contains(&secs) {
        i64::MIN
    } else {
        secs.trunc() as i64
    };
    let abs = (sec as u64).wrapping_add(UNIX_TO_ABSOLUTE);
    // absDate.
    let mut d = abs / DAY;
    let mut n = d / DAYS_PER_400;
    let mut y = 400 * n;
    d -= DAYS_PER_400 * n;
    n = d / DAYS_PER_100;
    n -= n >> 2;
    y += 100 * n;
    d -= DAYS_PER_100 * n;
    n = d / DAYS_PER_4;
    y += 4 * n;
    d -= DAYS_PER_4 * n;
    n = d / 365;
    n -= n >> 2;
    y += n;
    d -= 365 * n;
    let year = (y as i64).wrapping_add(ABSOLUTE_ZERO_YEAR);
    let yday = d as i64;
    let mut day = yday;
    let (month, mday) = 'md: {
        if is_leap(year) {
            if day > 31 + 29 - 1 {
                day -= 1;
            } else if day == 31 + 29 - 1 {
                break 'md (2, 29);
            }
        }
        let mut month = day / 31;
        let end = DAYS_BEFORE[month as usize + 1];
        let begin = if day >= end {
            month += 1;
            end
        } else {
            DAYS_BEFORE[month as usize]
        };
        (month + 1, day - begin + 1)
    };
    let weekday = ((abs.wrapping_add(DAY)) % (7 * DAY)) / DAY;
    (
        year,
        month,
        mday,
        ((abs % DAY) / 3600) as i64,
        ((abs % 3600) / 60) as i64,
        weekday as i64,
        yday + 1,
    )
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Labels for `absent`: the equality matchers of a selector argument. Parentheses around it
/// do not hide it: Prometheus unwraps every function argument's parentheses before calling
/// (`absent((x{job="a"}))` is `{job="a"}`), but a unary `+` does (see `promql/prepare.rs`).
fn absent_labels(mut e: &Expr) -> Labels {
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    let vs = match e {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::default(),
    };
    let Ok(ms) = matchers(vs) else {
        return Labels::default();
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    for m in ms {
        if m.name == METRIC_NAME {
            continue;
        }
        if let MatchOp::Equal(v) = m.op {
            if pairs.iter().any(|(k, _)| *k == m.name) {
                pairs.retain(|(k, _)| *k != m.name);
            } else {
                pairs.push((m.name, v));
            }
        }
    }
    Labels::from_pairs(pairs)
}

/// `l` with label `name` set to `value`, or without it when `value` is empty (as Prometheus
/// treats an empty label).
fn with_label(l: &Labels, name: &str, value: String) -> Labels {
    Labels::from_pairs(
        l.iter()
            .filter(|(k, _)| *k != name)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain(std::iter::once((name.to_string(), value))),
    )
}

impl Evaluator<'_> {
    /// Applies `f` to every value, dropping the metric name (memoized per series).
    fn map_values(&mut self, v: Vec<Elem>, t: i64, f: impl Fn(f64) -> f64) -> Val {
        let mut out = Vec::with_capacity(v.len());
        for x in v {
            out.push(Elem {
                labels: self.unnamed(&x.labels),
                t,
                v: f(x.v),
            });
        }
        Val::Vector(out)
    }

    /// `rate` / `increase` of a plain range selector: the window's counter resets come from
    /// per-series prefix sums, so a step costs two binary searches whatever the range; series
    /// with stale markers take the general path.
    fn counter_rate(
        &mut self,
        ms: &promql_parser::parser::MatrixSelector,
        t: i64,
        range: i64,
        rate: bool,
    ) -> Result<Val, QueryError> {
        if let Some(v) = self.rate_from_table(ms, t, rate)? {
            return Ok(v);
        }
        let te = self.at_time(&ms.vs.at).unwrap_or(t) - offset_ms(&ms.vs.offset);
        let data = self.data(&ms.vs)?;
        let stale = self.stale_flags(&ms.vs, &data);
        let resets = self.reset_prefixes(&ms.vs, &data);
        let names = self.unnamed_all(&ms.vs, &data);
        let collide = self.names_collide(&ms.vs, &names);
        let mut cursors = self.take_cursors(&ms.vs, range, data.len());
        let mut out = Vec::with_capacity(data.len());
        for (i, (((s, has_stale), prefix), cur)) in data
            .iter()
            .zip(stale.iter())
            .zip(resets.iter())
            .zip(cursors.iter_mut())
            .enumerate()
        {
            if let Some(v) = rate_point(&s.samples, *has_stale, prefix, cur, te, range, rate) {
                if collide {
                    self.one_source(ms as *const _ as usize, &names[i], &s.labels)?;
                }
                out.push(Elem {
                    labels: names[i].clone(),
                    t,
                    v,
                });
            }
        }
        self.put_cursors(&ms.vs, range, cursors);
        Ok(Val::Vector(out))
    }

    fn over_time(
        &mut self,
        c: &Call,
        t: i64,
        arg: usize,
        keep_name: bool,
        f: impl Fn(&[Sample]) -> Option<f64>,
    ) -> Result<Val, QueryError> {
        let elem = |me: &mut Self, labels: &Labels, v: f64| Elem {
            labels: if keep_name {
                labels.clone()
            } else {
                me.unnamed(labels)
            },
            t,
            v,
        };
        // A plain range selector: compute on the cached samples in place instead of copying
        // every window at every step.
        if let Expr::MatrixSelector(ms) = c.args.args[arg].as_ref() {
            let Some((te, window_range)) = self.call_window(c, ms, t) else {
                return Ok(Val::Vector(Vec::new()));
            };
            let range = ms.range.as_millis() as i64;
            let data = self.data(&ms.vs)?;
            let stale = self.stale_flags(&ms.vs, &data);
            let names = if keep_name {
                None
            } else {
                Some(self.unnamed_all(&ms.vs, &data))
            };
            let collide = match &names {
                Some(n) => self.names_collide(&ms.vs, n),
                None => false,
            };
            let node = c as *const Call as usize;
            let mut cursors = self.take_cursors(&ms.vs, range, data.len());
            let mut out = Vec::with_capacity(data.len());
            let mut scratch = Vec::new();
            for (i, ((s, has_stale), cur)) in data
                .iter()
                .zip(stale.iter())
                .zip(cursors.iter_mut())
                .enumerate()
            {
                // A slid window is found afresh (a cursor of its own): the series' cursor only
                // moves forward.
                let (lo, hi) = if window_range == range {
                    window(cur, &s.samples, te, range)
                } else {
                    window(&mut (i64::MIN, 0, 0), &s.samples, te, window_range)
                };
                let mut window = &s.samples[lo..hi];
                if *has_stale
                    && window
                        .iter()
                        .any(|x| telltale_common::model::is_stale_marker(x.1))
                {
                    scratch.clear();
                    scratch.extend(
                        window
                            .iter()
                            .copied()
                            .filter(|x| !telltale_common::model::is_stale_marker(x.1)),
                    );
                    window = &scratch;
                }
                if window.is_empty() {
                    continue;
                }
                if let Some(v) = f(window) {
                    let labels = match &names {
                        Some(n) => n[i].clone(),
                        None => s.labels.clone(),
                    };
                    if collide {
                        self.one_source(node, &labels, &s.labels)?;
                    }
                    out.push(Elem { labels, t, v });
                }
            }
            self.put_cursors(&ms.vs, range, cursors);
            return Ok(Val::Vector(out));
        }
        let m = self.matrix(&c.args.args[arg], t)?;
        let mut out = Vec::new();
        for s in &m {
            if let Some(v) = f(&s.samples) {
                out.push(elem(self, &s.labels, v));
            }
        }
        Ok(Val::Vector(out))
    }

    fn range_of(c: &Call, i: usize) -> i64 {
        match c.args.args.get(i).map(|a| a.as_ref()) {
            Some(Expr::MatrixSelector(m)) => m.range.as_millis() as i64,
            Some(Expr::Subquery(s)) => s.range.as_millis() as i64,
            _ => 0,
        }
    }

    pub(super) fn call(&mut self, c: &Call, t: i64) -> Result<Val, QueryError> {
        let name = c.func.name;
        let args = &c.args.args;
        let arg_vec = |me: &mut Self, i: usize| -> Result<Vec<Elem>, QueryError> {
            match args.get(i) {
                Some(a) => me.vector(a, t),
                None => Ok(vec![Elem {
                    labels: Labels::default(),
                    t,
                    v: t as f64 / 1000.0,
                }]),
            }
        };
        let math = |f: fn(f64) -> f64| f;
        let unary: Option<fn(f64) -> f64> = match name {
            "abs" => Some(math(f64::abs)),
            "ceil" => Some(math(f64::ceil)),
            "floor" => Some(math(f64::floor)),
            "exp" => Some(math(g::go_exp)),
            "ln" => Some(math(g::go_ln)),
            "log2" => Some(math(g::go_log2)),
            "log10" => Some(math(g::go_log10)),
            "sqrt" => Some(math(f64::sqrt)),
            "sgn" => Some(|v: f64| {
                if v > 0.0 {
                    1.0
                } else if v < 0.0 {
                    -1.0
                } else {
                    v
                }
            }),
            "sin" => Some(math(g::go_sin)),
            "cos" => Some(math(g::go_cos)),
            "tan" => Some(math(g::go_tan)),
            "asin" => Some(math(g::go_asin)),
            "acos" => Some(math(g::go_acos)),
            "atan" => Some(math(g::go_atan)),
            "sinh" => Some(math(g::go_sinh)),
            "cosh" => Some(math(g::go_cosh)),
            "tanh" => Some(math(g::go_tanh)),
            "asinh" => Some(math(g::go_asinh)),
            "acosh" => Some(math(g::go_acosh)),
            "atanh" => Some(math(g::go_atanh)),
            // Prometheus' order of operations (`to_degrees` multiplies by 180/π, one rounding
            // fewer, and differs in the last bit for a quarter of values).
            "deg" => Some(|v: f64| v * 180.0 / std::f64::consts::PI),
            "rad" => Some(|v: f64| v * std::f64::consts::PI / 180.0),
            _ => None,
        };
        if let Some(u) = unary {
            let v = self.vector(&args[0], t)?;
            return Ok(self.map_values(v, t, u));
        }
        let date: Option<fn(f64) -> f64> = match name {
            "year" => Some(|s| civil(s).0 as f64),
            "month" => Some(|s| civil(s).1 as f64),
            "day_of_month" => Some(|s| civil(s).2 as f64),
            "hour" => Some(|s| civil(s).3 as f64),
            "minute" => Some(|s| civil(s).4 as f64),
            "day_of_week" => Some(|s| civil(s).5 as f64),
            "day_of_year" => Some(|s| civil(s).6 as f64),
            "days_in_month" => Some(|s| {
                let c = civil(s);
                days_in_month(c.0, c.1) as f64
            }),
            _ => None,
        };
        if let Some(d) = date {
            let v = arg_vec(self, 0)?;
            return Ok(self.map_values(v, t, d));
        }
        let range = Self::range_of(c, 0);
        if let Some(v) = self.over_time_from_rollups(c, t)? {
            return Ok(v);
        }
        // The end of the window rate, increase and delta extrapolate to: the end of the window
        // the argument's data comes from (`@` time or evaluation time, minus the offset), as
        // in Prometheus.
        // A slid window (`Evaluator::call_window`) extrapolates to where it has slid to, as
        // Prometheus 2.42 does from the offset it made of the `@`.
        let end = match args.first().map(|a| a.as_ref()) {
            Some(Expr::MatrixSelector(ms)) => (self.at_time(&ms.vs.at).unwrap_or(t)
                - offset_ms(&ms.vs.offset))
            .saturating_add(self.slide(c, &ms.vs.at, t).unwrap_or(0)),
            Some(Expr::Subquery(sq)) => self.at_time(&sq.at).unwrap_or(t) - offset_ms(&sq.offset),
            _ => t,
        };
        match name {
            "rate" | "increase" => {
                let rate = name == "rate";
                if let Expr::MatrixSelector(ms) = args[0].as_ref()
                    && self.slide(c, &ms.vs.at, t).is_none()
                {
                    return self.counter_rate(ms, t, range, rate);
                }
                self.over_time(c, t, 0, false, |p| {
                    f::extrapolated(p, end, range, true, rate)
                })
            }
            "delta" => self.over_time(c, t, 0, false, |p| {
                f::extrapolated(p, end, range, false, false)
            }),
            "irate" => self.over_time(c, t, 0, false, |p| f::instant_delta(p, true)),
            "idelta" => self.over_time(c, t, 0, false, |p| f::instant_delta(p, false)),
            "deriv" => self.over_time(c, t, 0, false, |p| {
                f::linear_regression(p, p[0].0).map(|r| r.0)
            }),
            "predict_linear" => {
                let secs = self.scalar(&args[1], t)?;
                self.over_time(c, t, 0, false, |p| {
                    f::linear_regression(p, t).map(|(slope, icpt)| slope * secs + icpt)
                })
            }
            "changes" => self.over_time(c, t, 0, false, |p| {
                Some(
                    p.windows(2)
                        .filter(|w| w[1].1 != w[0].1 && !(w[1].1.is_nan() && w[0].1.is_nan()))
                        .count() as f64,
                )
            }),
            "resets" => self.over_time(c, t, 0, false, |p| {
                Some(p.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64)
            }),
            "avg_over_time" => self.over_time(c, t, 0, false, |p| {
                Some(f::kahan_mean(p.iter().map(|s| s.1)))
            }),
            "sum_over_time" => self.over_time(c, t, 0, false, |p| {
                Some(f::kahan_sum(p.iter().map(|s| s.1)))
            }),
            "count_over_time" => self.over_time(c, t, 0, false, |p| Some(p.len() as f64)),
            "min_over_time" => self.over_time(c, t, 0, false, |p| {
                p.iter()
                    .map(|s| s.1)
                    .reduce(|a, b| if b < a || a.is_nan() { b } else { a })
            }),
            "max_over_time" => self.over_time(c, t, 0, false, |p| {
                p.iter()
                    .map(|s| s.1)
                    .reduce(|a, b| if b > a || a.is_nan() { b } else { a })
            }),
            "last_over_time" => self.over_time(c, t, 0, true, |p| p.last().map(|s| s.1)),
            "present_over_time" => self.over_time(c, t, 0, false, |_| Some(1.0)),
            "stdvar_over_time" => self.over_time(c, t, 0, false, |p| {
                Some(f::kahan_variance(p.iter().map(|s| s.1)))
            }),
            "stddev_over_time" => self.over_time(c, t, 0, false, |p| {
                Some(f::kahan_variance(p.iter().map(|s| s.1)).sqrt())
            }),
            "holt_winters" | "double_exponential_smoothing" => {
                let sf = self.scalar(&args[1], t)?;
                let tf = self.scalar(&args[2], t)?;
                // Prometheus checks the factors where it computes a series' window (one with
                // a sample), so with no such window bad factors are no error; its messages,
                // `%f` formatting included.
                let bad = if !(sf > 0.0 && sf < 1.0) {
                    Some(format!(
                        "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:.6}"
                    ))
                } else if !(tf > 0.0 && tf < 1.0) {
                    Some(format!(
                        "invalid trend factor. Expected: 0 < tf < 1, got: {tf:.6}"
                    ))
                } else {
                    None
                };
                let met = std::cell::Cell::new(false);
                let v = self.over_time(c, t, 0, false, |p| {
                    if bad.is_some() {
                        met.set(true);
                        return None;
                    }
                    f::holt_winters(p, sf, tf)
                })?;
                match bad {
                    Some(m) if met.get() => Err(QueryError::Execution(m)),
                    _ => Ok(v),
                }
            }
            "quantile_over_time" => {
                let q = self.scalar(&args[0], t)?;
                self.over_time(c, t, 1, false, |p| {
                    Some(f::quantile(
                        q,
                        &mut p.iter().map(|s| s.1).collect::<Vec<_>>(),
                    ))
                })
            }
            "absent_over_time" => {
                // Present when any series has a sample left in its window: what
                // `present_over_time` returns (the same window, cursor and stale handling).
                let present = match self.over_time(c, t, 0, true, |_| Some(1.0))? {
                    Val::Vector(v) => !v.is_empty(),
                    _ => false,
                };
                Ok(Val::Vector(if !present {
                    vec![Elem {
                        labels: absent_labels(&args[0]),
                        t,
                        v: 1.0,
                    }]
                } else {
                    Vec::new()
                }))
            }
            "absent" => {
                let v = self.vector(&args[0], t)?;
                Ok(Val::Vector(if v.is_empty() {
                    vec![Elem {
                        labels: absent_labels(&args[0]),
                        t,
                        v: 1.0,
                    }]
                } else {
                    Vec::new()
                }))
            }
            "time" => Ok(Val::Scalar(t as f64 / 1000.0)),
            "pi" => Ok(Val::Scalar(std::f64::consts::PI)),
            "vector" => Ok(Val::Vector(vec![Elem {
                labels: Labels::default(),
                t,
                v: self.scalar(&args[0], t)?,
            }])),
            "scalar" => {
                let v = self.vector(&args[0], t)?;
                Ok(Val::Scalar(if v.len() == 1 { v[0].v } else { f64::NAN }))
            }
            "timestamp" => {
                // A sample's own time only for a vector selector (in parentheses or not); any
                // computed vector is stamped with the evaluation time, as in Prometheus.
                let mut arg = args[0].as_ref();
                while let Expr::Paren(p) = arg {
                    arg = p.expr.as_ref();
                }
                let own_time = matches!(arg, Expr::VectorSelector(_));
                let v = match arg {
                    Expr::VectorSelector(vs) if vs.at.is_some() && vs.offset.is_some() => {
                        self.timestamp_at_offset(vs, t)?
                    }
                    _ => self.vector(&args[0], t)?,
                };
                let mut out = Vec::with_capacity(v.len());
                for x in v {
                    out.push(Elem {
                        labels: self.unnamed(&x.labels),
                        t,
                        v: if own_time { x.t } else { t } as f64 / 1000.0,
                    });
                }
                Ok(Val::Vector(out))
            }
            "clamp" | "clamp_min" | "clamp_max" => {
                let v = self.vector(&args[0], t)?;
                let (lo, hi) = match name {
                    "clamp" => (self.scalar(&args[1], t)?, self.scalar(&args[2], t)?),
                    "clamp_min" => (self.scalar(&args[1], t)?, f64::INFINITY),
                    _ => (f64::NEG_INFINITY, self.scalar(&args[1], t)?),
                };
                if lo > hi {
                    return Ok(Val::Vector(Vec::new()));
                }
                // `math.Max(min, math.Min(max, v))`, with Go's NaN and signed-zero rules
                // (`clamp_min(x, NaN)` is NaN; Rust's ignore a NaN bound). Against the infinite
                // bound of `clamp_min`/`clamp_max` Go's functions return `v` itself.
                Ok(self.map_values(v, t, |x| {
                    super::gomath::go_max(lo, super::gomath::go_min(hi, x))
                }))
            }
            "round" => {
                let v = self.vector(&args[0], t)?;
                let to = match args.get(1) {
                    Some(a) => self.scalar(a, t)?,
                    None => 1.0,
                };
                let inv = 1.0 / to;
                Ok(self.map_values(v, t, |x| (x * inv + 0.5).floor() / inv))
            }
            "sort" | "sort_desc" => {
                let mut v = self.vector(&args[0], t)?;
                // Prometheus: sort.Sort(sort.Reverse(heap)), where the heap's Less(i, j) is
                // "v[i] is NaN, or v[i] > v[j]" for `sort` (< for `sort_desc`), so NaNs sink
                // to the bottom and ties come out in Go's (unstable) order.
                let desc = name == "sort_desc";
                super::gosort::sort(&mut v, |a, b| {
                    b.v.is_nan() || if desc { b.v < a.v } else { b.v > a.v }
                });
                Ok(Val::Vector(v))
            }
            "label_replace" => {
                let v = self.vector(&args[0], t)?;
                let (dst, repl, src, re) = (
                    self.string(&args[1], t)?,
                    self.string(&args[2], t)?,
                    self.string(&args[3], t)?,
                    self.string(&args[4], t)?,
                );
                if !valid_label_name(&dst) {
                    return Err(QueryError::Execution(format!(
                        "invalid destination label name in label_replace(): {dst}"
                    )));
                }
                let re = match self.regexes.get(&re) {
                    Some(r) => r.clone(),
                    None => {
                        // Prometheus 2.42 anchors with `(?:` (`.` stops at a newline; 3.0
                        // made it `(?s:`), in Go's syntax.
                        let compiled = crate::labels::anchored_regex(&re).map_err(|e| {
                            QueryError::BadData(format!(
                                "invalid regular expression in label_replace(): {re}: {e}"
                            ))
                        })?;
                        self.regexes.insert(re.clone(), compiled.clone());
                        compiled
                    }
                };
                // The arguments are literals, so the result per input series is the same at
                // every step: memoized per call node.
                let node = c as *const Call as usize;
                let mut out = Vec::with_capacity(v.len());
                for mut x in v {
                    x.labels = self.derive(node, 0, &x.labels, |l| {
                        let value = l.get(&src).unwrap_or("");
                        match re.captures(value) {
                            Some(caps) => {
                                let mut out = String::new();
                                caps.expand(&repl, &mut out);
                                with_label(l, &dst, out)
                            }
                            None => l.clone(),
                        }
                    });
                    out.push(x);
                }
                Ok(Val::Vector(out))
            }
            "label_join" => {
                let v = self.vector(&args[0], t)?;
                let (dst, sep) = (self.string(&args[1], t)?, self.string(&args[2], t)?);
                if !valid_label_name(&dst) {
                    return Err(QueryError::Execution(format!(
                        "invalid destination label name in label_join(): {dst}"
                    )));
                }
                let mut srcs = Vec::new();
                for a in &args[3..] {
                    srcs.push(self.string(a, t)?);
                }
                let node = c as *const Call as usize;
                let mut out = Vec::with_capacity(v.len());
                for mut x in v {
                    x.labels = self.derive(node, 0, &x.labels, |l| {
                        let joined = srcs
                            .iter()
                            .map(|s| l.get(s).unwrap_or(""))
                            .collect::<Vec<_>>()
                            .join(&sep);
                        with_label(l, &dst, joined)
                    });
                    out.push(x);
                }
                Ok(Val::Vector(out))
            }
            "histogram_quantile" => {
                let q = self.scalar(&args[0], t)?;
                let v = self.vector(&args[1], t)?;
                let mut groups: std::collections::BTreeMap<Labels, Vec<(f64, f64)>> =
                    Default::default();
                let node = c as *const Call as usize;
                for x in v {
                    let Some(le) = x.labels.get("le").and_then(|s| s.parse::<f64>().ok()) else {
                        continue;
                    };
                    // Buckets group by every label but `le`, the name included (Prometheus'
                    // key), and the result drops the name: two groups apart only by name give
                    // one label set twice, which the call's check refuses, as Prometheus does.
                    let key = self.derive(node, 1, &x.labels, |l| {
                        Labels::from_pairs(l.iter().filter(|(k, _)| *k != "le"))
                    });
                    groups.entry(key).or_default().push((le, x.v));
                }
                let mut out = Vec::with_capacity(groups.len());
                for (key, mut b) in groups {
                    let labels = self.derive(node, 2, &key, |l| {
                        Labels::from_pairs(l.iter().filter(|(k, _)| *k != METRIC_NAME))
                    });
                    out.push(Elem {
                        labels,
                        t,
                        v: f::bucket_quantile(q, &mut b),
                    });
                }
                Ok(Val::Vector(out))
            }
            other => Err(QueryError::BadData(format!(
                "function {other}() is not supported yet"
            ))),
        }
    }

    /// The selector `vs` (with both `@` and `offset`) as `timestamp()` sees it in Prometheus
    /// 2.42: there the function looks up each sample at the `@` time itself, with the offset
    /// left out, among the samples fetched for the offset's window. So the latest sample at or
    /// before min(@, @ − offset) counts if it is within the lookback of both @ and @ − offset:
    /// a window `lookback − |offset|` long (empty from one lookback on). Checked against
    /// Prometheus 2.42 (`timestamp(x @ end() offset -2m)` reads the sample at end()).
    fn timestamp_at_offset(
        &mut self,
        vs: &VectorSelector,
        t: i64,
    ) -> Result<Vec<Elem>, QueryError> {
        let at = self.at_time(&vs.at).unwrap_or(t);
        let d = offset_ms(&vs.offset);
        let te = at.min(at.saturating_sub(d));
        let lookback = self.lookback.saturating_sub(d.saturating_abs());
        if lookback < 0 {
            return Ok(Vec::new());
        }
        let data = self.data(vs)?;
        Ok(data
            .iter()
            .filter_map(|s| {
                let idx = s.samples.partition_point(|x| x.0 <= te);
                let x = *s.samples.get(idx.checked_sub(1)?)?;
                (x.0 >= te - lookback && !is_stale_marker(x.1)).then(|| Elem {
                    labels: s.labels.clone(),
                    t: x.0,
                    v: x.1,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_are_right() {
        // 2026-11-25 15:39:57 UTC is a Wednesday, day 329 of the year.
        assert_eq!(civil(1_795_621_197.0), (2026, 11, 25, 15, 39, 3, 329));
        assert_eq!(civil(0.0), (1970, 1, 1, 0, 0, 4, 1));
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2023, 2), 28);
        // Truncated toward zero, as Go's int64(v): -0.5 is still 1970-01-01 00:00.
        assert_eq!(civil(-0.5), (1970, 1, 1, 0, 0, 4, 1));
        assert_eq!(civil(-1.0), (1969, 12, 31, 23, 59, 3, 365));
        assert_eq!(civil(951_782_400.0), (2000, 2, 29, 0, 0, 2, 60));
        // NaN is math.MinInt64 seconds in Go on amd64: Prometheus answers with this date.
        assert_eq!(civil(f64::NAN), (292_277_026_596, 12, 4, 15, 30, 0, 339));
        assert_eq!(civil(f64::INFINITY), civil(f64::NAN));
    }
}
