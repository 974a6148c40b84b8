//! Correlation of firing alerts into incidents, without I/O.
//!
//! Each incident is a root cause and what it explains ([`cause`]): alert *a* explains *b*
//! when a failure at *a*'s node reaches *b*'s node in the topology ([`topology`]: hosts with
//! aliases and the hosts they need, services with the services and remote hosts they need and
//! the hosts they run on, plus what traces showed calling what) and *a*'s condition began
//! first — onsets, not firing times, so a short `for:` does not make a symptom look early.
//! Rules tune it with `telltale_role: cause | symptom` and `telltale_weight`; the `severity`
//! label and the routing file's inhibition rules count as evidence.
//!
//! A firing alert is grouped again with the open incidents (active within `window`) holding
//! an alert it explains or is explained by: the result may keep them, merge them (a root
//! explaining both), or split one (alerts no longer explained by its root move to an incident
//! of their own). Ids stay with the incident keeping most of their alerts. Every change, and
//! the reason for each root choice with its runner-up, goes on the incident's timeline. An
//! incident resolves when all its alerts have.

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use telltale_common::model::Labels;

use super::{Alert, fingerprint_hex, priority_of};
use crate::alert::RequestError;

pub mod cause;
mod spec;
pub mod topology;

use cause::{Evidence, Facts, Item};
pub use spec::CorrelationSpec;
pub use topology::{Correlation, HostNode, Node, ServiceNode, host_of};
use topology::{Index, Reach};

/// Above this many alerts in the incidents a new alert relates to, it joins the oldest of
/// them without regrouping (regrouping costs the square of the alerts; a storm that size is
/// one incident to its responders anyway).
const MAX_REGROUP: usize = 400;

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
    /// Layer (see [`Correlation::layer`]; shown, not used to choose).
    pub layer: u32,
}

/// One timeline entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// When (ms).
    pub at: i64,
    /// `opened`, `alert_firing`, `alert_resolved`, `root_cause`, `merged`, `split`,
    /// `acknowledged`, `paged`, `resolved`.
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
    /// Why the root cause was chosen (evidence and runner-up).
    #[serde(default)]
    pub why: String,
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
    /// Alerts of incident `from` were not explained by its root: they opened `into`.
    Split {
        /// The incident they left.
        from: u64,
        /// The new one.
        into: u64,
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
    /// What each alert's labels say, by fingerprint (cleared when the topology changes).
    facts: HashMap<u64, Facts>,
    /// What each node reaches (cleared when the topology changes).
    reach: HashMap<Node, Reach>,
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
            facts: HashMap::new(),
            reach: HashMap::new(),
        }
    }

    /// Adds a topology learnt from traces to the configured one: `calls` (caller, called)
    /// become dependencies of the caller, unless one would close a cycle (the configured
    /// graph wins; causes need a direction); `hosts` (service, host) say where a service
    /// runs. Replaces what was learnt before.
    pub fn learn(&mut self, calls: &[(String, String)], hosts: &[(String, String)]) {
        self.forget();
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
            if self.cfg.check().is_err()
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
            if a.annotations != alert.annotations {
                a.annotations = alert.annotations.clone();
                self.facts.remove(&fp);
            }
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
        let entry = IncidentAlert {
            labels: alert.labels.clone(),
            annotations: alert.annotations.clone(),
            starts_at: alert.starts_at,
            resolved_at: 0,
            layer: self.cfg.layer(&alert.labels),
        };
        let related = self.related_incidents(fp, &entry, now);
        let size: usize = related
            .iter()
            .filter_map(|id| self.incidents.get(id))
            .map(|i| i.alerts.len())
            .sum();
        if related.is_empty() {
            let id = self.open_incident(now, format!("opened by {name}"));
            if let Some(inc) = self.incidents.get_mut(&id) {
                inc.alerts.insert(fp, entry);
                inc.note(now, "alert_firing", format!("{name} firing"));
                inc.root_cause = fp;
                inc.why = format!("{name}: the only alert");
                inc.note(now, "root_cause", root_text(&name, fp, &inc.why));
            }
            return vec![Change::Opened(id)];
        }
        if size >= MAX_REGROUP {
            let into = related[0];
            if let Some(inc) = self.incidents.get_mut(&into) {
                inc.alerts.insert(fp, entry);
                inc.updated_at = now;
                inc.note(
                    now,
                    "alert_firing",
                    format!("{name} firing (joined without regrouping: {size} alerts)"),
                );
            }
            return vec![Change::Updated(into)];
        }
        self.regroup(&related, Some((fp, entry)), now)
    }

    /// Forgets cached facts and reaches (the topology changed).
    fn forget(&mut self) {
        self.facts.clear();
        self.reach.clear();
    }

    /// Replaces the settings.
    pub fn configure(&mut self, cfg: Correlation) {
        self.configured = cfg.services.clone();
        self.cfg = cfg;
        self.forget();
    }

    /// Open incidents active within the window holding an alert that explains the new one
    /// or that it explains, oldest first.
    fn related_incidents(&mut self, fp: u64, entry: &IncidentAlert, now: i64) -> Vec<u64> {
        let window = self.cfg.window.as_millis() as i64;
        let open: Vec<u64> = self
            .incidents
            .values()
            .filter(|i| i.open() && now - i.updated_at <= window)
            .map(|i| i.id)
            .collect();
        let olds = open
            .iter()
            .filter_map(|id| self.incidents.get(id))
            .flat_map(|i| i.alerts.iter().map(|(f, a)| (*f, a)));
        learn_alerts(
            &self.cfg,
            &mut self.facts,
            &mut self.reach,
            olds.chain([(fp, entry)]),
        );
        let Some(nf) = self.facts.get(&fp) else {
            return Vec::new();
        };
        let new = Item::new(fp, entry, nf);
        let ev = Evidence::new(&self.cfg, &self.reach);
        let mut out = Vec::new();
        for id in open {
            let Some(i) = self.incidents.get(&id) else {
                continue;
            };
            let hit = i.alerts.iter().any(|(f, a)| {
                self.facts
                    .get(f)
                    .is_some_and(|facts| ev.related(&Item::new(*f, a, facts), &new))
            });
            if hit {
                out.push(id);
            }
        }
        out
    }

    fn open_incident(&mut self, now: i64, text: String) -> u64 {
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
                    text,
                }],
                why: String::new(),
            },
        );
        id
    }

    /// Groups the alerts of incidents `ids` (and a new one) again.
    fn regroup(&mut self, ids: &[u64], new: Option<(u64, IncidentAlert)>, now: i64) -> Vec<Change> {
        let mut old: BTreeMap<u64, Incident> = ids
            .iter()
            .filter_map(|id| self.incidents.remove(id).map(|i| (*id, i)))
            .collect();
        let mut alerts: BTreeMap<u64, IncidentAlert> = BTreeMap::new();
        let mut origin: HashMap<u64, u64> = HashMap::new();
        for (id, inc) in &old {
            for (fp, a) in &inc.alerts {
                alerts.insert(*fp, a.clone());
                origin.insert(*fp, *id);
            }
        }
        let new_fp = new.as_ref().map(|(fp, _)| *fp);
        if let Some((fp, a)) = new {
            alerts.insert(fp, a);
        }
        learn_alerts(
            &self.cfg,
            &mut self.facts,
            &mut self.reach,
            alerts.iter().map(|(f, a)| (*f, a)),
        );
        let groups = {
            let first: Vec<Item> = alerts
                .iter()
                .filter_map(|(fp, a)| self.facts.get(fp).map(|f| Item::new(*fp, a, f)))
                .collect();
            let ev = Evidence::new(&self.cfg, &self.reach);
            let mut g = cause::partition(&ev, &first);
            g.sort_by_key(|g| std::cmp::Reverse(g.members.len()));
            g
        };
        // Ids: each group takes the incident it holds most alerts of, biggest groups first.
        let mut taken: HashSet<u64> = HashSet::new();
        let mut ids_of: Vec<Option<u64>> = Vec::new();
        for g in &groups {
            let mut count: BTreeMap<u64, usize> = BTreeMap::new();
            for fp in &g.members {
                if let Some(id) = origin.get(fp) {
                    *count.entry(*id).or_default() += 1;
                }
            }
            let best = count
                .iter()
                .filter(|(id, _)| !taken.contains(*id))
                .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)))
                .map(|(id, _)| *id);
            if let Some(id) = best {
                taken.insert(id);
            }
            ids_of.push(best);
        }
        let mut out = Vec::new();
        let mut placed: HashMap<u64, u64> = HashMap::new();
        let mut final_ids = Vec::new();
        for (g, id) in groups.iter().zip(&ids_of) {
            let id = match id {
                Some(id) => *id,
                None => {
                    let from = most_common(g.members.iter().filter_map(|fp| origin.get(fp)));
                    let text = match from {
                        Some(f) => format!("split from incident {f}"),
                        None => "opened".to_string(),
                    };
                    let id = self.open_incident(now, text);
                    if let Some(inc) = self.incidents.remove(&id) {
                        old.insert(id, inc);
                    }
                    out.push(match from {
                        Some(from) => Change::Split { from, into: id },
                        None => Change::Opened(id),
                    });
                    id
                }
            };
            for fp in &g.members {
                placed.insert(*fp, id);
            }
            final_ids.push(id);
        }
        // Incidents that kept no group merge into the one holding most of their alerts.
        for id in ids {
            if taken.contains(id) {
                continue;
            }
            let Some(gone) = old.remove(id) else { continue };
            let into = most_common(gone.alerts.keys().filter_map(|fp| placed.get(fp)));
            if let Some(into) = into
                && let Some(inc) = old.get_mut(&into)
            {
                inc.timeline.extend(gone.timeline);
                inc.timeline.sort_by_key(|e| e.at);
                if inc.acknowledged.is_none() {
                    inc.acknowledged = gone.acknowledged;
                }
                inc.note(now, "merged", format!("incident {id} merged in"));
                out.push(Change::Merged { into, from: *id });
            }
        }
        for (g, id) in groups.iter().zip(final_ids) {
            let Some(mut inc) = old.remove(&id) else {
                continue;
            };
            let before: Vec<u64> = inc.alerts.keys().copied().collect();
            inc.alerts = g
                .members
                .iter()
                .filter_map(|fp| alerts.get(fp).map(|a| (*fp, a.clone())))
                .collect();
            let mut moved: BTreeMap<u64, Vec<String>> = BTreeMap::new();
            for fp in &before {
                if let Some(to) = placed.get(fp).filter(|to| **to != id) {
                    let n = alerts.get(fp).and_then(|a| a.labels.get("alertname"));
                    moved
                        .entry(*to)
                        .or_default()
                        .push(n.unwrap_or("").to_string());
                }
            }
            for (to, names) in moved {
                inc.note(
                    now,
                    "split",
                    format!(
                        "{} moved to incident {to}: not explained by this incident's root cause",
                        names.join(", ")
                    ),
                );
            }
            if let Some(fp) = new_fp.filter(|fp| inc.alerts.contains_key(fp)) {
                let name = inc.alerts[&fp].labels.get("alertname").unwrap_or("");
                let text = format!("{name} firing");
                inc.note(now, "alert_firing", text);
            }
            let changed = before != inc.alerts.keys().copied().collect::<Vec<u64>>()
                || inc.root_cause != g.root;
            if inc.root_cause != g.root || inc.why.is_empty() {
                inc.root_cause = g.root;
                inc.why = g.why.clone();
                let name = inc
                    .alerts
                    .get(&g.root)
                    .and_then(|a| a.labels.get("alertname"));
                let text = root_text(name.unwrap_or(""), g.root, &g.why);
                inc.note(now, "root_cause", text);
            } else {
                inc.why = g.why.clone();
            }
            let fresh = out.iter().any(
                |c| matches!(c, Change::Opened(x) | Change::Split { into: x, .. } if *x == id),
            );
            if changed && !fresh {
                inc.updated_at = now;
                out.push(Change::Updated(id));
            }
            if inc.alerts.values().all(|a| a.resolved_at != 0) {
                inc.resolved_at = now;
                inc.note(now, "resolved", "all alerts resolved".into());
                out.push(Change::Resolved(id));
            }
            self.incidents.insert(id, inc);
        }
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
        // The caches keep only what open incidents still hold (alerts come and go for good).
        if !old.is_empty() || self.facts.len() > 2 * self.open_alerts() + 1024 {
            let held: HashSet<u64> = self
                .incidents
                .values()
                .filter(|i| i.open())
                .flat_map(|i| i.alerts.keys().copied())
                .collect();
            self.facts.retain(|fp, _| held.contains(fp));
            let nodes: HashSet<&Node> = self.facts.values().map(|f| &f.node).collect();
            self.reach.retain(|n, _| nodes.contains(n));
        }
        old
    }

    fn open_alerts(&self) -> usize {
        self.incidents
            .values()
            .filter(|i| i.open())
            .map(|i| i.alerts.len())
            .sum()
    }

    /// Sizes of the caches: (alerts' facts, nodes' reach).
    pub fn cached(&self) -> (usize, usize) {
        (self.facts.len(), self.reach.len())
    }
}

/// Makes sure the facts of `alerts` and the reach of their nodes are cached.
fn learn_alerts<'a>(
    cfg: &Correlation,
    facts: &mut HashMap<u64, Facts>,
    reach: &mut HashMap<Node, Reach>,
    alerts: impl Iterator<Item = (u64, &'a IncidentAlert)>,
) {
    let ix: OnceCell<Index> = OnceCell::new();
    for (fp, a) in alerts {
        let f = facts
            .entry(fp)
            .or_insert_with(|| Facts::of(ix.get_or_init(|| cfg.index()), cfg, a));
        if !reach.contains_key(&f.node) {
            let r = ix.get_or_init(|| cfg.index()).reach(&f.node);
            reach.insert(f.node.clone(), r);
        }
    }
}

fn root_text(name: &str, fp: u64, why: &str) -> String {
    format!(
        "probable root cause: {name} ({}) — {why}",
        fingerprint_hex(fp)
    )
}

/// The most frequent value (the smallest among equals).
fn most_common<'a>(it: impl Iterator<Item = &'a u64>) -> Option<u64> {
    let mut count: BTreeMap<u64, usize> = BTreeMap::new();
    for v in it {
        *count.entry(*v).or_default() += 1;
    }
    count
        .into_iter()
        .max_by_key(|(v, n)| (*n, std::cmp::Reverse(*v)))
        .map(|(v, _)| v)
}

#[cfg(test)]
mod tests;
