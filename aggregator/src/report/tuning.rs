//! Alert tuning, from the `ALERTS` history (sampled at one-minute steps), the silences and the
//! incidents: the noisiest alerts (fires per week), flapping ones (a fire starting within 15
//! minutes of the same alert's last resolution) with a suggested `for:` that would have held
//! back 90 % of their short fires, alerting rules that never fired, alerts whose every fire
//! was silenced, and alerts whose incidents were never acknowledged.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use telltale_common::model::Labels;

use super::{Inputs, Section, Table, duration_text, parse_rfc3339};

/// The history's resolution.
const STEP: i64 = 60_000;
/// A fire this soon after the same alert resolved is a flap.
const FLAP_GAP: i64 = 15 * 60_000;
/// A fire shorter than this is short.
const SHORT: i64 = 10 * 60_000;
const WEEK: f64 = 7.0 * 86_400_000.0;

#[derive(Default)]
struct Stats {
    fires: u64,
    firing_ms: i64,
    flaps: u64,
    short: Vec<i64>,
    silenced: u64,
}

/// Whether silence `s` (v2 JSON) covers an alert with `labels` at `t`.
fn silences(s: &Value, labels: &Labels, t: i64) -> bool {
    let from = s["startsAt"]
        .as_str()
        .and_then(parse_rfc3339)
        .unwrap_or(i64::MAX);
    let to = s["endsAt"]
        .as_str()
        .and_then(parse_rfc3339)
        .unwrap_or(i64::MIN);
    if t < from || t >= to {
        return false;
    }
    s["matchers"].as_array().is_some_and(|ms| {
        ms.iter().all(|m| {
            let v = labels.get(m["name"].as_str().unwrap_or("")).unwrap_or("");
            let want = m["value"].as_str().unwrap_or("");
            let hit = if m["isRegex"].as_bool().unwrap_or(false) {
                crate::labels::anchored_regex(want).is_ok_and(|r| r.is_match(v))
            } else {
                v == want
            };
            hit == m["isEqual"].as_bool().unwrap_or(true)
        })
    })
}

/// The 90th percentile of `v`, rounded up to a whole minute.
fn suggest_for(v: &[i64]) -> i64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    let i = ((v.len() as f64 * 0.9).ceil() as usize).clamp(1, v.len()) - 1;
    (v[i] + STEP - 1) / STEP * STEP + STEP
}

pub(super) fn report(inp: &Inputs, start: i64, end: i64) -> (String, Vec<Section>, Value) {
    let (s0, e0) = (start - start.rem_euclid(STEP), end - end.rem_euclid(STEP));
    let history = inp
        .engine
        .range(r#"ALERTS{alertstate="firing"}"#, s0, e0, STEP)
        .unwrap_or_default();
    let mut by_name: BTreeMap<String, Stats> = BTreeMap::new();
    for s in history {
        let name = s.labels.get("alertname").unwrap_or("").to_string();
        let mut labels = s.labels.clone();
        labels.remove("__name__");
        labels.remove("alertstate");
        // Episodes: runs of consecutive steps with the series present.
        let mut episodes: Vec<(i64, i64)> = Vec::new();
        for p in s.samples.iter().filter(|p| p.1.is_finite()) {
            match episodes.last_mut() {
                Some(e) if p.0 - e.1 <= STEP => e.1 = p.0,
                _ => episodes.push((p.0, p.0)),
            }
        }
        let st = by_name.entry(name).or_default();
        let mut last_end: Option<i64> = None;
        for &(a, b) in &episodes {
            let len = b - a + STEP;
            st.firing_ms += len;
            // One already firing when the range starts is not a fire of the range.
            if a > s0 {
                st.fires += 1;
                if last_end.is_some_and(|e| a - e <= FLAP_GAP) {
                    st.flaps += 1;
                }
                if len < SHORT && b < e0 {
                    st.short.push(len);
                }
                if inp.silences.iter().any(|x| silences(x, &labels, a)) {
                    st.silenced += 1;
                }
            }
            last_end = Some(b + STEP);
        }
    }
    // Incidents of the range by the alert names they hold: (incidents, acknowledged).
    let mut acks: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for i in &inp.incidents {
        let opened = i["openedAt"].as_str().and_then(parse_rfc3339);
        if !opened.is_some_and(|t| t > start && t <= end) {
            continue;
        }
        let names: BTreeSet<&str> = i["alerts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.pointer("/labels/alertname").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        for n in names {
            let e = acks.entry(n.to_string()).or_default();
            e.0 += 1;
            e.1 += u64::from(!i["acknowledged"].is_null());
        }
    }
    let weeks = (end - start) as f64 / WEEK;
    let mut noisy: Vec<(&String, &Stats)> = by_name.iter().filter(|(_, s)| s.fires > 0).collect();
    noisy.sort_by(|a, b| b.1.fires.cmp(&a.1.fires).then(a.0.cmp(b.0)));
    let rows: Vec<Vec<String>> = noisy
        .iter()
        .map(|(n, s)| {
            vec![
                (*n).clone(),
                s.fires.to_string(),
                format!("{:.1}", s.fires as f64 / weeks),
                duration_text(s.firing_ms as f64 / 1000.0),
                s.flaps.to_string(),
                if s.flaps >= 2 && !s.short.is_empty() {
                    duration_text(suggest_for(&s.short) as f64 / 1000.0)
                } else {
                    "-".into()
                },
                s.silenced.to_string(),
            ]
        })
        .collect();
    let never: Vec<String> = inp
        .alert_rules
        .iter()
        .filter(|r| {
            by_name
                .get(*r)
                .is_none_or(|s| s.fires == 0 && s.firing_ms == 0)
        })
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let always_silenced: Vec<String> = noisy
        .iter()
        .filter(|(_, s)| s.silenced == s.fires)
        .map(|(n, _)| (*n).clone())
        .collect();
    let unacked: Vec<String> = acks
        .iter()
        .filter(|(_, (n, a))| *n > 0 && *a == 0)
        .map(|(n, _)| n.clone())
        .collect();
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let sections = vec![
        Section {
            heading: "Noisiest alerts".into(),
            text: vec![format!(
                "Fires are alerts starting to fire in the range (from ALERTS at 1-minute \
                 resolution); a flap is a fire within {} of the same alert's last \
                 resolution. The suggested `for:` would have held back 90 % of the short \
                 (under {}) fires of a flapping alert.",
                duration_text(FLAP_GAP as f64 / 1000.0),
                duration_text(SHORT as f64 / 1000.0)
            )],
            table: Some(Table {
                headers: [
                    "alert",
                    "fires",
                    "per week",
                    "firing time",
                    "flaps",
                    "suggested for",
                    "silenced fires",
                ]
                .map(String::from)
                .to_vec(),
                rows,
            }),
            chart: None,
        },
        Section {
            heading: "Never fired".into(),
            text: vec![format!(
                "Alerting rules that never fired in the range: {}.",
                list(&never)
            )],
            table: None,
            chart: None,
        },
        Section {
            heading: "Always silenced".into(),
            text: vec![format!(
                "Alerts whose every fire was silenced: {}.",
                list(&always_silenced)
            )],
            table: None,
            chart: None,
        },
        Section {
            heading: "Never acknowledged".into(),
            text: vec![format!(
                "Alerts whose incidents were never acknowledged: {}.",
                list(&unacked)
            )],
            table: None,
            chart: None,
        },
    ];
    let summary = json!({
        "alerts": noisy.iter().map(|(n, s)| json!({
            "alertname": n, "fires": s.fires, "firesPerWeek": s.fires as f64 / weeks,
            "firingSeconds": s.firing_ms / 1000, "flaps": s.flaps,
            "suggestedForSeconds": (s.flaps >= 2 && !s.short.is_empty()).then(|| suggest_for(&s.short) / 1000),
            "silencedFires": s.silenced,
        })).collect::<Vec<_>>(),
        "neverFired": never,
        "alwaysSilenced": always_silenced,
        "neverAcknowledged": unacked,
    });
    ("Alert tuning".into(), sections, summary)
}
