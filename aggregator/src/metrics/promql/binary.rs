//! Binary operators: arithmetic, comparison (filtering or `bool`), set operators, and vector
//! matching with `on`/`ignoring` and `group_left`/`group_right`, as Prometheus does them.

use rustc_hash::{FxHashMap, FxHashSet};

use super::functions as f;

use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};
use telltale_common::model::{Labels, METRIC_NAME};

use super::QueryError;
use super::eval::{Elem, Evaluator, Val, drop_name};

/// The operator's spelling without formatting it (`TokenType`'s `Display` allocates, and a
/// range query applies an operator at every step).
fn op_name(op: &promql_parser::parser::token::TokenType) -> &'static str {
    use promql_parser::parser::token::*;
    match op.id() {
        T_ADD => "+",
        T_SUB => "-",
        T_MUL => "*",
        T_DIV => "/",
        T_MOD => "%",
        T_POW => "^",
        T_ATAN2 => "atan2",
        T_EQLC => "==",
        T_NEQ => "!=",
        T_GTR => ">",
        T_LSS => "<",
        T_GTE => ">=",
        T_LTE => "<=",
        T_LAND => "and",
        T_LOR => "or",
        T_LUNLESS => "unless",
        _ => "?",
    }
}

fn arith(op: &str, a: f64, b: f64) -> Option<f64> {
    Some(match op {
        "+" => a + b,
        "-" => a - b,
        "*" => a * b,
        "/" => a / b,
        "%" => a % b,
        "^" => f::go_pow(a, b),
        "atan2" => super::gomath::go_atan2(a, b),
        _ => return None,
    })
}

fn compare(op: &str, a: f64, b: f64) -> Option<bool> {
    Some(match op {
        "==" => a == b,
        "!=" => a != b,
        ">" => a > b,
        "<" => a < b,
        ">=" => a >= b,
        "<=" => a <= b,
        _ => return None,
    })
}

/// The labels two series are matched on.
fn signature(l: &Labels, matching: Option<&LabelModifier>) -> Labels {
    match matching {
        Some(LabelModifier::Include(on)) => {
            Labels::from_pairs(l.iter().filter(|(k, _)| on.labels.iter().any(|n| n == k)))
        }
        Some(LabelModifier::Exclude(ign)) => Labels::from_pairs(
            l.iter()
                .filter(|(k, _)| *k != METRIC_NAME && !ign.labels.iter().any(|n| n == k)),
        ),
        None => drop_name(l),
    }
}

impl Evaluator<'_> {
    pub(super) fn binary(&mut self, b: &BinaryExpr, t: i64) -> Result<Val, QueryError> {
        let op = op_name(&b.op);
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        let is_cmp = b.op.is_comparison_operator();
        let lhs = self.eval(&b.lhs, t)?;
        let rhs = self.eval(&b.rhs, t)?;
        // Applies the operator to two values; `None` drops the element (a false comparison).
        let apply = |a: f64, c: f64| -> Option<f64> {
            if is_cmp {
                let r = compare(op, a, c)?;
                if return_bool {
                    Some(if r { 1.0 } else { 0.0 })
                } else {
                    r.then_some(a)
                }
            } else {
                arith(op, a, c)
            }
        };
        // Arithmetic drops the metric name; comparisons with `bool` too. `atan2` keeps it, as
        // in Prometheus (its list of name-dropping operators leaves atan2 out).
        let drops_name = (!is_cmp && op != "atan2") || return_bool;
        match (lhs, rhs) {
            (Val::Scalar(a), Val::Scalar(c)) => {
                if is_cmp && !return_bool {
                    return Err(QueryError::BadData(
                        "comparisons between scalars must use BOOL modifier".into(),
                    ));
                }
                Ok(Val::Scalar(apply(a, c).unwrap_or(f64::NAN)))
            }
            (Val::Vector(v), Val::Scalar(s)) => {
                let mut out = Vec::with_capacity(v.len());
                for x in v {
                    let Some(r) = apply(x.v, s) else { continue };
                    let labels = if drops_name {
                        self.unnamed(&x.labels)
                    } else {
                        x.labels
                    };
                    out.push(Elem { labels, t, v: r });
                }
                Ok(Val::Vector(out))
            }
            (Val::Scalar(s), Val::Vector(v)) => {
                let mut out = Vec::with_capacity(v.len());
                for x in v {
                    let Some(r) = apply(s, x.v) else { continue };
                    // A filtering comparison keeps the vector's value.
                    let v = if is_cmp && !return_bool { x.v } else { r };
                    let labels = if drops_name {
                        self.unnamed(&x.labels)
                    } else {
                        x.labels
                    };
                    out.push(Elem { labels, t, v });
                }
                Ok(Val::Vector(out))
            }
            (Val::Vector(l), Val::Vector(r)) => {
                self.vector_vector(b, op, l, r, t, apply, drops_name)
            }
            _ => Err(QueryError::BadData(format!(
                "operator {op} needs scalars or instant vectors"
            ))),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn vector_vector(
        &mut self,
        b: &BinaryExpr,
        op: &str,
        lhs: Vec<Elem>,
        rhs: Vec<Elem>,
        t: i64,
        apply: impl Fn(f64, f64) -> Option<f64>,
        drops_name: bool,
    ) -> Result<Val, QueryError> {
        let matching = b.modifier.as_ref().and_then(|m| m.matching.as_ref());
        let card = b
            .modifier
            .as_ref()
            .map(|m| m.card.clone())
            .unwrap_or(VectorMatchCardinality::OneToOne);
        let node = b as *const BinaryExpr as usize;
        let sig = |ev: &mut Self, l: &Labels| ev.derive(node, 0, l, |l| signature(l, matching));
        if b.op.is_set_operator() {
            let rsigs: Vec<Labels> = rhs.iter().map(|x| sig(self, &x.labels)).collect();
            let rsigs: FxHashSet<usize> = rsigs.iter().map(Labels::share_id).collect();
            let lsigs: Vec<Labels> = lhs.iter().map(|x| sig(self, &x.labels)).collect();
            return Ok(Val::Vector(match op {
                "and" => lhs
                    .into_iter()
                    .zip(&lsigs)
                    .filter(|(_, s)| rsigs.contains(&s.share_id()))
                    .map(|(x, _)| x)
                    .collect(),
                "unless" => lhs
                    .into_iter()
                    .zip(&lsigs)
                    .filter(|(_, s)| !rsigs.contains(&s.share_id()))
                    .map(|(x, _)| x)
                    .collect(),
                _ => {
                    let lset: FxHashSet<usize> = lsigs.iter().map(Labels::share_id).collect();
                    let rs: Vec<Labels> = rhs.iter().map(|x| sig(self, &x.labels)).collect();
                    let mut out = lhs;
                    out.extend(
                        rhs.into_iter()
                            .zip(&rs)
                            .filter(|(_, s)| !lset.contains(&s.share_id()))
                            .map(|(x, _)| x),
                    );
                    out
                }
            }));
        }
        // Nothing can match when a side is empty: no result, and no complaint about duplicates
        // on the other side (Prometheus short-circuits the same way).
        if lhs.is_empty() || rhs.is_empty() {
            return Ok(Val::Vector(Vec::new()));
        }
        // The "one" side is indexed by signature; group_right swaps the roles.
        let (many, one, swapped, include) = match &card {
            VectorMatchCardinality::OneToMany(inc) => (rhs, lhs, true, inc.labels.clone()),
            VectorMatchCardinality::ManyToOne(inc) => (lhs, rhs, false, inc.labels.clone()),
            _ => (lhs, rhs, false, Vec::new()),
        };
        // Signatures are interned (see `Evaluator::derive`): equal ones share one identity.
        let mut index: FxHashMap<usize, Elem> = FxHashMap::default();
        for x in one {
            let sig = sig(self, &x.labels);
            if index.insert(sig.share_id(), x).is_some() {
                return Err(QueryError::Execution(format!(
                    "found duplicate series for the match group {sig:?} on the {} hand-side of the operation: many-to-many matching not allowed: matching labels must be unique on one side",
                    if swapped { "left" } else { "right" }
                )));
            }
        }
        let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
        let mut seen: FxHashSet<usize> = FxHashSet::default();
        let mut out = Vec::new();
        for x in many {
            let sig = sig(self, &x.labels);
            let Some(o) = index.get(&sig.share_id()) else {
                continue;
            };
            let (a, c) = if swapped { (o.v, x.v) } else { (x.v, o.v) };
            let Some(v) = apply(a, c) else { continue };
            // Only elements a filter keeps can collide (Prometheus checks after filtering).
            if one_to_one && !seen.insert(sig.share_id()) {
                return Err(QueryError::Execution(format!(
                    "found duplicate series for the match group {sig:?} on the left hand-side of the operation: multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                )));
            }
            let mut labels = if drops_name {
                self.unnamed(&x.labels)
            } else {
                x.labels.clone()
            };
            if one_to_one {
                labels = match matching {
                    Some(LabelModifier::Include(_)) if drops_name => self.unnamed(&sig),
                    Some(LabelModifier::Include(_)) => sig.clone(),
                    Some(LabelModifier::Exclude(ign)) => self.derive(node, 1, &labels, |l| {
                        Labels::from_pairs(
                            l.iter().filter(|(k, _)| !ign.labels.iter().any(|n| n == k)),
                        )
                    }),
                    None => labels,
                };
            } else {
                for name in &include {
                    match o.labels.get(name) {
                        Some(val) => labels.set(name, val),
                        None => {
                            labels = Labels::from_pairs(labels.iter().filter(|(k, _)| k != name))
                        }
                    }
                }
                // Built from both sides: interned here so equal results share one identity,
                // as every derived label set does.
                labels = self.intern(labels);
            }
            // A filtering comparison keeps the left-hand value.
            let v = if b.op.is_comparison_operator() && !drops_name {
                a
            } else {
                v
            };
            out.push(Elem { labels, t, v });
        }
        Ok(Val::Vector(out))
    }
}
