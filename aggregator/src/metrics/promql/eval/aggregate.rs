//! Aggregation operators (`sum`, `avg`, `topk`, `count_values`, `quantile`...) over the
//! evaluator: groups in first-seen order, as Prometheus forms them.

use super::*;

/// The aggregation's name without formatting it (`TokenType`'s `Display` allocates).
fn aggregation_name(op: &promql_parser::parser::token::TokenType) -> &'static str {
    use promql_parser::parser::token::*;
    match op.id() {
        T_SUM => "sum",
        T_AVG => "avg",
        T_MIN => "min",
        T_MAX => "max",
        T_COUNT => "count",
        T_GROUP => "group",
        T_STDDEV => "stddev",
        T_STDVAR => "stdvar",
        T_TOPK => "topk",
        T_BOTTOMK => "bottomk",
        T_QUANTILE => "quantile",
        T_COUNT_VALUES => "count_values",
        T_LIMITK => "limitk",
        T_LIMIT_RATIO => "limit_ratio",
        _ => "?",
    }
}

fn grouping(l: &Labels, modifier: &Option<LabelModifier>) -> Labels {
    match modifier {
        None => Labels::default(),
        Some(LabelModifier::Include(names)) => Labels::from_pairs(
            l.iter()
                .filter(|(k, _)| names.labels.iter().any(|n| n == k)),
        ),
        Some(LabelModifier::Exclude(names)) => Labels::from_pairs(
            l.iter()
                .filter(|(k, _)| *k != METRIC_NAME && !names.labels.iter().any(|n| n == k)),
        ),
    }
}

impl Evaluator<'_> {
    /// `sum avg count min max group`: folded as the elements arrive, without collecting each
    /// group's elements (same order of additions as collecting them, so the same results).
    fn fold_groups(
        &mut self,
        node: usize,
        a: &AggregateExpr,
        op: &str,
        input: Vec<Elem>,
        t: i64,
    ) -> Vec<Elem> {
        let mut index: FxHashMap<usize, usize> = FxHashMap::default();
        // (group, sum or extreme, count)
        let mut groups: Vec<(Labels, f64, usize)> = Vec::new();
        // Without `by` or `without` there is one group with no labels: no lookups at all.
        let single = a.modifier.is_none().then(|| self.intern(Labels::default()));
        for x in input {
            let key = match &single {
                Some(k) => k.clone(),
                None => self.derive(node, 0, &x.labels, |l| grouping(l, &a.modifier)),
            };
            let i = *index.entry(key.share_id()).or_insert_with(|| {
                let start = if matches!(op, "min" | "max") {
                    f64::NAN
                } else {
                    0.0
                };
                groups.push((key.clone(), start, 0));
                groups.len() - 1
            });
            let g = &mut groups[i];
            g.2 += 1;
            match op {
                // The first element starts the sum, as in Prometheus (so `-0` stays `-0`).
                "sum" | "avg" if g.2 == 1 => g.1 = x.v,
                "sum" => g.1 += x.v,
                "avg" => g.1 = f::incremental_mean(g.1, g.2, x.v),
                "min" if g.1.is_nan() || x.v < g.1 => g.1 = x.v,
                "max" if g.1.is_nan() || x.v > g.1 => g.1 = x.v,
                _ => {}
            }
        }
        // Groups in the order they are first seen, as Prometheus returns them.
        groups
            .into_iter()
            .map(|(labels, acc, n)| Elem {
                labels,
                t,
                v: match op {
                    "count" => n as f64,
                    "group" => 1.0,
                    _ => acc,
                },
            })
            .collect()
    }

    /// `count_values`: one output series per group and value, in the order first seen (the
    /// label name is checked even when there is nothing to count, as Prometheus does).
    fn count_values(
        &mut self,
        node: usize,
        a: &AggregateExpr,
        param: Option<Val>,
        input: Vec<Elem>,
        t: i64,
    ) -> Result<Val, QueryError> {
        let name = match &param {
            Some(Val::Str(s)) => s.clone(),
            _ => String::new(),
        };
        if !telltale_common::model::valid_label_name(&name) {
            return Err(exec(format!("invalid label name {name:?}")));
        }
        let mut index: FxHashMap<Labels, usize> = FxHashMap::default();
        let mut out: Vec<Elem> = Vec::new();
        for x in input {
            let mut l = self.derive(node, 0, &x.labels, |l| grouping(l, &a.modifier));
            l.set(&name, &crate::metrics::promql::format::format_value(x.v));
            match index.get(&l) {
                Some(&i) => out[i].v += 1.0,
                None => {
                    index.insert(l.clone(), out.len());
                    out.push(Elem {
                        labels: l,
                        t,
                        v: 1.0,
                    });
                }
            }
        }
        Ok(Val::Vector(out))
    }

    pub(super) fn aggregate(&mut self, a: &AggregateExpr, t: i64) -> Result<Val, QueryError> {
        let op = aggregation_name(&a.op);
        let input = self.vector(&a.expr, t)?;
        // Prometheus judges an aggregation step-invariant by its expression alone and then
        // evaluates it — parameter included — once, at the first step of the range.
        let param_at = if step_invariant(&a.expr) {
            self.range_start
        } else {
            t
        };
        self.in_param += 1;
        let param = match &a.param {
            Some(p) if op == "count_values" => self.string(p, t).map(|s| Some(Val::Str(s))),
            Some(p) => self.scalar(p, param_at).map(|v| Some(Val::Scalar(v))),
            None => Ok(None),
        };
        self.in_param -= 1;
        let param = param?;
        // Group keys are derived once per input series and interned, so equal groups share
        // one `Arc` and are found by identity; groups keep the order they are first seen in.
        let node = a as *const AggregateExpr as usize;
        if matches!(op, "sum" | "avg" | "count" | "min" | "max" | "group") {
            return Ok(Val::Vector(self.fold_groups(node, a, op, input, t)));
        }
        if op == "count_values" {
            return self.count_values(node, a, param, input, t);
        }
        // Prometheus converts k to an int64 and refuses what does not fit — at every step,
        // whether or not there is anything to rank. (`i64::MAX as f64` is 2^63: the
        // half-open range holds exactly the floats that fit.)
        if let (Some(Val::Scalar(k)), "topk" | "bottomk") = (&param, op)
            && !(i64::MIN as f64..i64::MAX as f64).contains(k)
        {
            return Err(exec(format!(
                "Scalar value {} overflows int64",
                crate::metrics::promql::format::format_go_v(*k)
            )));
        }
        let mut index: FxHashMap<usize, usize> = FxHashMap::default();
        let mut groups: Vec<(Labels, Vec<Elem>)> = Vec::new();
        for x in input {
            let key = self.derive(node, 0, &x.labels, |l| grouping(l, &a.modifier));
            let i = *index.entry(key.share_id()).or_insert_with(|| {
                groups.push((key.clone(), Vec::new()));
                groups.len() - 1
            });
            groups[i].1.push(x);
        }
        let mut out = Vec::new();
        for (key, elems) in groups {
            let vals: Vec<f64> = elems.iter().map(|x| x.v).collect();
            let one = |v: f64| Elem {
                labels: key.clone(),
                t,
                v,
            };
            match op {
                "sum" => out.push(one(vals.iter().sum())),
                "avg" => out.push(one(vals.iter().enumerate().fold(0.0, |m, (i, &v)| {
                    if i == 0 {
                        v
                    } else {
                        f::incremental_mean(m, i + 1, v)
                    }
                }))),
                "min" => out
                    .push(one(vals.iter().copied().fold(f64::NAN, |m, v| {
                        if m.is_nan() || v < m { v } else { m }
                    }))),
                "max" => out
                    .push(one(vals.iter().copied().fold(f64::NAN, |m, v| {
                        if m.is_nan() || v > m { v } else { m }
                    }))),
                "count" => out.push(one(vals.len() as f64)),
                "group" => out.push(one(1.0)),
                "stdvar" => out.push(one(f::variance(&vals))),
                "stddev" => out.push(one(f::variance(&vals).sqrt())),
                "quantile" => {
                    let q = match param {
                        Some(Val::Scalar(q)) => q,
                        _ => f64::NAN,
                    };
                    let mut v = vals.clone();
                    out.push(one(f::quantile(q, &mut v)));
                }
                "topk" | "bottomk" => {
                    let k = match param {
                        Some(Val::Scalar(k)) if k >= 1.0 => k as usize,
                        _ => 0,
                    };
                    let kept = f::top_k(elems, k, op == "bottomk", |x: &Elem| x.v);
                    out.extend(kept.into_iter().map(|mut x| {
                        x.t = t;
                        x
                    }));
                }
                other => {
                    return Err(QueryError::BadData(format!(
                        "aggregation {other} is not supported yet"
                    )));
                }
            }
        }
        Ok(Val::Vector(out))
    }
}
