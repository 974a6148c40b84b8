//! Incidents over the range: how many opened, how fast they were acknowledged (MTTA) and
//! resolved (MTTR), their root causes, the pages sent for them, and the remediations started
//! in the range with their outcomes.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Inputs, Section, Table, duration_text, parse_rfc3339};

fn at(v: &Value, ptr: &str) -> Option<i64> {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .and_then(parse_rfc3339)
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

pub(super) fn report(inp: &Inputs, start: i64, end: i64) -> (String, Vec<Section>, Value) {
    let opened: Vec<&Value> = inp
        .incidents
        .iter()
        .filter(|i| at(i, "/openedAt").is_some_and(|t| t > start && t <= end))
        .collect();
    let (mut tta, mut ttr) = (Vec::new(), Vec::new());
    let mut causes: BTreeMap<String, u64> = BTreeMap::new();
    let mut pages = 0u64;
    let mut rows = Vec::new();
    for i in &opened {
        let o = at(i, "/openedAt").unwrap_or(start);
        let ack = at(i, "/acknowledged/at");
        let res = at(i, "/resolvedAt");
        if let Some(a) = ack {
            tta.push((a - o) as f64 / 1000.0);
        }
        if let Some(r) = res {
            ttr.push((r - o) as f64 / 1000.0);
        }
        let cause = i
            .pointer("/rootCause/alertname")
            .and_then(Value::as_str)
            .unwrap_or("(none)")
            .to_string();
        *causes.entry(cause.clone()).or_default() += 1;
        let paged = i["timeline"]
            .as_array()
            .map_or(0, |t| t.iter().filter(|e| e["kind"] == "paged").count())
            as u64;
        pages += paged;
        rows.push(vec![
            i["id"].as_str().unwrap_or("").to_string(),
            super::rfc3339(o),
            cause,
            i["alerts"].as_array().map_or(0, Vec::len).to_string(),
            ack.map_or("never".into(), |a| duration_text((a - o) as f64 / 1000.0)),
            res.map_or("open".into(), |r| duration_text((r - o) as f64 / 1000.0)),
            paged.to_string(),
        ]);
    }
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    for r in &inp.remediations {
        if at(r, "/createdAt").is_some_and(|t| t > start && t <= end) {
            let s = r["state"].as_str().unwrap_or("unknown").to_string();
            *outcomes.entry(s).or_default() += 1;
        }
    }
    let remediations: u64 = outcomes.values().sum();
    let (mtta, mttr) = (mean(&tta), mean(&ttr));
    let mut cause_rows: Vec<(String, u64)> = causes.clone().into_iter().collect();
    cause_rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let sections = vec![
        Section {
            heading: "Summary".into(),
            text: vec![format!(
                "{} incidents opened; {} acknowledged (MTTA {}), {} resolved (MTTR {}); {} pages \
                 sent; {} remediations started.",
                opened.len(),
                tta.len(),
                duration_text(mtta),
                ttr.len(),
                duration_text(mttr),
                pages,
                remediations
            )],
            table: None,
            chart: None,
        },
        Section {
            heading: "Root causes".into(),
            text: Vec::new(),
            table: Some(Table {
                headers: vec!["root cause".into(), "incidents".into()],
                rows: cause_rows
                    .iter()
                    .map(|(c, n)| vec![c.clone(), n.to_string()])
                    .collect(),
            }),
            chart: None,
        },
        Section {
            heading: "Remediations".into(),
            text: Vec::new(),
            table: Some(Table {
                headers: vec!["outcome".into(), "remediations".into()],
                rows: outcomes
                    .iter()
                    .map(|(s, n)| vec![s.clone(), n.to_string()])
                    .collect(),
            }),
            chart: None,
        },
        Section {
            heading: "Incidents".into(),
            text: Vec::new(),
            table: Some(Table {
                headers: [
                    "id",
                    "opened",
                    "root cause",
                    "alerts",
                    "acknowledged after",
                    "resolved after",
                    "pages",
                ]
                .map(String::from)
                .to_vec(),
                rows,
            }),
            chart: None,
        },
    ];
    let summary = json!({
        "incidents": opened.len(),
        "acknowledged": tta.len(),
        "resolved": ttr.len(),
        "mttaSeconds": mtta,
        "mttrSeconds": mttr,
        "pages": pages,
        "rootCauses": causes,
        "remediations": remediations,
        "remediationOutcomes": outcomes,
    });
    ("Incidents".into(), sections, summary)
}
