//! Aggregation groups and the notification log, Alertmanager's way, without I/O.
//!
//! Each alert goes to every route that matches it, into the group of that route keyed by the
//! route's `group_by` labels. A new group flushes after `group_wait`; after that every
//! `group_interval`. A flush notifies a receiver only when the notification log says so
//! ([`needs_update`]): new firing alerts, all resolved, newly resolved ones (with
//! `send_resolved`), or `repeat_interval` passed. Resolved alerts leave the group after the
//! flush that reported them.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use telltale_common::model::Labels;

use super::Alert;
use super::route::Route;

/// What the notification log remembers of the last notification of a group to a receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NflogEntry {
    /// Fingerprints of the firing alerts notified (sorted).
    pub firing: Vec<u64>,
    /// Fingerprints of the resolved alerts notified (sorted).
    pub resolved: Vec<u64>,
    /// When (ms).
    pub at: i64,
}

/// Alertmanager's `DedupStage.needsUpdate`.
pub fn needs_update(
    entry: Option<&NflogEntry>,
    firing: &[u64],
    resolved: &[u64],
    send_resolved: bool,
    repeat: Duration,
    now: i64,
) -> bool {
    let Some(e) = entry else {
        return !firing.is_empty();
    };
    let subset = |small: &[u64], big: &[u64]| small.iter().all(|x| big.binary_search(x).is_ok());
    if !subset(firing, &e.firing) {
        return true;
    }
    if firing.is_empty() {
        // All resolved: notify if the receiver was told of firing alerts (to clear them).
        return !e.firing.is_empty();
    }
    if send_resolved && !subset(resolved, &e.resolved) {
        return true;
    }
    e.at + repeat.as_millis() as i64 <= now
}

/// A group ready to notify.
#[derive(Debug, Clone)]
pub struct Flush {
    /// Group key: route id + group labels.
    pub key: String,
    /// The route's id.
    pub route_id: String,
    /// Receiver.
    pub receiver: String,
    /// Group labels.
    pub group_labels: Labels,
    /// `repeat_interval`.
    pub repeat_interval: Duration,
    /// The group's alerts (firing and resolved), in fingerprint order.
    pub alerts: Vec<Alert>,
}

#[derive(Debug)]
struct Group {
    route_id: String,
    receiver: String,
    group_labels: Labels,
    group_interval: Duration,
    repeat_interval: Duration,
    alerts: HashMap<u64, Alert>,
    next_flush: i64,
}

/// The aggregation groups.
#[derive(Debug, Default)]
pub struct Dispatcher {
    groups: HashMap<String, Group>,
}

impl Dispatcher {
    /// Puts `alert` into the groups of every route it matches.
    pub fn insert(&mut self, root: &Route, alert: &Alert, now: i64) {
        let fp = alert.fingerprint();
        for r in root.matching(&alert.labels) {
            let gl = r.group_labels(&alert.labels);
            let key = format!("{}:{}", r.id, group_key_labels(&gl));
            let g = self.groups.entry(key).or_insert_with(|| Group {
                route_id: r.id.clone(),
                receiver: r.receiver.clone(),
                group_labels: gl,
                group_interval: r.group_interval,
                repeat_interval: r.repeat_interval,
                alerts: HashMap::new(),
                next_flush: now + r.group_wait.as_millis() as i64,
            });
            g.alerts.insert(fp, alert.clone());
        }
    }

    /// The groups due at `now`; each is scheduled again one `group_interval` later.
    pub fn due(&mut self, now: i64) -> Vec<Flush> {
        let mut out = Vec::new();
        for (key, g) in &mut self.groups {
            if g.next_flush > now {
                continue;
            }
            g.next_flush = now + g.group_interval.as_millis() as i64;
            let mut alerts: Vec<Alert> = g.alerts.values().cloned().collect();
            alerts.sort_by_key(|a| a.fingerprint());
            out.push(Flush {
                key: key.clone(),
                route_id: g.route_id.clone(),
                receiver: g.receiver.clone(),
                group_labels: g.group_labels.clone(),
                repeat_interval: g.repeat_interval,
                alerts,
            });
        }
        // Most urgent group first.
        out.sort_by_key(|f| {
            (
                f.alerts.iter().map(|a| a.priority()).min().unwrap_or(3),
                f.key.clone(),
            )
        });
        out
    }

    /// After a flush: drops the resolved alerts it reported (unless they changed since), and
    /// groups left empty.
    pub fn flushed(&mut self, f: &Flush, now: i64) {
        if let Some(g) = self.groups.get_mut(&f.key) {
            for a in &f.alerts {
                if a.resolved_at(now) {
                    let fp = a.fingerprint();
                    if g.alerts.get(&fp) == Some(a) {
                        g.alerts.remove(&fp);
                    }
                }
            }
            if g.alerts.is_empty() {
                self.groups.remove(&f.key);
            }
        }
    }

    /// When the next group is due.
    pub fn next_deadline(&self) -> Option<i64> {
        self.groups.values().map(|g| g.next_flush).min()
    }

    /// Every group: its receiver, group labels and alerts' fingerprints.
    pub fn groups(&self) -> Vec<(&str, &Labels, Vec<u64>)> {
        self.groups
            .values()
            .map(|g| {
                (
                    g.receiver.as_str(),
                    &g.group_labels,
                    g.alerts.keys().copied().collect(),
                )
            })
            .collect()
    }

    /// How many groups exist.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether there are no groups.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// Group labels as text, as in Alertmanager's group keys (`{a="b"}`).
pub fn group_key_labels(l: &Labels) -> String {
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::config::RoutingConfig;

    const S: i64 = 1000;

    fn cfg() -> RoutingConfig {
        RoutingConfig::parse(
            "route: {receiver: r, group_by: [alertname], group_wait: 30s, group_interval: 5m, repeat_interval: 4h}\nreceivers: [{name: r}]",
        )
        .expect("cfg")
    }

    fn alert(name: &str, inst: &str, ends_at: i64) -> Alert {
        Alert {
            labels: Labels::from_pairs([("alertname", name), ("instance", inst)]),
            annotations: Labels::default(),
            starts_at: 0,
            ends_at,
            generator_url: String::new(),
        }
    }

    #[test]
    fn group_wait_then_group_interval_and_one_group_per_label_value() {
        let c = cfg();
        let mut d = Dispatcher::default();
        d.insert(&c.route, &alert("Disk", "a", i64::MAX), 0);
        d.insert(&c.route, &alert("Disk", "b", i64::MAX), 10 * S);
        d.insert(&c.route, &alert("Cpu", "a", i64::MAX), 10 * S);
        assert_eq!(d.len(), 2);
        assert!(d.due(29 * S).is_empty());
        let f = d.due(30 * S);
        assert_eq!(f.len(), 1, "Disk's group waited 30s; Cpu's has not yet");
        assert_eq!(f[0].alerts.len(), 2);
        assert_eq!(f[0].key, "0:{alertname=\"Disk\"}");
        assert_eq!(d.next_deadline(), Some(40 * S));
        assert_eq!(d.due(40 * S).len(), 1);
        assert!(d.due(41 * S).is_empty());
        assert_eq!(d.due(330 * S).len(), 1, "Disk again after group_interval");
    }

    #[test]
    fn the_most_urgent_group_flushes_first() {
        let c = cfg();
        let mut d = Dispatcher::default();
        for (name, sev) in [("A", "info"), ("B", "warning"), ("C", "critical")] {
            let mut a = alert(name, "x", i64::MAX);
            a.labels.set("severity", sev);
            d.insert(&c.route, &a, 0);
        }
        let order: Vec<String> = d
            .due(30 * S)
            .iter()
            .map(|f| f.group_labels.get("alertname").unwrap_or("").to_string())
            .collect();
        assert_eq!(order, ["C", "B", "A"]);
    }

    #[test]
    fn resolved_alerts_leave_after_the_flush_that_reports_them() {
        let c = cfg();
        let mut d = Dispatcher::default();
        d.insert(&c.route, &alert("Disk", "a", 5 * S), 0);
        let f = d.due(30 * S);
        d.flushed(&f[0], 30 * S);
        assert!(d.is_empty());
    }

    #[test]
    fn notification_log_decisions_follow_alertmanager() {
        let h = Duration::from_secs(3600);
        assert!(needs_update(None, &[1], &[], true, h, 0));
        assert!(
            !needs_update(None, &[], &[1], true, h, 0),
            "only resolved, never notified"
        );
        let e = NflogEntry {
            firing: vec![1, 2],
            resolved: vec![],
            at: 0,
        };
        assert!(
            !needs_update(Some(&e), &[1, 2], &[], true, h, 10 * S),
            "unchanged"
        );
        assert!(
            !needs_update(Some(&e), &[1], &[], false, h, 10 * S),
            "a subset, no send_resolved"
        );
        assert!(
            needs_update(Some(&e), &[1], &[2], true, h, 10 * S),
            "newly resolved"
        );
        assert!(
            needs_update(Some(&e), &[1, 2, 3], &[], true, h, 10 * S),
            "new firing"
        );
        assert!(
            needs_update(Some(&e), &[], &[1, 2], false, h, 10 * S),
            "all resolved"
        );
        assert!(
            needs_update(Some(&e), &[1, 2], &[], true, h, 3600 * S),
            "repeat interval"
        );
        let empty = NflogEntry {
            firing: vec![],
            resolved: vec![1],
            at: 0,
        };
        assert!(!needs_update(Some(&empty), &[], &[1], true, h, S));
    }
}
