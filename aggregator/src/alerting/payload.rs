//! Notification bodies: Alertmanager's webhook v4 JSON (what existing webhook receivers
//! parse), the alerts array of its v2 API (`POST /api/v2/alerts`), and incident pages (a v4
//! body with the incident under an extra `telltale` key, which v4 receivers ignore).

use serde_json::{Value, json};
use telltale_common::model::Labels;

use super::correlate::Incident;
use super::escalate::Page;
use crate::alert::{Alert, fingerprint_hex, labels_json, rfc3339};

fn common(sets: &[&Labels]) -> Labels {
    let Some(first) = sets.first() else {
        return Labels::default();
    };
    Labels::from_pairs(
        first
            .iter()
            .filter(|(k, v)| sets.iter().all(|s| s.get(k) == Some(v)))
            .map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

fn alert_json(a: &Alert, now: i64) -> Value {
    let resolved = a.resolved_at(now);
    json!({
        "status": if resolved { "resolved" } else { "firing" },
        "labels": labels_json(&a.labels),
        "annotations": labels_json(&a.annotations),
        "startsAt": rfc3339(a.starts_at),
        "endsAt": if resolved { rfc3339(a.ends_at) } else { rfc3339(0) },
        "generatorURL": a.generator_url,
        "fingerprint": fingerprint_hex(a.fingerprint()),
    })
}

/// Alertmanager's webhook v4 body. `max_alerts` > 0 truncates (the count goes to
/// `truncatedAlerts`).
pub fn webhook_v4(
    receiver: &str,
    group_key: &str,
    group_labels: &Labels,
    alerts: &[Alert],
    now: i64,
    external_url: &str,
    max_alerts: usize,
) -> Value {
    let firing = alerts.iter().any(|a| !a.resolved_at(now));
    let labels: Vec<&Labels> = alerts.iter().map(|a| &a.labels).collect();
    let anns: Vec<&Labels> = alerts.iter().map(|a| &a.annotations).collect();
    let shown = if max_alerts > 0 && alerts.len() > max_alerts {
        &alerts[..max_alerts]
    } else {
        alerts
    };
    json!({
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": alerts.len() - shown.len(),
        "status": if firing { "firing" } else { "resolved" },
        "receiver": receiver,
        "groupLabels": labels_json(group_labels),
        "commonLabels": labels_json(&common(&labels)),
        "commonAnnotations": labels_json(&common(&anns)),
        "externalURL": external_url,
        "alerts": shown.iter().map(|a| alert_json(a, now)).collect::<Vec<_>>(),
    })
}

/// The body of `POST /api/v2/alerts` on an Alertmanager.
pub fn alertmanager_v2(alerts: &[Alert]) -> Value {
    Value::Array(
        alerts
            .iter()
            .map(|a| {
                json!({
                    "labels": labels_json(&a.labels),
                    "annotations": labels_json(&a.annotations),
                    "startsAt": rfc3339(a.starts_at),
                    "endsAt": rfc3339(a.ends_at),
                    "generatorURL": a.generator_url,
                })
            })
            .collect(),
    )
}

/// An incident as the API and pages show it.
pub fn incident_json(i: &Incident, now: i64) -> Value {
    let alerts: Vec<Value> = i
        .alerts
        .iter()
        .map(|(fp, a)| {
            json!({
                "fingerprint": fingerprint_hex(*fp),
                "labels": labels_json(&a.labels),
                "annotations": labels_json(&a.annotations),
                "startsAt": rfc3339(a.starts_at),
                "status": if a.resolved_at == 0 { "firing" } else { "resolved" },
                "layer": a.layer,
            })
        })
        .collect();
    json!({
        "id": i.id.to_string(),
        "status": if i.open() { "open" } else { "resolved" },
        "openedAt": rfc3339(i.opened_at),
        "updatedAt": rfc3339(i.updated_at),
        "resolvedAt": if i.open() { Value::Null } else { Value::String(rfc3339(i.resolved_at)) },
        "priority": i.priority(),
        "rootCause": i.root().map(|r| json!({
            "fingerprint": fingerprint_hex(i.root_cause),
            "alertname": r.labels.get("alertname").unwrap_or(""),
            "labels": labels_json(&r.labels),
        })),
        "acknowledged": i.acknowledged.as_ref().map(|(by, at)| json!({"by": by, "at": rfc3339(*at)})),
        "remediated": i.remediated.as_ref().map(|(id, at)| json!({"remediation": id, "at": rfc3339(*at)})),
        "alerts": alerts,
        "timeline": i.timeline.iter().map(|e| json!({"at": rfc3339(e.at), "kind": e.kind, "text": e.text})).collect::<Vec<_>>(),
        "ageSeconds": (now - i.opened_at) / 1000,
    })
}

/// A page for an incident: v4-shaped (its firing alerts, root cause first) plus the incident.
pub fn page_v4(p: &Page, i: &Incident, now: i64, external_url: &str) -> Value {
    let alerts = i.firing_alerts();
    let mut body = webhook_v4(
        &p.receiver,
        &format!("incident/{}", i.id),
        &Labels::from_pairs([("incident", i.id.to_string())]),
        &alerts,
        now,
        external_url,
        0,
    );
    if let Value::Object(m) = &mut body {
        m.insert(
            "telltale".into(),
            json!({
                "incident": incident_json(i, now),
                "escalation": {"policy": p.policy, "step": p.step, "round": p.round, "priority": p.priority},
            }),
        );
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_v4_has_alertmanagers_fields() {
        let a = Alert {
            labels: Labels::from_pairs([("alertname", "Disk"), ("instance", "a")]),
            annotations: Labels::from_pairs([("summary", "full")]),
            starts_at: 1000,
            ends_at: i64::MAX,
            generator_url: "http://x/graph".into(),
        };
        let mut b = a.clone();
        b.labels.set("instance", "b");
        b.ends_at = 1500;
        let v = webhook_v4(
            "r",
            "0:{}",
            &Labels::from_pairs([("alertname", "Disk")]),
            &[a, b],
            2000,
            "http://agg",
            1,
        );
        assert_eq!(v["version"], "4");
        assert_eq!(v["status"], "firing");
        assert_eq!(v["truncatedAlerts"], 1);
        assert_eq!(v["commonLabels"], json!({"alertname": "Disk"}));
        assert_eq!(v["commonAnnotations"], json!({"summary": "full"}));
        assert_eq!(v["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(
            v["alerts"][0]["fingerprint"].as_str().map(str::len),
            Some(16)
        );
        let am = alertmanager_v2(&[]);
        assert_eq!(am, json!([]));
    }
}
