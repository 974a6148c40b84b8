//! SLO compliance: per SLO the objective, what was achieved over the range (from the SLO's own
//! queries over the whole range: bad events over all events), the share of the period's error
//! budget spent, and the worst days.

use serde_json::{Value, json};

use super::{Chart, Inputs, Section, Table, rfc3339};
use crate::metrics::promql::{Engine, Value as PValue};

const DAY: i64 = 86_400_000;

/// The largest finite value `q` gives at `t` (an SLO's queries may keep labels: the worst).
pub(super) fn worst(engine: &Engine, q: &str, t: i64) -> Option<f64> {
    let v = match engine.instant(q, t) {
        Ok(PValue::Vector(v)) => v.into_iter().map(|(_, s)| s.1).collect::<Vec<_>>(),
        Ok(PValue::Scalar(s)) => vec![s.1],
        _ => return None,
    };
    v.into_iter().filter(|x| x.is_finite()).reduce(f64::max)
}

fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:.3} %", x * 100.0)
    } else {
        "n/a".into()
    }
}

pub(super) fn report(inp: &Inputs, start: i64, end: i64) -> (String, Vec<Section>, Value) {
    let range_s = ((end - start) / 1000).max(1);
    let window = format!("{range_s}s");
    let mut rows = Vec::new();
    let mut out = Vec::new();
    let mut series = Vec::new();
    for s in inp.slos {
        let budget = s.budget();
        let ratio = s
            .error_ratio(&window)
            .ok()
            .and_then(|q| worst(inp.engine, &q, end))
            .unwrap_or(f64::NAN);
        let achieved = 1.0 - ratio;
        let burn = ratio / budget;
        let burned = burn * (end - start) as f64 / s.period.as_millis() as f64;
        // Days ending at the range's end, newest first, back to its start.
        let mut days = Vec::new();
        let mut t = end;
        while t > start {
            let w = (t - start).min(DAY);
            let r = s
                .error_ratio(&format!("{}s", w / 1000))
                .ok()
                .and_then(|q| worst(inp.engine, &q, t));
            if let Some(r) = r {
                days.push((t - w, r));
            }
            t -= DAY;
        }
        days.reverse();
        series.push((
            s.id.clone(),
            days.iter()
                .map(|&(d, r)| (d, r / budget))
                .collect::<Vec<_>>(),
        ));
        let mut worst_days = days.clone();
        worst_days.retain(|d| d.1 > 0.0);
        worst_days.sort_by(|a, b| b.1.total_cmp(&a.1));
        worst_days.truncate(3);
        let met = achieved.is_finite() && achieved * 100.0 >= s.objective - 1e-9;
        rows.push(vec![
            s.id.clone(),
            format!("{} %", s.objective),
            pct(achieved),
            pct(burned),
            if !achieved.is_finite() {
                "no data".into()
            } else if met {
                "met".into()
            } else {
                "missed".into()
            },
            worst_days
                .first()
                .map(|(d, r)| format!("{} ({} failing)", &rfc3339(*d)[..10], pct(*r)))
                .unwrap_or_else(|| "none".into()),
        ]);
        out.push(json!({
            "id": s.id,
            "service": s.service,
            "slo": s.name,
            "objective": s.objective,
            "errorRatio": ratio,
            "achieved": achieved,
            "burnRate": burn,
            "budgetBurned": burned,
            "met": met,
            "worstDays": worst_days.iter().map(|(d, r)| json!({"day": rfc3339(*d), "errorRatio": r})).collect::<Vec<_>>(),
        }));
    }
    let text = if inp.slos.is_empty() {
        vec!["No SLO is configured (`[slo] files`).".to_string()]
    } else {
        let missed = rows.iter().filter(|r| r[4] == "missed").count();
        vec![format!(
            "{} SLOs; {} missed their objective over the range. Achieved is 1 − bad events / \
             all events over the whole range, from each SLO's own queries; budget burned is the \
             share of the period's error budget this range spent (its burn rate × range / \
             period).",
            inp.slos.len(),
            missed
        )]
    };
    let sections = vec![
        Section {
            heading: "Compliance".into(),
            text,
            table: Some(Table {
                headers: [
                    "SLO",
                    "objective",
                    "achieved",
                    "budget burned",
                    "status",
                    "worst day",
                ]
                .map(String::from)
                .to_vec(),
                rows,
            }),
            chart: None,
        },
        Section {
            heading: "Burn rate by day".into(),
            text: vec![
                "The error ratio of each day over the error budget: above 1 the day \
                        spent more than its share."
                    .into(),
            ],
            table: None,
            chart: (!series.is_empty()).then(|| Chart {
                title: "daily burn rate".into(),
                unit: "×".into(),
                series,
                line: Some(("budget".into(), 1.0)),
            }),
        },
    ];
    ("SLO compliance".into(), sections, json!({ "slos": out }))
}
