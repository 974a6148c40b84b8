//! `/api/v1/slos`: each SLO's state read back from its recorded series — the error ratio and
//! burn rate over every window, the SLI now, the error budget left over the period, and its
//! alerts' states.

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};
use telltale_common::model::Labels;

use super::{Slo, WINDOWS};
use crate::metrics::promql::{Engine, Value};
use crate::rules::manager::GroupView;

/// The labels that tell one series of an SLO from another (none of Sloth's, no name).
fn key(l: &Labels) -> BTreeMap<String, String> {
    l.iter()
        .filter(|(k, _)| *k != "__name__" && !k.starts_with("sloth_"))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

fn vector(engine: &Engine, q: &str, t: i64) -> Vec<(BTreeMap<String, String>, f64)> {
    match engine.instant(q, t) {
        Ok(Value::Vector(v)) => v.into_iter().map(|(l, s)| (key(&l), s.1)).collect(),
        _ => Vec::new(),
    }
}

/// The state of every SLO at `t` (ms). `groups` are the rule manager's views (for alerts).
pub fn status(engine: &Engine, slos: &[Slo], groups: &[GroupView], t: i64) -> Vec<Json> {
    slos.iter().map(|s| one(engine, s, groups, t)).collect()
}

fn one(engine: &Engine, s: &Slo, groups: &[GroupView], t: i64) -> Json {
    let sel = s.selector();
    let budget = s.budget();
    let period = s.period_window();
    let mut series: BTreeMap<BTreeMap<String, String>, BTreeMap<String, f64>> = BTreeMap::new();
    for w in WINDOWS.iter().copied().chain([period.as_str()]) {
        for (k, v) in vector(engine, &format!("slo:sli_error:ratio_rate{w}{{{sel}}}"), t) {
            series.entry(k).or_default().insert(w.to_string(), v);
        }
    }
    let remaining: BTreeMap<_, _> = vector(
        engine,
        &format!("slo:period_error_budget_remaining:ratio{{{sel}}}"),
        t,
    )
    .into_iter()
    .collect();
    let mut worst_sli: Option<f64> = None;
    let mut worst_left: Option<f64> = None;
    let list: Vec<Json> = series
        .iter()
        .map(|(labels, ratios)| {
            let sli = ratios.get("5m").map(|r| 1.0 - r);
            let left = remaining.get(labels).copied();
            if let Some(x) = sli.filter(|x| x.is_finite()) {
                worst_sli = Some(worst_sli.map_or(x, |w| w.min(x)));
            }
            if let Some(x) = left.filter(|x| x.is_finite()) {
                worst_left = Some(worst_left.map_or(x, |w| w.min(x)));
            }
            json!({
                "labels": labels,
                "sli": sli,
                "errorRatio": ratios.iter().map(|(w, r)| (w.clone(), json!(r))).collect::<serde_json::Map<_, _>>(),
                "burnRate": ratios.iter().map(|(w, r)| (w.clone(), json!(r / budget))).collect::<serde_json::Map<_, _>>(),
                "errorBudgetRemaining": left,
            })
        })
        .collect();
    let mut alerts = Vec::new();
    for g in groups {
        for r in &g.rules {
            for a in &r.alerts {
                if a.labels.get("sloth_id") == Some(s.id.as_str()) {
                    alerts.push(json!({
                        "alertname": r.rule.name,
                        "severity": a.labels.get("sloth_severity").unwrap_or(""),
                        "labels": key(&a.labels),
                        "state": a.state.as_str(),
                        "activeAt": a.active_at as f64 / 1000.0,
                    }));
                }
            }
        }
    }
    json!({
        "id": s.id,
        "service": s.service,
        "name": s.name,
        "description": s.description,
        "spec": s.spec,
        "file": s.file.display().to_string(),
        "objective": s.objective,
        "errorBudget": budget,
        "periodDays": s.period.as_secs_f64() / 86_400.0,
        "labels": s.labels,
        "sli": worst_sli,
        "errorBudgetRemaining": worst_left,
        "series": list,
        "alerts": alerts,
    })
}
