//! Binary operators between metric results, with Prometheus' semantics (which Loki follows):
//! arithmetic and comparisons element by element, a number applied to every series, one-to-one
//! matching on all labels or on `on (...)` / `ignoring (...)`, and the set operators.

use std::collections::{HashMap, HashSet};

use telltale_common::model::Labels;

use super::EvalError;
use crate::logs::logql::{BinOp, Cmp, Matching};

/// The value of an expression at one step.
#[derive(Debug, Clone)]
pub(super) enum Operand {
    /// A number.
    Scalar(f64),
    /// Series and their values.
    Vector(Vec<(Labels, f64)>),
}

/// `(value, keep)` of `l op r` for arithmetic and comparison operators.
fn elem(op: BinOp, l: f64, r: f64) -> (f64, bool) {
    match op {
        BinOp::Add => (l + r, true),
        BinOp::Sub => (l - r, true),
        BinOp::Mul => (l * r, true),
        BinOp::Div => (l / r, true),
        BinOp::Mod => (l % r, true),
        BinOp::Pow => (l.powf(r), true),
        BinOp::Cmp(c) => (
            l,
            match c {
                Cmp::Eq => l == r,
                Cmp::Ne => l != r,
                Cmp::Gt => l > r,
                Cmp::Ge => l >= r,
                Cmp::Lt => l < r,
                Cmp::Le => l <= r,
            },
        ),
        // Set operators never reach here (the parser refuses them with numbers, and
        // vector-vector set operations are handled apart).
        BinOp::And | BinOp::Or | BinOp::Unless => (l, true),
    }
}

/// The labels two series are matched on.
fn signature(l: &Labels, m: &Matching) -> Labels {
    Labels::from_pairs(
        l.iter()
            .filter(|(k, _)| m.labels.iter().any(|x| x == k) == m.on)
            .map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

/// `l op r` at one step.
pub(super) fn apply(
    op: BinOp,
    bool_mod: bool,
    m: &Matching,
    l: Operand,
    r: Operand,
) -> Result<Operand, EvalError> {
    let finish = |value: f64, keep: bool| -> Option<f64> {
        if bool_mod {
            Some(if keep { 1.0 } else { 0.0 })
        } else {
            keep.then_some(value)
        }
    };
    Ok(match (l, r) {
        (Operand::Scalar(a), Operand::Scalar(b)) => {
            let (v, keep) = elem(op, a, b);
            Operand::Scalar(finish(v, keep).unwrap_or(f64::NAN))
        }
        (Operand::Vector(v), Operand::Scalar(b)) => Operand::Vector(
            v.into_iter()
                .filter_map(|(l, a)| {
                    let (x, keep) = elem(op, a, b);
                    finish(x, keep).map(|x| (l, x))
                })
                .collect(),
        ),
        (Operand::Scalar(a), Operand::Vector(v)) => Operand::Vector(
            v.into_iter()
                .filter_map(|(l, b)| {
                    let (x, keep) = elem(op, a, b);
                    // A comparison keeps the series' own value, whichever side it is on.
                    let x = if matches!(op, BinOp::Cmp(_)) { b } else { x };
                    finish(x, keep).map(|x| (l, x))
                })
                .collect(),
        ),
        (Operand::Vector(lv), Operand::Vector(rv)) => Operand::Vector(if op.is_set() {
            set_op(op, m, lv, rv)
        } else {
            one_to_one(op, bool_mod, m, lv, rv)?
        }),
    })
}

fn set_op(
    op: BinOp,
    m: &Matching,
    lv: Vec<(Labels, f64)>,
    rv: Vec<(Labels, f64)>,
) -> Vec<(Labels, f64)> {
    let right: HashSet<Labels> = rv.iter().map(|(l, _)| signature(l, m)).collect();
    match op {
        BinOp::And => lv
            .into_iter()
            .filter(|(l, _)| right.contains(&signature(l, m)))
            .collect(),
        BinOp::Unless => lv
            .into_iter()
            .filter(|(l, _)| !right.contains(&signature(l, m)))
            .collect(),
        _ => {
            let left: HashSet<Labels> = lv.iter().map(|(l, _)| signature(l, m)).collect();
            let mut out = lv;
            out.extend(
                rv.into_iter()
                    .filter(|(l, _)| !left.contains(&signature(l, m))),
            );
            out
        }
    }
}

fn one_to_one(
    op: BinOp,
    bool_mod: bool,
    m: &Matching,
    lv: Vec<(Labels, f64)>,
    rv: Vec<(Labels, f64)>,
) -> Result<Vec<(Labels, f64)>, EvalError> {
    let mut right: HashMap<Labels, f64> = HashMap::with_capacity(rv.len());
    for (l, v) in rv {
        if right.insert(signature(&l, m), v).is_some() {
            return Err(EvalError::Matching(format!(
                "found duplicate series for the match group {} on the right hand-side of the operation: many-to-many matching not allowed: matching labels must be unique on one side",
                show(&signature(&l, m))
            )));
        }
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (l, a) in lv {
        let sig = signature(&l, m);
        let Some(&b) = right.get(&sig) else { continue };
        if !seen.insert(sig.clone()) {
            return Err(EvalError::Matching(format!(
                "multiple matches for labels {}: many-to-one matching must be explicit (group_left/group_right)",
                show(&sig)
            )));
        }
        let (x, keep) = elem(op, a, b);
        let x = if bool_mod {
            if keep { 1.0 } else { 0.0 }
        } else if keep {
            x
        } else {
            continue;
        };
        // One-to-one results keep the matched labels only with `on`, and lose the ignored
        // ones with `ignoring` (Prometheus' resultMetric): the signature.
        out.push((sig, x));
    }
    Ok(out)
}

/// `{a="1", b="2"}`
fn show(l: &Labels) -> String {
    let parts: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", parts.join(", "))
}
