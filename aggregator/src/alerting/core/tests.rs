//! The core driven without sled, tasks or a clock: alerts, news and time in; effects out.

use super::*;
use crate::alerting::silence::PostableSilence;

const T0: i64 = 1_800_000_000_000;

fn routing(extra: &str) -> Routing {
    let text = format!(
        "route: {{receiver: hook, group_by: [alertname], group_wait: 10s, group_interval: 1m, repeat_interval: 1h}}
receivers:
  - name: hook
    webhook_configs: [{{url: 'http://127.0.0.1:9/hook'}}]
  - name: pager
    webhook_configs: [{{url: 'http://127.0.0.1:9/page', send_resolved: false}}]
{extra}"
    );
    Routing::new(RoutingConfig::parse(&text).expect("routing"))
}

fn alert(name: &str, severity: &str, instance: &str, ends_at: i64) -> Alert {
    Alert {
        labels: Labels::from_pairs([
            ("alertname", name),
            ("instance", instance),
            ("severity", severity),
        ]),
        annotations: Labels::default(),
        starts_at: T0,
        ends_at,
        generator_url: String::new(),
    }
}

fn notifications(fx: &[Effect]) -> Vec<&Outgoing> {
    fx.iter()
        .filter_map(|f| match f {
            Effect::Notify(o) => Some(o),
            _ => None,
        })
        .collect()
}

fn puts(fx: &[Effect], prefix: &str) -> usize {
    fx.iter()
        .filter(|f| matches!(f, Effect::Put(k, _) if k.starts_with(prefix.as_bytes())))
        .count()
}

#[test]
fn a_group_notifies_once_after_group_wait_and_again_when_it_resolves() {
    let r = routing("");
    let mut c = Core::new(&r, Stored::default(), "http://tt", T0);
    let fx = c.receive(&r, vec![alert("Disk", "warning", "a", 0)], T0);
    assert_eq!(puts(&fx, "a/"), 1, "{fx:?}");
    assert!(
        fx.iter().any(
            |f| matches!(f, Effect::Remediate(a) if a.labels.get("alertname") == Some("Disk"))
        ),
        "the alert is forwarded to remediation"
    );
    // Nothing before group_wait; the deadline says when.
    let (fx, next) = c.step(&r, T0 + 1000);
    assert!(notifications(&fx).is_empty());
    assert_eq!(next, Some(T0 + 10_000));
    let (fx, _) = c.step(&r, T0 + 10_000);
    let n = notifications(&fx);
    assert_eq!(n.len(), 1, "{fx:?}");
    assert_eq!(n[0].receiver, "hook");
    assert_eq!(n[0].body["status"], "firing");
    assert_eq!(n[0].body["externalURL"], "http://tt");
    assert_eq!(
        puts(&fx, "n/"),
        1,
        "the notification log entry goes with it"
    );
    // The next group interval has nothing new to say.
    let (fx, _) = c.step(&r, T0 + 70_000);
    assert!(notifications(&fx).is_empty());
    // Resolved: said once more.
    c.receive(
        &r,
        vec![alert("Disk", "warning", "a", T0 + 80_000)],
        T0 + 80_000,
    );
    let (fx, _) = c.step(&r, T0 + 140_000);
    let n = notifications(&fx);
    assert_eq!(n.len(), 1, "{fx:?}");
    assert_eq!(n[0].body["status"], "resolved");
    // Forgotten 15 minutes after it resolved.
    let (fx, _) = c.step(&r, T0 + 80_000 + RESOLVED_KEEP_MS + 1);
    assert!(fx.contains(&Effect::Delete(alert_key(
        alert("Disk", "warning", "a", 0).fingerprint()
    ))));
}

#[test]
fn silenced_alerts_neither_notify_nor_reach_remediation() {
    let r = routing("");
    let mut c = Core::new(&r, Stored::default(), "", T0);
    let p: PostableSilence = serde_json::from_value(serde_json::json!({
        "matchers": [{"name": "alertname", "value": "Disk", "isRegex": false}],
        "startsAt": crate::alert::rfc3339(T0 - 1000),
        "endsAt": crate::alert::rfc3339(T0 + 3_600_000),
        "createdBy": "me", "comment": "maintenance"
    }))
    .expect("silence");
    let (id, fx) = c.put_silence(p, T0, || "s1".into()).expect("stored");
    assert_eq!(id, "s1");
    assert_eq!(puts(&fx, "s/s1"), 1);
    let fx = c.receive(&r, vec![alert("Disk", "warning", "a", 0)], T0);
    assert!(!fx.iter().any(|f| matches!(f, Effect::Remediate(_))));
    let (fx, _) = c.step(&r, T0 + 20_000);
    assert!(notifications(&fx).is_empty(), "{fx:?}");
    assert_eq!(c.alert_counts(&r, T0 + 20_000), (0, 1));
    // Expired: the next flush notifies.
    c.expire_silence("s1", T0 + 30_000).expect("expired");
    assert!(matches!(
        c.expire_silence("s1", T0 + 31_000),
        Err(RequestError::Invalid(_))
    ));
    assert!(matches!(
        c.expire_silence("nope", T0),
        Err(RequestError::NotFound(_))
    ));
    let (fx, _) = c.step(&r, T0 + 90_000);
    assert_eq!(notifications(&fx).len(), 1, "{fx:?}");
}

const POLICY: &str = "escalation_policies:
  - name: page
    matchers: ['severity=\"critical\"']
    steps: [{receiver: pager}, {receiver: hook, delay: 5m}]
";

#[test]
fn incidents_escalate_step_by_step_until_acknowledged() {
    let r = routing(POLICY);
    let mut c = Core::new(&r, Stored::default(), "", T0);
    let fx = c.receive(&r, vec![alert("Down", "critical", "db-1", 0)], T0);
    assert_eq!(puts(&fx, "i/"), 0, "incidents are written by the step");
    let (fx, _) = c.step(&r, T0);
    assert_eq!(puts(&fx, "i/"), 1);
    let pages: Vec<_> = notifications(&fx)
        .into_iter()
        .filter(|o| o.lane.contains("/incident/"))
        .collect();
    assert_eq!(pages.len(), 1, "{fx:?}");
    assert_eq!(pages[0].receiver, "pager");
    assert_eq!(pages[0].priority, 0, "critical pages first");
    let incident = c.incidents("open", T0);
    assert_eq!(incident.len(), 1);
    let id: u64 = incident[0]["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("id");
    // Acknowledged before the second step is due: nobody else is paged.
    let fx = c.acknowledge(id, "ann", T0 + 60_000).expect("ack");
    assert_eq!(
        puts(&fx, "e/"),
        1,
        "the stopped escalation is written at once"
    );
    let (fx, _) = c.step(&r, T0 + 10 * 60_000);
    assert!(
        !notifications(&fx)
            .iter()
            .any(|o| o.lane.contains("/incident/")),
        "{fx:?}"
    );
    assert!(matches!(
        c.acknowledge(999, "ann", T0),
        Err(RequestError::NotFound(_))
    ));
    assert!(matches!(
        c.incident_of_alert("zz"),
        Err(RequestError::Invalid(_))
    ));
}

#[test]
fn remediation_news_lands_in_the_incident_and_a_failure_pages_with_the_record() {
    let r = routing(POLICY);
    let mut c = Core::new(&r, Stored::default(), "", T0);
    let a = alert("Down", "critical", "db-1", 0);
    let fp = a.fingerprint();
    c.receive(&r, vec![a.clone()], T0);
    c.step(&r, T0);
    let fx = c.remediation(
        &r,
        RemediationNews::Note {
            alert_fp: fp,
            text: "remediation r1 (restart): sent".into(),
        },
        T0 + 1000,
    );
    assert_eq!(puts(&fx, "i/"), 1, "the timeline changed");
    let fx = c.remediation(
        &r,
        RemediationNews::Failed {
            id: "r1".into(),
            alert_fp: fp,
            labels: a.labels.clone(),
            detail: serde_json::json!({"state": "failed"}),
        },
        T0 + 2000,
    );
    let n = notifications(&fx);
    assert_eq!(n.len(), 1, "{fx:?}");
    assert_eq!(n[0].receiver, "pager");
    assert_eq!(n[0].lane, "pager/0/remediation/r1");
    assert_eq!(n[0].body["remediation"]["state"], "failed");
    let inc = &c.incidents("all", T0 + 2000)[0];
    let timeline = inc.to_string();
    assert!(timeline.contains("restart"), "{timeline}");
    assert!(
        timeline.contains("after remediation r1 failed"),
        "{timeline}"
    );
    // News about an alert without an incident changes nothing.
    let fx = c.remediation(
        &r,
        RemediationNews::Remediated {
            alert_fp: 42,
            id: "r2".into(),
        },
        T0 + 3000,
    );
    assert!(fx.is_empty());
}

#[test]
fn a_reload_regroups_under_the_new_routes() {
    let r = routing("");
    let mut c = Core::new(&r, Stored::default(), "", T0);
    c.receive(&r, vec![alert("Disk", "warning", "a", 0)], T0);
    let (fx, _) = c.step(&r, T0 + 10_000);
    assert_eq!(notifications(&fx).len(), 1);
    let r2 = Routing::new(
        RoutingConfig::parse(
            "route: {receiver: other, group_wait: 1s}\nreceivers:\n  - name: other\n    webhook_configs: [{url: 'http://127.0.0.1:9/o'}]\n",
        )
        .expect("routing"),
    );
    c.regroup(&r2, T0 + 11_000);
    let (fx, _) = c.step(&r2, T0 + 12_000);
    let n = notifications(&fx);
    assert_eq!(n.len(), 1, "{fx:?}");
    assert_eq!(n[0].receiver, "other");
}

#[test]
fn notifications_for_integrations_telltale_does_not_deliver_are_counted_and_marked_fired() {
    let text = "route: {receiver: chat, group_by: [alertname], group_wait: 10s, group_interval: 1m, repeat_interval: 1h}
receivers:
  - name: chat
    slack_configs: [{channel: '#ops'}]
    email_configs: [{to: 'ops@example.com'}]
    webhook_configs: [{url: 'http://127.0.0.1:9/hook'}]";
    let r = Routing::new(RoutingConfig::parse(text).expect("routing"));
    let mut c = Core::new(&r, Stored::default(), "", T0);
    c.receive(&r, vec![alert("Disk", "warning", "a", 0)], T0 + 2_000);
    let (fx, _) = c.step(&r, T0 + 12_000);
    // The webhook delivers, announcing the alert first received 10 s before.
    let n = notifications(&fx);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].fired_ms, Some(T0 + 2_000));
    let count = |c: &Core| c.undeliverable().clone().into_iter().collect::<Vec<_>>();
    assert_eq!(
        count(&c),
        [
            (("chat".to_string(), "email"), 1),
            (("chat".to_string(), "slack"), 1)
        ]
    );
    // Nothing new within the repeat interval: not counted again; after it, once more.
    let (fx, _) = c.step(&r, T0 + 80_000);
    assert!(notifications(&fx).is_empty());
    assert_eq!(count(&c)[0].1, 1);
    let (fx, _) = c.step(&r, T0 + 12_000 + 3_600_000 + 60_000);
    assert_eq!(notifications(&fx).len(), 1);
    assert_eq!(
        notifications(&fx)[0].fired_ms,
        None,
        "a repeat announces nothing new"
    );
    assert_eq!(count(&c)[0].1, 2);
}

#[test]
fn an_alert_that_fires_again_after_resolving_is_timed_from_its_new_start() {
    let r = routing("");
    let mut c = Core::new(&r, Stored::default(), "", T0);
    // Fires, is announced, then its end passes without renewal (resolved).
    c.receive(&r, vec![alert("Disk", "warning", "a", T0 + 60_000)], T0);
    let (fx, _) = c.step(&r, T0 + 10_000);
    assert_eq!(notifications(&fx)[0].fired_ms, Some(T0));
    c.step(&r, T0 + 120_000);
    // Fires again an hour later: the notification announcing it counts from then.
    let later = T0 + 3_600_000;
    c.receive(
        &r,
        vec![alert("Disk", "warning", "a", later + 60_000)],
        later,
    );
    let (fx, _) = c.step(&r, later + 10_000);
    let fired: Vec<Option<i64>> = notifications(&fx).iter().map(|n| n.fired_ms).collect();
    assert!(fired.contains(&Some(later)), "{fired:?}");
}
