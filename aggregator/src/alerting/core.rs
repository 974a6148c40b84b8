//! The alerting core without I/O: alerts, news from remediation, API requests and the clock
//! in; state writes, notifications and alerts for remediation out — like the remediation
//! engine's `Effect`s, or quinn's connection state machine. The driver
//! ([`super::service`]) reads the clock, applies the writes to sled in one atomic batch per
//! call together with the outbox entries of the notifications, and forwards alerts to the
//! remediation driver.
//!
//! Every write is a key of the sled tree the driver keeps (see [`super::service`]'s key
//! prefixes) with its JSON value, exactly as earlier releases wrote them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use telltale_common::model::Labels;

use super::apiquery::{SilenceQuery, V2View, sort_silences};
use super::config::{Integration, RoutingConfig};
use super::correlate::{Change, Correlator, Incident};
use super::dispatch::{Dispatcher, Flush, NflogEntry, needs_update};
use super::escalate::{Escalation, Page, policy_for};
use super::inhibit::inhibited_by;
use super::payload::{alertmanager_v2, incident_json, page_v4, webhook_v4};
use super::route::Route;
use super::silence::{PostableSilence, Silence, Silences};
use crate::alert::{Alert, RemediationNews, RequestError, priority_of};

/// Resolved alerts are forgotten this long after they resolved.
const RESOLVED_KEEP_MS: i64 = 15 * 60 * 1000;
/// Resolved incidents are kept this long for the API.
const INCIDENT_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// The routing configuration and its routes by id; replaced whole on a reload.
pub struct Routing {
    /// The configuration.
    pub cfg: RoutingConfig,
    routes: HashMap<String, Route>,
}

impl Routing {
    /// Indexes a configuration's routes.
    pub fn new(cfg: RoutingConfig) -> Routing {
        let routes = cfg
            .route
            .walk()
            .into_iter()
            .map(|r| (r.id.clone(), r.clone()))
            .collect();
        Routing { cfg, routes }
    }

    /// Whether a route is muted at `now` by its time intervals.
    fn muted(&self, route: &Route, now: i64) -> bool {
        let ti = &self.cfg.time_intervals;
        let within = |n: &String| ti.get(n).is_some_and(|t| t.contains(now));
        route.mute_time_intervals.iter().any(within)
            || (!route.active_time_intervals.is_empty()
                && !route.active_time_intervals.iter().any(within))
    }
}

/// A notification to queue: the driver gives it an id and writes it to the outbox in the same
/// batch as the notification-log entry that decided it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// 0 (most urgent) to 3: the outbox is drained in this order.
    pub priority: u8,
    /// The receiver's name.
    pub receiver: String,
    /// Which of the receiver's integrations.
    pub integration: usize,
    /// Notifications of one lane go out in order (receiver/integration/group).
    pub lane: String,
    /// The body.
    pub body: Value,
    /// When the newest alert this notification is the first to announce reached alerting
    /// (ms): the start of the alert → notification latency. `None` for repeats, resolutions,
    /// pages and reports.
    pub fired_ms: Option<i64>,
}

/// What the core asks the driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Write a state record.
    Put(Vec<u8>, Vec<u8>),
    /// Delete a state record.
    Delete(Vec<u8>),
    /// Queue a notification.
    Notify(Outgoing),
    /// An alert the remediation side should see (not silenced, or resolved).
    Remediate(Alert),
}

/// State read back at start-up.
#[derive(Default)]
pub struct Stored {
    /// Alerts known before the restart.
    pub alerts: Vec<Alert>,
    /// Silences.
    pub silences: Vec<Silence>,
    /// The notification log by lane.
    pub nflog: HashMap<String, NflogEntry>,
    /// Incidents.
    pub incidents: Vec<Incident>,
    /// Escalations.
    pub escalations: Vec<Escalation>,
}

/// The key of an alert's record.
pub fn alert_key(fp: u64) -> Vec<u8> {
    format!("a/{fp:016x}").into_bytes()
}

fn put(out: &mut Vec<Effect>, key: impl Into<Vec<u8>>, v: &impl Serialize) {
    match serde_json::to_vec(v) {
        Ok(b) => out.push(Effect::Put(key.into(), b)),
        Err(e) => tracing::error!(error = %e, "cannot encode an alerting state record"),
    }
}

/// The alerting state.
pub struct Core {
    alerts: HashMap<u64, Alert>,
    /// When each firing alert first reached alerting (not stored: after a restart, from its
    /// first receipt since), for the alert → notification latency.
    received: HashMap<u64, i64>,
    /// Notifications that would have gone to integrations Telltale does not deliver, by
    /// (receiver, integration), since start-up.
    undeliverable: BTreeMap<(String, &'static str), u64>,
    dispatcher: Dispatcher,
    silences: BTreeMap<String, Silence>,
    compiled: Silences,
    correlator: Correlator,
    escalations: BTreeMap<u64, Escalation>,
    nflog: HashMap<String, NflogEntry>,
    dirty_incidents: HashSet<u64>,
    dropped_incidents: Vec<u64>,
    /// When the last pass ran (alerts whose end passed since are resolved in incidents).
    last_step: i64,
    external_url: String,
}

impl Core {
    /// See `AlertingService::learn_topology`.
    pub fn learn_topology(&mut self, calls: &[(String, String)], hosts: &[(String, String)]) {
        self.correlator.learn(calls, hosts);
    }

    /// The state from what was stored, grouped under `routing` at `now`.
    pub fn new(routing: &Routing, stored: Stored, external_url: &str, now: i64) -> Core {
        let mut dispatcher = Dispatcher::default();
        let mut alerts = HashMap::new();
        for a in stored.alerts {
            dispatcher.insert(&routing.cfg.route, &a, now);
            alerts.insert(a.fingerprint(), a);
        }
        let silences: BTreeMap<String, Silence> = stored
            .silences
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
        Core {
            alerts,
            received: HashMap::new(),
            undeliverable: BTreeMap::new(),
            dispatcher,
            compiled: Silences::new(silences.values().cloned()),
            silences,
            correlator: Correlator::new(routing.cfg.correlation.clone(), stored.incidents),
            escalations: stored
                .escalations
                .into_iter()
                .map(|e| (e.incident, e))
                .collect(),
            nflog: stored.nflog,
            dirty_incidents: HashSet::new(),
            dropped_incidents: Vec::new(),
            last_step: 0,
            external_url: external_url.to_string(),
        }
    }

    /// Groups every alert again under new routing (a reload); the notification log keeps
    /// groups that already notified from notifying again.
    pub fn regroup(&mut self, routing: &Routing, now: i64) {
        let mut dispatcher = Dispatcher::default();
        for a in self.alerts.values() {
            dispatcher.insert(&routing.cfg.route, a, now);
        }
        self.dispatcher = dispatcher;
    }

    /// Takes alerts (from the rules or `POST /api/v2/alerts`).
    pub fn receive(&mut self, routing: &Routing, alerts: Vec<Alert>, now: i64) -> Vec<Effect> {
        let mut out = Vec::new();
        let resolve = routing.cfg.resolve_timeout.as_millis() as i64;
        for mut a in alerts {
            if a.ends_at == 0 {
                a.ends_at = now + resolve;
            }
            let fp = a.fingerprint();
            // A firing alert's first receipt; one that had resolved (by an end that passed
            // unrenewed) and fires again starts anew.
            let was_firing = self
                .alerts
                .get(&fp)
                .is_some_and(|old| !old.resolved_at(now));
            if a.resolved_at(now) {
                self.received.remove(&fp);
            } else if !was_firing {
                self.received.insert(fp, now);
            } else {
                self.received.entry(fp).or_insert(now);
            }
            self.dispatcher.insert(&routing.cfg.route, &a, now);
            let silenced =
                !a.resolved_at(now) && !self.compiled.silenced_by(&a.labels, now).is_empty();
            if !silenced {
                let changes = self.correlator.observe(&a, now);
                self.apply_changes(routing, changes, now);
            }
            if !silenced || a.resolved_at(now) {
                out.push(Effect::Remediate(a.clone()));
            }
            put(&mut out, alert_key(fp), &a);
            self.alerts.insert(fp, a);
        }
        out
    }

    fn apply_changes(&mut self, routing: &Routing, changes: Vec<Change>, now: i64) {
        for c in changes {
            match c {
                Change::Opened(id) | Change::Split { into: id, .. } => {
                    if let Change::Split { from, .. } = c {
                        self.dirty_incidents.insert(from);
                    }
                    self.dirty_incidents.insert(id);
                    let Some(inc) = self.correlator.incidents.get(&id) else {
                        continue;
                    };
                    let labels = inc.root().map(|r| r.labels.clone()).unwrap_or_default();
                    if let Some(p) = policy_for(&routing.cfg.escalation_policies, &labels) {
                        let e = Escalation::start(id, p, inc.priority(), now);
                        self.escalations.insert(id, e);
                    }
                }
                Change::Updated(id) => {
                    self.dirty_incidents.insert(id);
                    let prio = self.correlator.incidents.get(&id).map(|i| i.priority());
                    if let (Some(e), Some(p)) = (self.escalations.get_mut(&id), prio) {
                        e.priority = e.priority.min(p);
                    }
                }
                Change::Merged { into, from } => {
                    self.dirty_incidents.insert(into);
                    self.dropped_incidents.push(from);
                    if let Some(mut e) = self.escalations.remove(&from) {
                        e.stop(&format!("merged into incident {into}"));
                    }
                }
                Change::Resolved(id) => {
                    self.dirty_incidents.insert(id);
                    if let Some(e) = self.escalations.get_mut(&id) {
                        e.stop("resolved");
                    }
                }
            }
        }
    }

    /// Records what remediation reports; a failed remediation pages at once.
    pub fn remediation(
        &mut self,
        routing: &Routing,
        news: RemediationNews,
        now: i64,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        match news {
            RemediationNews::Note { alert_fp, text } => {
                if let Some(inc) = self.correlator.latest_incident_of(alert_fp) {
                    self.correlator.note(inc, now, "remediation", text);
                    self.dirty_incidents.insert(inc);
                }
            }
            RemediationNews::Remediated { alert_fp, id } => {
                if let Some(inc) = self.correlator.latest_incident_of(alert_fp) {
                    self.correlator.remediated(inc, &id, now);
                    self.dirty_incidents.insert(inc);
                }
            }
            RemediationNews::Failed {
                id,
                alert_fp,
                labels,
                detail,
            } => {
                self.page_failed_remediation(routing, &id, alert_fp, &labels, detail, now, &mut out)
            }
        }
        self.persist_incidents(&mut out);
        out
    }

    /// One pass: alerts that ran out, due groups and escalations. Returns the effects and
    /// the next deadline.
    pub fn step(&mut self, routing: &Routing, now: i64) -> (Vec<Effect>, Option<i64>) {
        let mut out = Vec::new();
        // Alerts that ran out (no news before their end) resolve in their incidents too.
        let prev = std::mem::replace(&mut self.last_step, now);
        let ended: Vec<Alert> = self
            .alerts
            .values()
            .filter(|a| a.ends_at > prev && a.ends_at <= now)
            .cloned()
            .collect();
        for a in ended {
            let changes = self.correlator.observe(&a, now);
            self.apply_changes(routing, changes, now);
        }
        let flushes = self.dispatcher.due(now);
        // Inhibiting alerts, once per pass rather than per group (only when needed).
        let sources: Vec<Alert> = if flushes.is_empty() || routing.cfg.inhibit_rules.is_empty() {
            Vec::new()
        } else {
            self.alerts
                .values()
                .filter(|a| !a.resolved_at(now))
                .cloned()
                .collect()
        };
        let sources: Vec<&Alert> = sources.iter().collect();
        for f in flushes {
            self.flush(routing, &f, &sources, now, &mut out);
            self.dispatcher.flushed(&f, now);
        }
        self.escalate(routing, now, &mut out);
        // Forget old resolved alerts and incidents.
        let received = &mut self.received;
        self.alerts.retain(|fp, a| {
            let keep = !(a.resolved_at(now) && now - a.ends_at > RESOLVED_KEEP_MS);
            if !keep {
                out.push(Effect::Delete(alert_key(*fp)));
                received.remove(fp);
            }
            keep
        });
        for id in self.correlator.expire(now, INCIDENT_KEEP) {
            self.dropped_incidents.push(id);
        }
        self.persist_incidents(&mut out);
        let next = [
            self.dispatcher.next_deadline(),
            self.escalations
                .values()
                .filter(|e| e.stopped.is_none())
                .map(|e| e.next_at)
                .min(),
        ]
        .into_iter()
        .flatten()
        .min();
        (out, next)
    }

    /// Writes changed incidents and escalations, deletes dropped ones.
    fn persist_incidents(&mut self, out: &mut Vec<Effect>) {
        for id in std::mem::take(&mut self.dirty_incidents) {
            if let Some(i) = self.correlator.incidents.get(&id) {
                put(out, format!("i/{id:020}"), i);
            }
            if let Some(e) = self.escalations.get(&id) {
                put(out, format!("e/{id:020}"), e);
            }
        }
        for id in std::mem::take(&mut self.dropped_incidents) {
            out.push(Effect::Delete(format!("i/{id:020}").into_bytes()));
            out.push(Effect::Delete(format!("e/{id:020}").into_bytes()));
            self.escalations.remove(&id);
        }
    }

    /// What a due group has to say.
    fn flush(
        &mut self,
        routing: &Routing,
        f: &Flush,
        firing_all: &[&Alert],
        now: i64,
        out: &mut Vec<Effect>,
    ) {
        let Some(route) = routing.routes.get(&f.route_id) else {
            return;
        };
        if routing.muted(route, now) {
            return;
        }
        let alerts: Vec<Alert> = f
            .alerts
            .iter()
            .filter(|a| {
                a.resolved_at(now)
                    || (self.compiled.silenced_by(&a.labels, now).is_empty()
                        && inhibited_by(&routing.cfg.inhibit_rules, &a.labels, firing_all)
                            .is_none())
            })
            .cloned()
            .collect();
        let fps = |resolved: bool| {
            let mut v: Vec<u64> = alerts
                .iter()
                .filter(|a| a.resolved_at(now) == resolved)
                .map(|a| a.fingerprint())
                .collect();
            v.sort_unstable();
            v
        };
        let (firing, resolved) = (fps(false), fps(true));
        let priority = alerts.iter().map(|a| a.priority()).min().unwrap_or(3);
        // Integrations named but not delivered (Slack, email…): counted once per notification
        // they would have sent, with their own notification log entries so repeats follow the
        // route's repeat_interval like the delivered ones.
        for kind in routing
            .cfg
            .unsupported
            .get(&f.receiver)
            .into_iter()
            .flatten()
        {
            let lane = format!("{}/{kind}/{}", f.receiver, f.key);
            if needs_update(
                self.nflog.get(&lane),
                &firing,
                &resolved,
                false,
                f.repeat_interval,
                now,
            ) {
                let e = NflogEntry {
                    firing: firing.clone(),
                    resolved: resolved.clone(),
                    at: now,
                };
                put(out, format!("n/{lane}"), &e);
                self.nflog.insert(lane, e);
                *self
                    .undeliverable
                    .entry((f.receiver.clone(), kind))
                    .or_default() += 1;
            }
        }
        let Some(integrations) = routing.cfg.receivers.get(&f.receiver) else {
            return;
        };
        for (idx, integ) in integrations.iter().enumerate() {
            let lane = format!("{}/{idx}/{}", f.receiver, f.key);
            let entry = self.nflog.get(&lane);
            if !needs_update(
                entry,
                &firing,
                &resolved,
                integ.send_resolved(),
                f.repeat_interval,
                now,
            ) {
                continue;
            }
            // The alerts this notification announces first: in `firing` but not in what the
            // lane last sent.
            let fired_ms = firing
                .iter()
                .filter(|fp| entry.is_none_or(|e| e.firing.binary_search(fp).is_err()))
                .filter_map(|fp| self.received.get(fp).copied())
                .max();
            let e = NflogEntry {
                firing: firing.clone(),
                resolved: resolved.clone(),
                at: now,
            };
            put(out, format!("n/{lane}"), &e);
            self.nflog.insert(lane.clone(), e);
            let sent: Vec<Alert> = alerts
                .iter()
                .filter(|a| integ.send_resolved() || !a.resolved_at(now))
                .cloned()
                .collect();
            if sent.is_empty() {
                continue;
            }
            let max_alerts = match integ {
                Integration::Webhook { max_alerts, .. } => *max_alerts,
                _ => 0,
            };
            let body = match integ {
                Integration::Alertmanager { .. } => alertmanager_v2(&sent),
                _ => webhook_v4(
                    &f.receiver,
                    &f.key,
                    &f.group_labels,
                    &sent,
                    now,
                    &self.external_url,
                    max_alerts,
                ),
            };
            out.push(Effect::Notify(Outgoing {
                priority,
                receiver: f.receiver.clone(),
                integration: idx,
                lane,
                body,
                fired_ms,
            }));
        }
    }

    fn escalate(&mut self, routing: &Routing, now: i64, out: &mut Vec<Effect>) {
        let mut pages: Vec<Page> = Vec::new();
        for (id, e) in self.escalations.iter_mut() {
            if e.stopped.is_some() {
                continue;
            }
            let Some(p) = routing
                .cfg
                .escalation_policies
                .iter()
                .find(|p| p.name == e.policy)
            else {
                e.stop("policy no longer configured");
                self.dirty_incidents.insert(*id);
                continue;
            };
            let due = e.tick(p, now);
            if !due.is_empty() {
                self.dirty_incidents.insert(*id);
            }
            pages.extend(due);
        }
        pages.sort_by_key(|p| (p.priority, p.incident, p.round, p.step));
        for p in &pages {
            let Some(inc) = self.correlator.incidents.get(&p.incident).cloned() else {
                continue;
            };
            let Some(integrations) = routing.cfg.receivers.get(&p.receiver) else {
                continue;
            };
            for (idx, integ) in integrations.iter().enumerate() {
                let body = match integ {
                    Integration::Alertmanager { .. } => alertmanager_v2(&inc.firing_alerts()),
                    _ => page_v4(p, &inc, now, &self.external_url),
                };
                out.push(Effect::Notify(Outgoing {
                    priority: p.priority,
                    receiver: p.receiver.clone(),
                    integration: idx,
                    lane: format!("{}/{idx}/incident/{}", p.receiver, p.incident),
                    body,
                    fired_ms: None,
                }));
            }
            let text = format!(
                "paged {} (policy {}, step {}, round {})",
                p.receiver,
                p.policy,
                p.step + 1,
                p.round + 1
            );
            self.correlator.note(p.incident, now, "paged", text);
        }
    }

    /// Pages the first step of the escalation policy of a failed remediation's alert (or its
    /// incident's root cause), the remediation's record attached.
    #[allow(clippy::too_many_arguments)]
    fn page_failed_remediation(
        &mut self,
        routing: &Routing,
        id: &str,
        alert_fp: u64,
        alert_labels: &Labels,
        detail: Value,
        now: i64,
        out: &mut Vec<Effect>,
    ) {
        let inc = self
            .correlator
            .latest_incident_of(alert_fp)
            .and_then(|i| self.correlator.incidents.get(&i).cloned());
        let labels = inc
            .as_ref()
            .and_then(|i| i.root().map(|a| a.labels.clone()))
            .unwrap_or_else(|| alert_labels.clone());
        let policies = &routing.cfg.escalation_policies;
        let Some(policy) =
            policy_for(policies, &labels).or_else(|| policy_for(policies, alert_labels))
        else {
            tracing::warn!(remediation = %id, "remediation failed; no escalation policy matches its alert");
            return;
        };
        let Some(step) = policy.steps.first() else {
            return;
        };
        let page = Page {
            incident: inc.as_ref().map_or(0, |i| i.id),
            receiver: step.receiver.clone(),
            step: 0,
            round: 0,
            priority: priority_of(alert_labels),
            policy: policy.name.clone(),
        };
        let alerts = match &inc {
            Some(i) => i.firing_alerts(),
            None => self.alerts.get(&alert_fp).cloned().into_iter().collect(),
        };
        let integrations = routing.cfg.receivers.get(&step.receiver);
        for (idx, integ) in integrations.into_iter().flatten().enumerate() {
            let mut body = match (integ, &inc) {
                (Integration::Alertmanager { .. }, _) => alertmanager_v2(&alerts),
                (_, Some(i)) => page_v4(&page, i, now, &self.external_url),
                (_, None) => webhook_v4(
                    &step.receiver,
                    &format!("remediation/{id}"),
                    &Labels::default(),
                    &alerts,
                    now,
                    &self.external_url,
                    0,
                ),
            };
            if let Value::Object(m) = &mut body {
                m.insert("remediation".into(), detail.clone());
            }
            out.push(Effect::Notify(Outgoing {
                priority: page.priority,
                receiver: step.receiver.clone(),
                integration: idx,
                lane: format!("{}/{idx}/remediation/{id}", step.receiver),
                body,
                fired_ms: None,
            }));
        }
        if let Some(i) = inc {
            let text = format!("paged {} after remediation {id} failed", step.receiver);
            self.correlator.note(i.id, now, "paged", text);
            self.dirty_incidents.insert(i.id);
        }
    }

    // ----- requests -----

    /// The silences `q` lists, in the v2 API's order.
    pub fn silences(&self, now: i64, q: &SilenceQuery) -> Vec<Value> {
        let mut v: Vec<&Silence> = self.silences.values().filter(|s| q.lists(s)).collect();
        sort_silences(&mut v, now);
        v.into_iter().map(|s| s.to_json(now)).collect()
    }

    /// One silence.
    pub fn silence(&self, id: &str, now: i64) -> Result<Value, RequestError> {
        self.silences
            .get(id)
            .map(|s| s.to_json(now))
            .ok_or_else(|| RequestError::NotFound(format!("silence {id} not found")))
    }

    fn store_silence(&mut self, s: Silence, out: &mut Vec<Effect>) {
        put(out, format!("s/{}", s.id), &s);
        self.silences.insert(s.id.clone(), s);
        self.compiled = Silences::new(self.silences.values().cloned());
    }

    /// Creates or updates a silence (`new_id` names a new one); returns its id.
    pub fn put_silence(
        &mut self,
        p: PostableSilence,
        now: i64,
        new_id: impl FnOnce() -> String,
    ) -> Result<(String, Vec<Effect>), RequestError> {
        let mut s = p.into_silence(now)?;
        if s.id.is_empty() {
            s.id = new_id();
        } else {
            match self.silences.get(&s.id) {
                None => {
                    return Err(RequestError::NotFound(format!(
                        "silence {} not found",
                        s.id
                    )));
                }
                // An expired silence is not changed: a new one replaces it.
                Some(old) if old.state(now) == "expired" => s.id = new_id(),
                Some(_) => {}
            }
        }
        let id = s.id.clone();
        let mut out = Vec::new();
        self.store_silence(s, &mut out);
        Ok((id, out))
    }

    /// Expires a silence now.
    pub fn expire_silence(&mut self, id: &str, now: i64) -> Result<Vec<Effect>, RequestError> {
        let mut s = self
            .silences
            .get(id)
            .cloned()
            .ok_or_else(|| RequestError::NotFound(format!("silence {id} not found")))?;
        if s.state(now) == "expired" {
            return Err(RequestError::Invalid(format!(
                "silence {id} already expired"
            )));
        }
        s.starts_at = s.starts_at.min(now);
        s.ends_at = now;
        s.updated_at = now;
        let mut out = Vec::new();
        self.store_silence(s, &mut out);
        Ok(out)
    }

    /// What the v2 API's alert and group lists read (`apiquery::V2View`).
    pub fn v2_view<'a>(&'a self, routing: &'a Routing, now: i64) -> V2View<'a> {
        V2View {
            alerts: &self.alerts,
            silences: &self.compiled,
            groups: self.dispatcher.groups(),
            routing,
            now,
        }
    }

    /// Notifications counted as undeliverable, by (receiver, integration).
    pub fn undeliverable(&self) -> &BTreeMap<(String, &'static str), u64> {
        &self.undeliverable
    }

    /// Firing alerts: `(active, suppressed)`.
    pub fn alert_counts(&self, routing: &Routing, now: i64) -> (usize, usize) {
        let firing: Vec<&Alert> = self
            .alerts
            .values()
            .filter(|a| !a.resolved_at(now))
            .collect();
        let suppressed = firing
            .iter()
            .filter(|a| {
                !self.compiled.silenced_by(&a.labels, now).is_empty()
                    || inhibited_by(&routing.cfg.inhibit_rules, &a.labels, &firing).is_some()
            })
            .count();
        (firing.len() - suppressed, suppressed)
    }

    /// Open incidents.
    pub fn open_incidents(&self) -> usize {
        self.correlator
            .incidents
            .values()
            .filter(|i| i.open())
            .count()
    }

    /// Incidents, newest first (`state`: `open`, `resolved` or anything else for all).
    pub fn incidents(&self, state: &str, now: i64) -> Vec<Value> {
        self.correlator
            .incidents
            .values()
            .rev()
            .filter(|i| match state {
                "open" => i.open(),
                "resolved" => !i.open(),
                _ => true,
            })
            .map(|i| self.incident_view(i, now))
            .collect()
    }

    /// One incident.
    pub fn incident(&self, id: u64, now: i64) -> Result<Value, RequestError> {
        let i = self
            .correlator
            .incidents
            .get(&id)
            .ok_or_else(|| RequestError::NotFound(format!("incident {id} not found")))?;
        Ok(self.incident_view(i, now))
    }

    /// An incident for the API, with its escalation.
    fn incident_view(&self, i: &Incident, now: i64) -> Value {
        let mut v = incident_json(i, now);
        if let (Value::Object(m), Some(e)) = (&mut v, self.escalations.get(&i.id)) {
            m.insert(
                "escalation".into(),
                serde_json::to_value(e).unwrap_or(Value::Null),
            );
        }
        v
    }

    /// Acknowledges an incident: its escalation stops.
    pub fn acknowledge(
        &mut self,
        id: u64,
        by: &str,
        now: i64,
    ) -> Result<Vec<Effect>, RequestError> {
        self.correlator.acknowledge(id, by, now)?;
        if let Some(e) = self.escalations.get_mut(&id) {
            e.stop(&format!("acknowledged by {by}"));
        }
        self.dirty_incidents.insert(id);
        let mut out = Vec::new();
        self.persist_incidents(&mut out);
        Ok(out)
    }

    /// The open incident holding alert `fingerprint` (16 hex digits).
    pub fn incident_of_alert(&self, fingerprint: &str) -> Result<u64, RequestError> {
        let fp = u64::from_str_radix(fingerprint, 16)
            .map_err(|_| RequestError::Invalid(format!("invalid fingerprint {fingerprint:?}")))?;
        self.correlator.incident_of(fp).ok_or_else(|| {
            RequestError::NotFound(format!("no open incident holds alert {fingerprint}"))
        })
    }
}

#[cfg(test)]
mod tests;
