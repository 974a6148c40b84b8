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
            "why": i.why,
        })),
        "acknowledged": i.acknowledged.as_ref().map(|(by, at)| json!({"by": by, "at": rfc3339(*at)})),
        "remediated": i.remediated.as_ref().map(|(id, at)| json!({"remediation": id, "at": rfc3339(*at)})),
        "alerts": alerts,
        "timeline": i.timeline.iter().map(|e| json!({"at": rfc3339(e.at), "kind": e.kind, "text": e.text})).collect::<Vec<_>>(),
        "ageSeconds": (now - i.opened_at) / 1000,
        "logs": logs_link(i),
    })
}

/// What the incident's hosts logged around it: a LogQL selector over the `instance`s of its
/// alerts and a window from 15 minutes before it opened to 5 minutes after it resolved (open
/// end while it is open), with the Loki API path that runs it. `null` when no alert names an
/// instance.
pub fn logs_link(i: &Incident) -> Value {
    let mut hosts: Vec<&str> = i
        .alerts
        .values()
        .filter_map(|a| a.labels.get("instance"))
        .filter(|h| !h.is_empty())
        .collect();
    hosts.sort_unstable();
    hosts.dedup();
    if hosts.is_empty() {
        return Value::Null;
    }
    let alternatives: Vec<String> = hosts.iter().map(|h| regex::escape(h)).collect();
    let query = format!("{{instance=~{:?}}}", alternatives.join("|"));
    let start_ms = i.opened_at - 15 * 60_000;
    let end_ms = (!i.open()).then_some(i.resolved_at + 5 * 60_000);
    let mut path = format!(
        "/loki/api/v1/query_range?direction=backward&limit=1000&query={}&start={}",
        form_urlencoded::byte_serialize(query.as_bytes()).collect::<String>(),
        start_ms.saturating_mul(1_000_000)
    );
    if let Some(e) = end_ms {
        path.push_str(&format!("&end={}", e.saturating_mul(1_000_000)));
    }
    json!({
        "query": query,
        "start": rfc3339(start_ms),
        "end": end_ms.map(rfc3339),
        "path": path,
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
    fn an_incident_links_the_logs_of_its_hosts_around_it() {
        use crate::alerting::correlate::IncidentAlert;
        let mut i = Incident {
            id: 3,
            opened_at: 1_700_000_000_000,
            updated_at: 1_700_000_000_000,
            resolved_at: 0,
            alerts: Default::default(),
            root_cause: 0,
            acknowledged: None,
            remediated: None,
            timeline: Vec::new(),
            why: String::new(),
        };
        assert_eq!(logs_link(&i), Value::Null);
        for (fp, host) in [(1, "db-1.example"), (2, "web-1"), (3, "web-1")] {
            i.alerts.insert(
                fp,
                IncidentAlert {
                    labels: Labels::from_pairs([("alertname", "X"), ("instance", host)]),
                    annotations: Labels::default(),
                    starts_at: 0,
                    resolved_at: 0,
                    layer: 0,
                },
            );
        }
        let l = logs_link(&i);
        // The alternatives are regex-escaped: they match the names exactly, nothing else.
        let q = l["query"].as_str().expect("query");
        let inner: String =
            serde_json::from_str(q.trim_start_matches("{instance=~").trim_end_matches('}'))
                .expect("a quoted regex");
        let re = regex::Regex::new(&format!("^(?:{inner})$")).expect("regex");
        assert!(re.is_match("db-1.example") && re.is_match("web-1"));
        assert!(!re.is_match("db-1xexample") && !re.is_match("web-10"));
        assert_eq!(l["end"], Value::Null, "open: no end");
        assert!(
            l["path"]
                .as_str()
                .is_some_and(|p| p.contains("&start=1699999100000000000"))
        );
        i.resolved_at = 1_700_000_600_000;
        let l = logs_link(&i);
        assert_eq!(l["end"], rfc3339(1_700_000_900_000));
        assert!(
            l["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("&end=1700000900000000000"))
        );
    }

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
