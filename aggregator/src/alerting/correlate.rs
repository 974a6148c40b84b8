//! Correlation of firing alerts into incidents, without I/O.
//!
//! A firing alert joins an open incident that was active within `window` and holds an alert
//! it is *related* to: one sharing a value of a configured label (`instance` compared by
//! host, without port; `service`...), or linked by the topology — one service depends on the
//! other (directly or not), or one runs on the other's host. An alert related to several
//! incidents merges them into the oldest. Otherwise it opens a new incident.
//!
//! Each incident names its probable root cause: the alert at the lowest layer (host, then
//! services from the bottom of the dependency graph up, user-facing services last), the
//! earliest among equals. Every change goes on the incident's timeline. An incident resolves
//! when all its alerts have.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use telltale_common::config::Invalid;
use telltale_common::model::Labels;

use super::{Alert, fingerprint_hex, priority_of};
use crate::alert::RequestError;

/// A service in the topology.
#[derive(Debug, Clone, Default)]
pub struct ServiceNode {
    /// Services it needs.
    pub depends_on: Vec<String>,
    /// Hosts it runs on (compared with the host label, port removed).
    pub hosts: Vec<String>,
    /// Whether users see it directly (top layer).
    pub user_facing: bool,
}

/// Correlation settings.
#[derive(Debug, Clone)]
pub struct Correlation {
    /// How long after its last activity an incident still takes alerts.
    pub window: Duration,
    /// Labels whose shared values relate alerts.
    pub labels: Vec<String>,
    /// Label naming an alert's service.
    pub service_label: String,
    /// Label naming an alert's host (`instance`; a `:port` suffix is ignored).
    pub host_label: String,
    /// Topology.
    pub services: HashMap<String, ServiceNode>,
}

impl Default for Correlation {
    fn default() -> Self {
        Correlation {
            window: Duration::from_secs(300),
            // Not `job`: every agent series carries job="telltale-agent", so sharing it says
            // nothing and would fold unrelated hosts' alerts into one incident.
            labels: vec!["instance".into(), "service".into()],
            service_label: "service".into(),
            host_label: "instance".into(),
            services: HashMap::new(),
        }
    }
}

/// An alert's host: the label's value without a `:port`.
pub fn host_of(v: &str) -> &str {
    match v.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => {
            h.trim_start_matches('[').trim_end_matches(']')
        }
        _ => v,
    }
}

impl Correlation {
    /// Fails on a dependency cycle (layers would be undefined).
    pub fn check_acyclic(&self) -> Result<(), Invalid> {
        for s in self.services.keys() {
            if self.height_guarded(s, &mut Vec::new()).is_none() {
                return Err(format!("correlation: dependency cycle through service {s:?}").into());
            }
        }
        Ok(())
    }

    fn height_guarded(&self, s: &str, stack: &mut Vec<String>) -> Option<u32> {
        if stack.iter().any(|x| x == s) {
            return None;
        }
        stack.push(s.to_string());
        let mut h = 0;
        if let Some(n) = self.services.get(s) {
            for d in &n.depends_on {
                h = h.max(1 + self.height_guarded(d, stack)?);
            }
        }
        stack.pop();
        Some(h)
    }

    /// An alert's layer: 0 = host, 1.. = services by height in the dependency graph,
    /// user-facing services on top; alerts that name neither come last.
    pub fn layer(&self, labels: &Labels) -> u32 {
        match labels.get(&self.service_label) {
            Some(s) => {
                let h = self.height_guarded(s, &mut Vec::new()).unwrap_or(0);
                let uf = self.services.get(s).is_some_and(|n| n.user_facing);
                1 + h + if uf { 100 } else { 0 }
            }
            None if labels.get(&self.host_label).is_some() => 0,
            None => 1000,
        }
    }

    fn depends(&self, a: &str, b: &str, seen: &mut HashSet<String>) -> bool {
        if !seen.insert(a.to_string()) {
            return false;
        }
        self.services.get(a).is_some_and(|n| {
            n.depends_on
                .iter()
                .any(|d| d == b || self.depends(d, b, seen))
        })
    }

    fn hosts(&self, l: &Labels) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(h) = l.get(&self.host_label) {
            out.push(host_of(h).to_string());
        }
        if let Some(n) = l
            .get(&self.service_label)
            .and_then(|s| self.services.get(s))
        {
            out.extend(n.hosts.iter().cloned());
        }
        out
    }

    /// Whether two alerts are related.
    pub fn related(&self, a: &Labels, b: &Labels) -> bool {
        for l in &self.labels {
            if let (Some(x), Some(y)) = (a.get(l), b.get(l)) {
                let same = if *l == self.host_label {
                    host_of(x) == host_of(y)
                } else {
                    x == y
                };
                if same {
                    return true;
                }
            }
        }
        if let (Some(x), Some(y)) = (a.get(&self.service_label), b.get(&self.service_label))
            && (x == y
                || self.depends(x, y, &mut HashSet::new())
                || self.depends(y, x, &mut HashSet::new()))
        {
            return true;
        }
        let (ha, hb) = (self.hosts(a), self.hosts(b));
        ha.iter().any(|h| hb.contains(h))
    }
}

/// An alert inside an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentAlert {
    /// Labels.
    pub labels: Labels,
    /// Annotations.
    pub annotations: Labels,
    /// Started (ms).
    pub starts_at: i64,
    /// Resolved (ms), 0 while firing.
    pub resolved_at: i64,
    /// Layer (see [`Correlation::layer`]).
    pub layer: u32,
}

/// One timeline entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// When (ms).
    pub at: i64,
    /// `opened`, `alert_firing`, `alert_resolved`, `root_cause`, `merged`, `acknowledged`,
    /// `paged`, `resolved`.
    pub kind: String,
    /// Human text.
    pub text: String,
}

/// An incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Id.
    pub id: u64,
    /// Opened (ms).
    pub opened_at: i64,
    /// Last activity (ms).
    pub updated_at: i64,
    /// Resolved (ms), 0 while open.
    pub resolved_at: i64,
    /// Alerts by fingerprint.
    pub alerts: BTreeMap<u64, IncidentAlert>,
    /// Fingerprint of the probable root cause.
    pub root_cause: u64,
    /// Acknowledgement: (by, at ms).
    pub acknowledged: Option<(String, i64)>,
    /// Set when a remediation fixed it: (remediation id, at ms).
    #[serde(default)]
    pub remediated: Option<(String, i64)>,
    /// Timeline, oldest first.
    pub timeline: Vec<Entry>,
}

impl Incident {
    /// Whether it is open.
    pub fn open(&self) -> bool {
        self.resolved_at == 0
    }

    /// The root-cause alert.
    pub fn root(&self) -> Option<&IncidentAlert> {
        self.alerts.get(&self.root_cause)
    }

    /// Its firing alerts as alerts (no end), root cause first, then by start.
    pub fn firing_alerts(&self) -> Vec<Alert> {
        let mut out: Vec<Alert> = self
            .alerts
            .values()
            .filter(|a| a.resolved_at == 0)
            .map(|a| Alert {
                labels: a.labels.clone(),
                annotations: a.annotations.clone(),
                starts_at: a.starts_at,
                ends_at: 0,
                generator_url: String::new(),
            })
            .collect();
        out.sort_by_key(|a| (a.fingerprint() != self.root_cause, a.starts_at));
        out
    }

    /// Most urgent priority among its alerts.
    pub fn priority(&self) -> u8 {
        self.alerts
            .values()
            .map(|a| priority_of(&a.labels))
            .min()
            .unwrap_or(3)
    }

    fn note(&mut self, at: i64, kind: &str, text: String) {
        self.timeline.push(Entry {
            at,
            kind: kind.into(),
            text,
        });
    }

    fn pick_root(&mut self, now: i64) {
        let best = self
            .alerts
            .iter()
            .min_by_key(|(fp, a)| (a.layer, a.starts_at, **fp))
            .map(|(fp, _)| *fp);
        if let Some(b) = best
            && b != self.root_cause
        {
            self.root_cause = b;
            let name = self.alerts[&b]
                .labels
                .get("alertname")
                .unwrap_or("")
                .to_string();
            self.note(
                now,
                "root_cause",
                format!("probable root cause: {name} ({})", fingerprint_hex(b)),
            );
        }
    }
}

/// What an observation changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A new incident.
    Opened(u64),
    /// An alert joined (or changed in) an incident.
    Updated(u64),
    /// Incident `from` was merged into `into`.
    Merged {
        /// Kept.
        into: u64,
        /// Gone.
        from: u64,
    },
    /// All alerts of the incident resolved.
    Resolved(u64),
}

/// The incidents.
#[derive(Debug, Default)]
pub struct Correlator {
    /// Settings (the configured topology plus what was learnt).
    pub cfg: Correlation,
    /// The configured topology, before anything learnt was added.
    configured: HashMap<String, ServiceNode>,
    /// Incidents by id (open and recently resolved).
    pub incidents: BTreeMap<u64, Incident>,
    /// The next id.
    pub next_id: u64,
}

impl Correlator {
    /// A correlator with settings and what was stored.
    pub fn new(cfg: Correlation, stored: Vec<Incident>) -> Correlator {
        let next_id = stored.iter().map(|i| i.id).max().unwrap_or(0) + 1;
        Correlator {
            configured: cfg.services.clone(),
            cfg,
            incidents: stored.into_iter().map(|i| (i.id, i)).collect(),
            next_id,
        }
    }

    /// Adds a topology learnt from traces to the configured one: `calls` (caller, called)
    /// become dependencies of the caller, unless one would close a cycle (the configured
    /// graph wins; layers need a DAG); `hosts` (service, host) say where a service runs.
    /// Replaces what was learnt before.
    pub fn learn(&mut self, calls: &[(String, String)], hosts: &[(String, String)]) {
        self.cfg.services = self.configured.clone();
        for (service, host) in hosts {
            let n = self.cfg.services.entry(service.clone()).or_default();
            if !n.hosts.contains(host) {
                n.hosts.push(host.clone());
            }
        }
        for (caller, called) in calls {
            if caller == called
                || self
                    .cfg
                    .services
                    .get(caller)
                    .is_some_and(|n| n.depends_on.contains(called))
            {
                continue;
            }
            self.cfg
                .services
                .entry(caller.clone())
                .or_default()
                .depends_on
                .push(called.clone());
            if self.cfg.check_acyclic().is_err()
                && let Some(n) = self.cfg.services.get_mut(caller)
            {
                n.depends_on.retain(|d| d != called);
            }
        }
    }

    /// Takes a firing or resolved alert.
    pub fn observe(&mut self, alert: &Alert, now: i64) -> Vec<Change> {
        let fp = alert.fingerprint();
        let resolved = alert.resolved_at(now);
        let name = alert.labels.get("alertname").unwrap_or("").to_string();
        // Already in an open incident?
        if let Some(inc) = self
            .incidents
            .values_mut()
            .find(|i| i.open() && i.alerts.contains_key(&fp))
        {
            let id = inc.id;
            let mut out = Vec::new();
            let Some(a) = inc.alerts.get_mut(&fp) else {
                return out;
            };
            let was_resolved = a.resolved_at != 0;
            a.annotations = alert.annotations.clone();
            if resolved && !was_resolved {
                a.resolved_at = alert.ends_at.min(now);
                inc.updated_at = now;
                inc.note(now, "alert_resolved", format!("{name} resolved"));
                out.push(Change::Updated(id));
                if inc.alerts.values().all(|a| a.resolved_at != 0) {
                    inc.resolved_at = now;
                    inc.note(now, "resolved", "all alerts resolved".into());
                    out.push(Change::Resolved(id));
                }
            } else if !resolved && was_resolved {
                a.resolved_at = 0;
                inc.updated_at = now;
                inc.note(now, "alert_firing", format!("{name} firing again"));
                out.push(Change::Updated(id));
            }
            return out;
        }
        if resolved {
            return Vec::new();
        }
        let window = self.cfg.window.as_millis() as i64;
        let related: Vec<u64> = self
            .incidents
            .values()
            .filter(|i| i.open() && now - i.updated_at <= window)
            .filter(|i| {
                i.alerts
                    .values()
                    .any(|a| self.cfg.related(&alert.labels, &a.labels))
            })
            .map(|i| i.id)
            .collect();
        let entry = IncidentAlert {
            labels: alert.labels.clone(),
            annotations: alert.annotations.clone(),
            starts_at: alert.starts_at,
            resolved_at: 0,
            layer: self.cfg.layer(&alert.labels),
        };
        let mut out = Vec::new();
        let id = match related.first() {
            Some(&into) => {
                for &from in &related[1..] {
                    if let Some(other) = self.incidents.remove(&from) {
                        let inc = self
                            .incidents
                            .get_mut(&into)
                            .expect("related ids are present");
                        inc.alerts.extend(other.alerts);
                        inc.timeline.extend(other.timeline);
                        inc.timeline.sort_by_key(|e| e.at);
                        inc.note(now, "merged", format!("incident {from} merged in"));
                        out.push(Change::Merged { into, from });
                    }
                }
                out.push(Change::Updated(into));
                into
            }
            None => {
                let id = self.next_id;
                self.next_id += 1;
                self.incidents.insert(
                    id,
                    Incident {
                        id,
                        opened_at: now,
                        updated_at: now,
                        resolved_at: 0,
                        alerts: BTreeMap::new(),
                        root_cause: 0,
                        acknowledged: None,
                        remediated: None,
                        timeline: vec![Entry {
                            at: now,
                            kind: "opened".into(),
                            text: format!("opened by {name}"),
                        }],
                    },
                );
                out.push(Change::Opened(id));
                id
            }
        };
        let inc = self
            .incidents
            .get_mut(&id)
            .expect("just inserted or related");
        inc.alerts.insert(fp, entry);
        inc.updated_at = now;
        inc.note(now, "alert_firing", format!("{name} firing"));
        inc.pick_root(now);
        out
    }

    /// Acknowledges an incident.
    pub fn acknowledge(&mut self, id: u64, by: &str, now: i64) -> Result<(), RequestError> {
        let inc = self
            .incidents
            .get_mut(&id)
            .ok_or_else(|| RequestError::NotFound(format!("no incident {id}")))?;
        if inc.acknowledged.is_none() {
            inc.acknowledged = Some((by.to_string(), now));
            inc.note(now, "acknowledged", format!("acknowledged by {by}"));
        }
        Ok(())
    }

    /// The open incident holding alert `fp`.
    pub fn incident_of(&self, fp: u64) -> Option<u64> {
        self.incidents
            .values()
            .find(|i| i.open() && i.alerts.contains_key(&fp))
            .map(|i| i.id)
    }

    /// The newest incident (open or not) that holds alert `fp`.
    pub fn latest_incident_of(&self, fp: u64) -> Option<u64> {
        self.incidents
            .values()
            .rev()
            .find(|i| i.alerts.contains_key(&fp))
            .map(|i| i.id)
    }

    /// Marks an incident remediated by remediation `id`.
    pub fn remediated(&mut self, incident: u64, id: &str, now: i64) {
        if let Some(i) = self.incidents.get_mut(&incident) {
            i.remediated = Some((id.to_string(), now));
            i.note(now, "remediated", format!("remediation {id} fixed it"));
        }
    }

    /// Adds a timeline entry.
    pub fn note(&mut self, id: u64, now: i64, kind: &str, text: String) {
        if let Some(i) = self.incidents.get_mut(&id) {
            i.note(now, kind, text);
        }
    }

    /// Forgets incidents resolved more than `keep` ago; returns their ids.
    pub fn expire(&mut self, now: i64, keep: Duration) -> Vec<u64> {
        let keep = keep.as_millis() as i64;
        let old: Vec<u64> = self
            .incidents
            .values()
            .filter(|i| !i.open() && now - i.resolved_at > keep)
            .map(|i| i.id)
            .collect();
        for id in &old {
            self.incidents.remove(id);
        }
        old
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    fn topo() -> Correlation {
        let mut services = HashMap::new();
        services.insert(
            "frontend".into(),
            ServiceNode {
                depends_on: vec!["api".into()],
                hosts: vec!["web-1".into()],
                user_facing: true,
            },
        );
        services.insert(
            "api".into(),
            ServiceNode {
                depends_on: vec!["db".into()],
                hosts: vec!["app-1".into()],
                user_facing: false,
            },
        );
        services.insert(
            "db".into(),
            ServiceNode {
                depends_on: vec![],
                hosts: vec!["db-1".into()],
                user_facing: false,
            },
        );
        Correlation {
            services,
            ..Correlation::default()
        }
    }

    fn alert(pairs: &[(&str, &str)], starts: i64) -> Alert {
        Alert {
            labels: Labels::from_pairs(pairs.iter().copied()),
            annotations: Labels::default(),
            starts_at: starts,
            ends_at: i64::MAX,
            generator_url: String::new(),
        }
    }

    #[test]
    fn a_topology_learnt_from_traces_relates_alerts_and_ranks_the_called_service_lower() {
        // Nothing configured: cart and payments look unrelated...
        let mut c = Correlator::new(Correlation::default(), vec![]);
        let checkout = alert(&[("alertname", "Slow"), ("service", "checkout")], 0);
        let payments = alert(&[("alertname", "Errors"), ("service", "payments")], 5 * S);
        assert!(!c.cfg.related(&checkout.labels, &payments.labels));
        // ...until traces show checkout calling payments, and where payments runs.
        let calls = vec![
            ("checkout".to_string(), "payments".to_string()),
            // A call back would close a cycle: refused, the first one stays.
            ("payments".to_string(), "checkout".to_string()),
        ];
        let hosts = vec![("payments".to_string(), "pay-1".to_string())];
        c.learn(&calls, &hosts);
        assert!(c.cfg.related(&checkout.labels, &payments.labels));
        assert!(c.cfg.check_acyclic().is_ok());
        assert!(c.cfg.layer(&payments.labels) < c.cfg.layer(&checkout.labels));
        let disk = alert(
            &[("alertname", "DiskFull"), ("instance", "pay-1:9100")],
            9 * S,
        );
        assert!(c.cfg.related(&payments.labels, &disk.labels));
        c.observe(&checkout, 10 * S);
        c.observe(&payments, 11 * S);
        c.observe(&disk, 12 * S);
        assert_eq!(c.incidents.len(), 1);
        assert_eq!(
            c.incidents[&1]
                .root()
                .and_then(|r| r.labels.get("alertname")),
            Some("DiskFull")
        );
        // Learning again replaces what was learnt; the configured topology stays.
        let mut c = Correlator::new(topo(), vec![]);
        c.learn(&[("db".to_string(), "frontend".to_string())], &[]);
        assert!(
            c.cfg.check_acyclic().is_ok(),
            "a learnt cycle through configured edges is refused"
        );
        assert_eq!(c.cfg.services["api"].depends_on, vec!["db".to_string()]);
        c.learn(&[], &[]);
        assert_eq!(c.cfg.services.len(), 3);
    }

    #[test]
    fn a_failure_cascade_is_one_incident_rooted_at_the_host() {
        let mut c = Correlator::new(topo(), vec![]);
        // The symptoms arrive top-down (the user-facing one first), the cause last.
        let fe = alert(
            &[("alertname", "FrontendErrors"), ("service", "frontend")],
            30 * S,
        );
        let api = alert(&[("alertname", "ApiErrorRate"), ("service", "api")], 20 * S);
        let db = alert(
            &[
                ("alertname", "DbLatency"),
                ("service", "db"),
                ("instance", "db-1:5432"),
            ],
            10 * S,
        );
        let disk = alert(&[("alertname", "DiskFull"), ("instance", "db-1:9100")], 0);
        assert_eq!(c.observe(&fe, 30 * S), [Change::Opened(1)]);
        assert_eq!(c.observe(&api, 31 * S), [Change::Updated(1)]);
        assert_eq!(c.observe(&db, 32 * S), [Change::Updated(1)]);
        assert_eq!(c.observe(&disk, 33 * S), [Change::Updated(1)]);
        assert_eq!(c.incidents.len(), 1);
        let inc = &c.incidents[&1];
        assert_eq!(
            inc.root().and_then(|r| r.labels.get("alertname")),
            Some("DiskFull")
        );
        let kinds: Vec<&str> = inc.timeline.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == "root_cause").count(),
            4,
            "{kinds:?}"
        );
        // Resolution: all alerts resolved resolves the incident.
        for a in [&fe, &api, &db, &disk] {
            let mut r = a.clone();
            r.ends_at = 100 * S;
            c.observe(&r, 100 * S);
        }
        assert_eq!(c.incidents[&1].resolved_at, 100 * S);
    }

    #[test]
    fn unrelated_or_late_alerts_open_their_own_incidents_and_bridges_merge() {
        let mut c = Correlator::new(topo(), vec![]);
        c.observe(&alert(&[("alertname", "A"), ("instance", "h1")], 0), 0);
        assert_eq!(
            c.observe(&alert(&[("alertname", "B"), ("instance", "h2")], 0), S),
            [Change::Opened(2)]
        );
        // Same host as incident 1 but after the window: new incident.
        let late = c.observe(
            &alert(&[("alertname", "C"), ("instance", "h1:9100")], 0),
            400 * S,
        );
        assert_eq!(late, [Change::Opened(3)]);
        // Incident 1 is past its window; 3 takes it.
        let ch = c.observe(
            &alert(
                &[("alertname", "F"), ("instance", "h1"), ("service", "y")],
                0,
            ),
            401 * S,
        );
        assert_eq!(ch, [Change::Updated(3)]);
        // Related to two incidents at once: they merge into the older.
        let mut c2 = Correlator::new(Correlation::default(), vec![]);
        c2.observe(&alert(&[("alertname", "A"), ("instance", "h1")], 0), 0);
        c2.observe(&alert(&[("alertname", "B"), ("service", "s")], 0), 0);
        let ch = c2.observe(
            &alert(
                &[("alertname", "C"), ("instance", "h1"), ("service", "s")],
                0,
            ),
            S,
        );
        assert_eq!(
            ch,
            [Change::Merged { into: 1, from: 2 }, Change::Updated(1)]
        );
        assert_eq!(c2.incidents[&1].alerts.len(), 3);
    }

    #[test]
    fn layers_and_relations() {
        let t = topo();
        let l = |p: &[(&str, &str)]| Labels::from_pairs(p.iter().copied());
        assert_eq!(t.layer(&l(&[("instance", "db-1")])), 0);
        assert!(t.layer(&l(&[("service", "db")])) < t.layer(&l(&[("service", "api")])));
        assert!(t.layer(&l(&[("service", "api")])) < t.layer(&l(&[("service", "frontend")])));
        assert!(
            t.related(&l(&[("service", "frontend")]), &l(&[("service", "db")])),
            "transitive"
        );
        assert!(
            t.related(&l(&[("service", "db")]), &l(&[("instance", "db-1:9100")])),
            "runs on"
        );
        assert!(!t.related(&l(&[("service", "db")]), &l(&[("instance", "web-2")])));
        assert_eq!(host_of("[::1]:9100"), "::1");
        assert_eq!(host_of("db-1"), "db-1");
        let mut cyc = topo();
        cyc.services
            .get_mut("db")
            .expect("db")
            .depends_on
            .push("frontend".into());
        assert!(cyc.check_acyclic().is_err());
    }
}
