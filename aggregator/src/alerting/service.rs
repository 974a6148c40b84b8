//! The alerting driver: takes alerts from the rules, runs dispatch, silences, inhibition,
//! correlation and escalation, and delivers through a durable outbox.
//!
//! State lives in one sled tree under `DATA_DIR/alerting`, keyed by prefix:
//! `a/` alerts, `s/` silences, `n/` the notification log, `i/` incidents, `e/` escalations,
//! `r/` remediations, `remediation/enabled` the remediation switch, `o/` the outbox (`o/` +
//! priority byte + sequence: iteration order is urgency, then age). A
//! notification is written to the outbox together with its notification-log entry in one
//! atomic batch, flushed to disk, and only then sent; it leaves the outbox once its receiver
//! accepted it. So a crash or restart neither loses a pending notification (it is sent after
//! start-up) nor repeats one that was decided (the log says it was). A delivery is retried with
//! exponential backoff (1 s doubling to 5 min) for up to a day; the outbox holds at most
//! `MAX_OUTBOX` entries — beyond that new notifications are dropped and counted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use telltale_common::model::{Labels, Sample, SeriesSamples, now_ms};
use telltale_common::names;
use telltale_common::wire::CommandResult;
use tokio::sync::{Notify, Semaphore};

use super::config::{Integration, RoutingConfig};
use super::correlate::{Change, Correlator, Incident};
use super::deliver::{Deliverer, SendError};
use super::dispatch::{Dispatcher, Flush, NflogEntry, needs_update};
use super::escalate::{Escalation, Page, policy_for};
use super::inhibit::inhibited_by;
use super::payload::{alertmanager_v2, incident_json, labels_json, page_v4, webhook_v4};
use super::priority_of;
use super::route::Route;
use super::silence::{PostableSilence, Silence, Silences};
use super::{Alert, fingerprint_hex, rfc3339};
use crate::alert::Notifier;
use crate::metrics::storage::{AppendData, AppendRequest, Appender};
use crate::remediate::engine::{Effect, Engine, Record};
use crate::remediate::hub::Hub;
use crate::selfmetrics::{counter, gauge};

/// Most notifications waiting for delivery.
pub const MAX_OUTBOX: usize = 10_000;
/// A delivery failing for longer than this is given up.
const MAX_RETRY_MS: i64 = 24 * 3600 * 1000;
/// Deliveries in flight at once.
const PARALLEL_DELIVERIES: usize = 16;
/// Resolved alerts are forgotten this long after they resolved.
const RESOLVED_KEEP_MS: i64 = 15 * 60 * 1000;
/// Resolved incidents are kept this long for the API.
const INCIDENT_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// A notification waiting in the outbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Delivery {
    id: u64,
    priority: u8,
    receiver: String,
    integration: usize,
    /// Notifications of one lane go out in order (receiver/integration/group).
    lane: String,
    body: String,
    attempts: u32,
    next_attempt: i64,
    created: i64,
}

fn alert_key(fp: u64) -> Vec<u8> {
    format!("a/{fp:016x}").into_bytes()
}

fn outbox_key(priority: u8, id: u64) -> Vec<u8> {
    let mut k = b"o/".to_vec();
    k.push(priority);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Errors of the alerting API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad input (HTTP 400).
    #[error("{0}")]
    Bad(String),
    /// No such object (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// Storage failed (HTTP 500).
    #[error("{0}")]
    Internal(String),
}

struct State {
    alerts: HashMap<u64, Alert>,
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
    /// Runbooks and remediations.
    remediation: Engine,
    dirty_remediations: HashSet<String>,
    forgotten_remediations: Vec<String>,
    /// Remediations that failed and must escalate (handled by the next pass).
    to_escalate: Vec<String>,
    /// `telltale_remediation_runs_total{action,result}`.
    runs: BTreeMap<(String, String), u64>,
    runs_changed: bool,
}

#[derive(Default)]
struct Counters {
    sent: [AtomicU64; 4],
    failed: [AtomicU64; 4],
    dropped: AtomicU64,
    queued: AtomicU64,
    /// Damaged state found at start-up: a store moved aside, records unreadable.
    damaged: AtomicU64,
    /// Remediations refused because their agent does not offer the runbook's action.
    unknown_action: AtomicU64,
}

fn kind_index(i: &Integration) -> usize {
    match i {
        Integration::Webhook { .. } => 0,
        Integration::Alertmanager { .. } => 1,
        Integration::Nats { .. } => 2,
        Integration::Log { .. } => 3,
    }
}
const KINDS: [&str; 4] = ["webhook", "alertmanager", "nats", "log"];

/// Warns about runbooks naming an action that none of the connected agents offers (when any
/// of them said what it offers).
fn warn_unoffered(
    runbooks: &crate::remediate::Runbooks,
    offered: Option<std::collections::HashSet<String>>,
) {
    let Some(offered) = offered else { return };
    for r in &runbooks.runbooks {
        if !offered.contains(&r.action) {
            tracing::warn!(runbook = %r.name, action = %r.action,
                "no connected agent offers this runbook's action: its remediations will be refused");
        }
    }
}

/// The routing configuration and its routes by id; replaced whole on a reload.
struct Routing {
    cfg: RoutingConfig,
    routes: HashMap<String, Route>,
}

impl Routing {
    fn new(cfg: RoutingConfig) -> Routing {
        let routes = cfg
            .route
            .walk()
            .into_iter()
            .map(|r| (r.id.clone(), r.clone()))
            .collect();
        Routing { cfg, routes }
    }
}

/// The alerting service.
pub struct AlertingService {
    routing: std::sync::RwLock<Arc<Routing>>,
    db: sled::Db,
    tree: sled::Tree,
    state: Mutex<State>,
    wake: Notify,
    deliver_wake: Notify,
    deliverer: Deliverer,
    external_url: String,
    counters: Counters,
    hub: Arc<Hub>,
    storage: Option<Arc<dyn Appender>>,
    /// One pass at a time (the driver, acknowledgements and approvals all run passes).
    step_lock: tokio::sync::Mutex<()>,
}

fn json_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

impl AlertingService {
    /// Opens the state in `dir` and starts the driver and the delivery loop.
    pub fn open(
        cfg: RoutingConfig,
        dir: &Path,
        external_url: &str,
        remediation: Remediation,
    ) -> Result<Arc<AlertingService>, String> {
        for w in &cfg.warnings {
            tracing::warn!("routing: {w}");
        }
        // Damaged state is moved aside and the aggregator starts without it (alerts are
        // re-evaluated by the rules; silences, incidents and the notification log are lost
        // and logged); a store that cannot be opened for another reason stops start-up.
        let opened = telltale_common::store::open_or_replace(dir, "alerting state", |d| {
            sled::Config::new()
                .path(d)
                .cache_capacity(16 << 20)
                .flush_every_ms(Some(500))
                .open()
        })?;
        let counters = Counters::default();
        counters
            .damaged
            .store(u64::from(opened.moved_aside.is_some()), Ordering::Relaxed);
        let db = opened.db;
        let tree = db
            .open_tree("alerting")
            .map_err(|e| format!("cannot open alerting state: {e}"))?;
        let load = |prefix: &str| -> Vec<(Vec<u8>, Vec<u8>)> {
            tree.scan_prefix(prefix)
                .filter_map(|r| match r {
                    Ok(kv) => Some(kv),
                    Err(e) => {
                        tracing::error!(prefix, error = %e, "unreadable alerting state record skipped");
                        counters.damaged.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                })
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect()
        };
        let mut silences = BTreeMap::new();
        for (k, v) in load("s/") {
            match serde_json::from_slice::<Silence>(&v) {
                Ok(s) => {
                    silences.insert(s.id.clone(), s);
                }
                Err(e) => {
                    tracing::warn!(key = %String::from_utf8_lossy(&k), error = %e, "skipping unreadable silence")
                }
            }
        }
        let mut nflog = HashMap::new();
        for (k, v) in load("n/") {
            if let Ok(e) = serde_json::from_slice::<NflogEntry>(&v) {
                nflog.insert(String::from_utf8_lossy(&k[2..]).into_owned(), e);
            }
        }
        let incidents: Vec<Incident> = load("i/")
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        let escalations: BTreeMap<u64, Escalation> = load("e/")
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice::<Escalation>(&v).ok())
            .map(|e| (e.incident, e))
            .collect();
        let records: Vec<Record> = load("r/")
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        let enabled = match tree.get("remediation/enabled") {
            Ok(Some(v)) => v.as_ref() == b"1",
            _ => remediation.runbooks.enabled,
        };
        let mut runs = BTreeMap::new();
        for r in records.iter().filter(|r| r.state.done()) {
            *runs
                .entry((r.action.clone(), r.state.as_str().to_string()))
                .or_insert(0) += 1;
        }
        let engine = Engine::new(remediation.runbooks, enabled, records);
        let queued = load("o/").len() as u64;
        // The alerts known before a restart: the ones no rule fires again run out (`ends_at`)
        // and are announced as resolved, like Alertmanager does for a restarted Prometheus.
        let now = now_ms();
        let mut alerts = HashMap::new();
        let mut dispatcher = Dispatcher::default();
        for (_, v) in load("a/") {
            if let Ok(a) = serde_json::from_slice::<Alert>(&v) {
                dispatcher.insert(&cfg.route, &a, now);
                alerts.insert(a.fingerprint(), a);
            }
        }
        let svc = Arc::new(AlertingService {
            db,
            tree,
            state: Mutex::new(State {
                alerts,
                dispatcher,
                compiled: Silences::new(silences.values().cloned()),
                silences,
                correlator: Correlator::new(cfg.correlation.clone(), incidents),
                escalations,
                nflog,
                dirty_incidents: HashSet::new(),
                dropped_incidents: Vec::new(),
                last_step: 0,
                remediation: engine,
                dirty_remediations: HashSet::new(),
                forgotten_remediations: Vec::new(),
                to_escalate: Vec::new(),
                runs,
                runs_changed: false,
            }),
            routing: std::sync::RwLock::new(Arc::new(Routing::new(cfg))),
            wake: Notify::new(),
            deliver_wake: Notify::new(),
            deliverer: Deliverer::new()?,
            external_url: external_url.to_string(),
            counters,
            hub: remediation.hub.clone(),
            storage: remediation.storage,
            step_lock: tokio::sync::Mutex::new(()),
        });
        let (w1, w2) = (Arc::downgrade(&svc), Arc::downgrade(&svc));
        remediation.hub.set_handlers(
            Box::new(move |agent, r| {
                if let Some(s) = w1.upgrade() {
                    s.command_result(agent, r);
                }
            }),
            Box::new(move |agent| {
                if let Some(s) = w2.upgrade() {
                    s.lock().remediation.reconnected(agent);
                    s.wake.notify_one();
                }
            }),
        );
        svc.counters.queued.store(queued, Ordering::Relaxed);
        if queued > 0 {
            tracing::info!(
                pending = queued,
                "notifications pending from before the restart"
            );
        }
        tokio::spawn(svc.clone().drive());
        tokio::spawn(svc.clone().deliver_loop());
        Ok(svc)
    }

    /// The routing in force (a snapshot: a reload replaces it whole).
    fn routing(&self) -> Arc<Routing> {
        self.routing
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces routing and runbooks (a reload): alerts are grouped again under the new
    /// routes; the notification log keeps groups that already notified from notifying again.
    pub fn reload(&self, cfg: RoutingConfig, runbooks: crate::remediate::Runbooks) {
        for w in &cfg.warnings {
            tracing::warn!("routing: {w}");
        }
        let routing = Arc::new(Routing::new(cfg));
        let now = now_ms();
        {
            let mut st = self.lock();
            let mut dispatcher = Dispatcher::default();
            for a in st.alerts.values() {
                dispatcher.insert(&routing.cfg.route, a, now);
            }
            st.dispatcher = dispatcher;
            warn_unoffered(&runbooks, self.hub.offered());
            st.remediation.cfg = runbooks;
            *self.routing.write().unwrap_or_else(|e| e.into_inner()) = routing;
        }
        self.wake.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes alerts (from the rules or `POST /api/v2/alerts`).
    pub fn receive(&self, alerts: Vec<Alert>) {
        let now = now_ms();
        let resolve = self.routing().cfg.resolve_timeout.as_millis() as i64;
        let mut st = self.lock();
        for mut a in alerts {
            if a.ends_at == 0 {
                a.ends_at = now + resolve;
            }
            let fp = a.fingerprint();
            st.dispatcher.insert(&self.routing().cfg.route, &a, now);
            let silenced =
                !a.resolved_at(now) && !st.compiled.silenced_by(&a.labels, now).is_empty();
            if !silenced {
                let changes = st.correlator.observe(&a, now);
                self.apply_changes(&mut st, changes, now);
            }
            if !silenced || a.resolved_at(now) {
                let fx = st.remediation.on_alert(&a, now, &mut new_id);
                self.apply_remediation(&mut st, fx, now);
            }
            match serde_json::to_vec(&a) {
                Ok(v) => {
                    if let Err(e) = self.tree.insert(alert_key(fp), v) {
                        tracing::warn!(error = %e, "cannot store an alert");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot encode an alert"),
            }
            st.alerts.insert(fp, a);
        }
        drop(st);
        self.wake.notify_one();
    }

    fn apply_changes(&self, st: &mut State, changes: Vec<Change>, now: i64) {
        for c in changes {
            match c {
                Change::Opened(id) => {
                    st.dirty_incidents.insert(id);
                    let Some(inc) = st.correlator.incidents.get(&id) else {
                        continue;
                    };
                    let labels = inc.root().map(|r| r.labels.clone()).unwrap_or_default();
                    if let Some(p) = policy_for(&self.routing().cfg.escalation_policies, &labels) {
                        let e = Escalation::start(id, p, inc.priority(), now);
                        st.escalations.insert(id, e);
                    }
                }
                Change::Updated(id) => {
                    st.dirty_incidents.insert(id);
                    let prio = st.correlator.incidents.get(&id).map(|i| i.priority());
                    if let (Some(e), Some(p)) = (st.escalations.get_mut(&id), prio) {
                        e.priority = e.priority.min(p);
                    }
                }
                Change::Merged { into, from } => {
                    st.dirty_incidents.insert(into);
                    st.dropped_incidents.push(from);
                    if let Some(mut e) = st.escalations.remove(&from) {
                        e.stop(&format!("merged into incident {into}"));
                    }
                }
                Change::Resolved(id) => {
                    st.dirty_incidents.insert(id);
                    if let Some(e) = st.escalations.get_mut(&id) {
                        e.stop("resolved");
                    }
                }
            }
        }
    }

    async fn drive(self: Arc<Self>) {
        loop {
            let now = now_ms();
            let next = match self.step(now).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "alerting step failed; retrying in 1s");
                    Some(now + 1000)
                }
            };
            sleep_until_or(next, &self.wake).await;
        }
    }

    /// One pass: due groups and escalations into the outbox. Returns the next deadline.
    async fn step(&self, now: i64) -> Result<Option<i64>, String> {
        let _one = self.step_lock.lock().await;
        let mut batch = sled::Batch::default();
        let mut runs_series: Option<BTreeMap<(String, String), u64>> = None;
        let mut new_deliveries = 0u64;
        let next = {
            let mut st = self.lock();
            // Alerts that ran out (no news before their end) resolve in their incidents too.
            let prev = std::mem::replace(&mut st.last_step, now);
            let ended: Vec<Alert> = st
                .alerts
                .values()
                .filter(|a| a.ends_at > prev && a.ends_at <= now)
                .cloned()
                .collect();
            for a in ended {
                let changes = st.correlator.observe(&a, now);
                self.apply_changes(&mut st, changes, now);
            }
            let hub = self.hub.clone();
            let fx = st.remediation.tick(now, &|a| hub.connected(a));
            self.apply_remediation(&mut st, fx, now);
            for id in std::mem::take(&mut st.to_escalate) {
                new_deliveries += self.escalate_remediation(&mut st, &id, now, &mut batch)?;
            }
            for id in std::mem::take(&mut st.forgotten_remediations) {
                batch.remove(format!("r/{id}").as_bytes());
            }
            for id in std::mem::take(&mut st.dirty_remediations) {
                if let Some(r) = st.remediation.records.get(&id) {
                    batch.insert(
                        format!("r/{id}").as_bytes(),
                        serde_json::to_vec(r).map_err(|e| e.to_string())?,
                    );
                }
            }
            let flushes = st.dispatcher.due(now);
            // Inhibiting alerts, once per pass rather than per group (only when needed).
            let sources: Vec<Alert> =
                if flushes.is_empty() || self.routing().cfg.inhibit_rules.is_empty() {
                    Vec::new()
                } else {
                    st.alerts
                        .values()
                        .filter(|a| !a.resolved_at(now))
                        .cloned()
                        .collect()
                };
            let sources: Vec<&Alert> = sources.iter().collect();
            for f in flushes {
                new_deliveries += self.flush(&mut st, &f, &sources, now, &mut batch)?;
                st.dispatcher.flushed(&f, now);
            }
            new_deliveries += self.escalate(&mut st, now, &mut batch)?;
            // Forget old resolved alerts and incidents.
            st.alerts.retain(|fp, a| {
                let keep = !(a.resolved_at(now) && now - a.ends_at > RESOLVED_KEEP_MS);
                if !keep {
                    batch.remove(alert_key(*fp));
                }
                keep
            });
            for id in st.correlator.expire(now, INCIDENT_KEEP) {
                st.dropped_incidents.push(id);
            }
            for id in std::mem::take(&mut st.dirty_incidents) {
                if let Some(i) = st.correlator.incidents.get(&id) {
                    batch.insert(
                        format!("i/{id:020}").as_bytes(),
                        serde_json::to_vec(i).map_err(|e| e.to_string())?,
                    );
                }
                if let Some(e) = st.escalations.get(&id) {
                    batch.insert(
                        format!("e/{id:020}").as_bytes(),
                        serde_json::to_vec(e).map_err(|e| e.to_string())?,
                    );
                }
            }
            for id in std::mem::take(&mut st.dropped_incidents) {
                batch.remove(format!("i/{id:020}").as_bytes());
                batch.remove(format!("e/{id:020}").as_bytes());
                st.escalations.remove(&id);
            }
            if std::mem::take(&mut st.runs_changed) {
                runs_series = Some(st.runs.clone());
            }
            [
                st.remediation.next_deadline(),
                st.dispatcher.next_deadline(),
                st.escalations
                    .values()
                    .filter(|e| e.stopped.is_none())
                    .map(|e| e.next_at)
                    .min(),
            ]
            .into_iter()
            .flatten()
            .min()
        };
        self.tree.apply_batch(batch).map_err(|e| e.to_string())?;
        if let (Some(runs), Some(storage)) = (runs_series, &self.storage) {
            // Outcomes as series, so runbooks can be tuned with queries.
            let series = runs
                .into_iter()
                .map(|((action, result), n)| SeriesSamples {
                    labels: Labels::from_pairs([
                        ("__name__", names::REMEDIATION_RUNS),
                        ("action", action.as_str()),
                        ("result", result.as_str()),
                    ]),
                    samples: vec![Sample(now, n as f64)],
                })
                .collect();
            let req = AppendRequest {
                origin: None,
                data: AppendData::Series(series),
            };
            if let Err(e) = storage.append(req).await {
                tracing::warn!(error = %e, "cannot store remediation outcomes");
            }
        }
        if new_deliveries > 0 {
            self.db.flush_async().await.map_err(|e| e.to_string())?;
            self.counters
                .queued
                .fetch_add(new_deliveries, Ordering::Relaxed);
            self.deliver_wake.notify_one();
        }
        Ok(next)
    }

    fn muted_by_time(&self, route: &Route, now: i64) -> bool {
        let routing = self.routing();
        let ti = &routing.cfg.time_intervals;
        route
            .mute_time_intervals
            .iter()
            .any(|n| ti.get(n).is_some_and(|t| t.contains(now)))
            || (!route.active_time_intervals.is_empty()
                && !route
                    .active_time_intervals
                    .iter()
                    .any(|n| ti.get(n).is_some_and(|t| t.contains(now))))
    }

    /// Queues what a due group has to say; returns how many deliveries were queued.
    fn flush(
        &self,
        st: &mut State,
        f: &Flush,
        firing_all: &[&Alert],
        now: i64,
        batch: &mut sled::Batch,
    ) -> Result<u64, String> {
        let routing = self.routing();
        let Some(route) = routing.routes.get(&f.route_id) else {
            return Ok(0);
        };
        if self.muted_by_time(route, now) {
            return Ok(0);
        }
        let alerts: Vec<Alert> = f
            .alerts
            .iter()
            .filter(|a| {
                a.resolved_at(now)
                    || (st.compiled.silenced_by(&a.labels, now).is_empty()
                        && inhibited_by(&self.routing().cfg.inhibit_rules, &a.labels, firing_all)
                            .is_none())
            })
            .cloned()
            .collect();
        let mut firing: Vec<u64> = alerts
            .iter()
            .filter(|a| !a.resolved_at(now))
            .map(|a| a.fingerprint())
            .collect();
        let mut resolved: Vec<u64> = alerts
            .iter()
            .filter(|a| a.resolved_at(now))
            .map(|a| a.fingerprint())
            .collect();
        firing.sort_unstable();
        resolved.sort_unstable();
        let priority = alerts.iter().map(|a| a.priority()).min().unwrap_or(3);
        let mut queued = 0;
        let routing = self.routing();
        let Some(integrations) = routing.cfg.receivers.get(&f.receiver) else {
            return Ok(0);
        };
        for (idx, integ) in integrations.iter().enumerate() {
            let lane = format!("{}/{idx}/{}", f.receiver, f.key);
            let entry = st.nflog.get(&lane);
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
            let e = NflogEntry {
                firing: firing.clone(),
                resolved: resolved.clone(),
                at: now,
            };
            batch.insert(
                format!("n/{lane}").as_bytes(),
                serde_json::to_vec(&e).map_err(|e| e.to_string())?,
            );
            st.nflog.insert(lane.clone(), e);
            let sent: Vec<Alert> = if integ.send_resolved() {
                alerts.clone()
            } else {
                alerts
                    .iter()
                    .filter(|a| !a.resolved_at(now))
                    .cloned()
                    .collect()
            };
            if sent.is_empty() {
                continue;
            }
            let body = match integ {
                Integration::Alertmanager { .. } => alertmanager_v2(&sent),
                Integration::Webhook { max_alerts, .. } => webhook_v4(
                    &f.receiver,
                    &f.key,
                    &f.group_labels,
                    &sent,
                    now,
                    &self.external_url,
                    *max_alerts,
                ),
                _ => webhook_v4(
                    &f.receiver,
                    &f.key,
                    &f.group_labels,
                    &sent,
                    now,
                    &self.external_url,
                    0,
                ),
            };
            queued += self.enqueue(batch, priority, &f.receiver, idx, lane, &body, now)?;
        }
        Ok(queued)
    }

    fn escalate(&self, st: &mut State, now: i64, batch: &mut sled::Batch) -> Result<u64, String> {
        let routing = self.routing();
        let mut pages: Vec<Page> = Vec::new();
        let mut touched = Vec::new();
        for (id, e) in st.escalations.iter_mut() {
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
                touched.push(*id);
                continue;
            };
            let due = e.tick(p, now);
            if !due.is_empty() {
                touched.push(*id);
            }
            pages.extend(due);
        }
        pages.sort_by_key(|p| (p.priority, p.incident, p.round, p.step));
        let mut queued = 0;
        for p in &pages {
            let Some(inc) = st.correlator.incidents.get(&p.incident).cloned() else {
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
                let lane = format!("{}/{idx}/incident/{}", p.receiver, p.incident);
                queued += self.enqueue(batch, p.priority, &p.receiver, idx, lane, &body, now)?;
            }
            st.correlator.note(
                p.incident,
                now,
                "paged",
                format!(
                    "paged {} (policy {}, step {}, round {})",
                    p.receiver,
                    p.policy,
                    p.step + 1,
                    p.round + 1
                ),
            );
        }
        st.dirty_incidents.extend(touched);
        Ok(queued)
    }

    #[allow(clippy::too_many_arguments)]
    fn enqueue(
        &self,
        batch: &mut sled::Batch,
        priority: u8,
        receiver: &str,
        integration: usize,
        lane: String,
        body: &Value,
        now: i64,
    ) -> Result<u64, String> {
        if self.counters.queued.load(Ordering::Relaxed) as usize >= MAX_OUTBOX {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                receiver,
                "notification dropped: {MAX_OUTBOX} notifications already wait for delivery"
            );
            return Ok(0);
        }
        let id = self.db.generate_id().map_err(|e| e.to_string())?;
        let d = Delivery {
            id,
            priority,
            receiver: receiver.to_string(),
            integration,
            lane,
            body: body.to_string(),
            attempts: 0,
            next_attempt: now,
            created: now,
        };
        batch.insert(
            outbox_key(priority, id),
            serde_json::to_vec(&d).map_err(|e| e.to_string())?,
        );
        Ok(1)
    }

    async fn deliver_loop(self: Arc<Self>) {
        let sem = Arc::new(Semaphore::new(PARALLEL_DELIVERIES));
        let in_flight: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(HashSet::new()));
        loop {
            let now = now_ms();
            let mut next: Option<i64> = None;
            let mut busy_lanes: HashSet<String> =
                in_flight.lock().unwrap_or_else(|e| e.into_inner()).clone();
            for item in self.tree.scan_prefix("o/") {
                let Ok((k, v)) = item else { continue };
                let d: Delivery = match serde_json::from_slice(&v) {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::error!(error = %e, "dropping an unreadable queued notification");
                        let _ = self.tree.remove(&k);
                        self.gone(true);
                        continue;
                    }
                };
                // One at a time per lane, in order.
                if !busy_lanes.insert(d.lane.clone()) {
                    continue;
                }
                if d.next_attempt > now {
                    next = Some(next.map_or(d.next_attempt, |n: i64| n.min(d.next_attempt)));
                    continue;
                }
                let Ok(permit) = sem.clone().try_acquire_owned() else {
                    next = Some(now + 50);
                    break;
                };
                in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(d.lane.clone());
                let me = self.clone();
                let fl = in_flight.clone();
                tokio::spawn(async move {
                    me.attempt(k.to_vec(), d.clone()).await;
                    fl.lock().unwrap_or_else(|e| e.into_inner()).remove(&d.lane);
                    drop(permit);
                    me.deliver_wake.notify_one();
                });
            }
            sleep_until_or(next, &self.deliver_wake).await;
        }
    }

    fn gone(&self, dropped: bool) {
        let _ = self
            .counters
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                Some(q.saturating_sub(1))
            });
        if dropped {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn attempt(&self, key: Vec<u8>, mut d: Delivery) {
        let routing = self.routing();
        let Some(integ) = routing
            .cfg
            .receivers
            .get(&d.receiver)
            .and_then(|v| v.get(d.integration))
        else {
            tracing::error!(receiver = %d.receiver, "dropping a queued notification: its receiver is no longer configured");
            let _ = self.tree.remove(&key);
            self.gone(true);
            return;
        };
        let k = kind_index(integ);
        let id = format!("telltale-{}", d.id);
        match self.deliverer.send(integ, d.body.as_bytes(), &id).await {
            Ok(()) => {
                self.counters.sent[k].fetch_add(1, Ordering::Relaxed);
                let _ = self.tree.remove(&key);
                // Made durable at once: a crash right after a delivery must not resend it.
                if let Err(e) = self.db.flush_async().await {
                    tracing::warn!(error = %e, "cannot flush the outbox");
                }
                self.gone(false);
                tracing::debug!(receiver = %d.receiver, integration = KINDS[k], "notification delivered");
            }
            Err(SendError::Permanent(e)) => {
                self.counters.failed[k].fetch_add(1, Ordering::Relaxed);
                tracing::error!(receiver = %d.receiver, integration = KINDS[k], error = %e, "notification refused; dropped");
                let _ = self.tree.remove(&key);
                self.gone(true);
            }
            Err(SendError::Retry(e)) => {
                self.counters.failed[k].fetch_add(1, Ordering::Relaxed);
                let now = now_ms();
                if now - d.created > MAX_RETRY_MS {
                    tracing::error!(receiver = %d.receiver, integration = KINDS[k], error = %e, "notification undeliverable for a day; dropped");
                    let _ = self.tree.remove(&key);
                    self.gone(true);
                    return;
                }
                d.attempts += 1;
                let backoff = 1000i64 << d.attempts.saturating_sub(1).min(9);
                d.next_attempt = now + backoff.min(300_000);
                tracing::warn!(receiver = %d.receiver, integration = KINDS[k], attempt = d.attempts, retry_in_ms = d.next_attempt - now, error = %e, "notification delivery failed; will retry");
                match serde_json::to_vec(&d) {
                    Ok(v) => {
                        let _ = self.tree.insert(&key, v);
                    }
                    Err(e) => tracing::error!(error = %e, "cannot re-queue a notification"),
                }
            }
        }
    }

    fn apply_remediation(&self, st: &mut State, fx: Vec<Effect>, now: i64) {
        for f in fx {
            match f {
                Effect::Send { agent, cmd } => {
                    let id = cmd.id.clone();
                    if self.hub.offers(&agent, &cmd.action) == Some(false) {
                        // The agent said which actions it has: this one would only be refused
                        // there. Refused here, counted, and the runbook's author told.
                        self.counters.unknown_action.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%agent, action = %cmd.action, remediation = %id,
                            "a runbook names an action this agent does not offer");
                        let refusal = telltale_common::wire::CommandResult {
                            id,
                            status: "refused".into(),
                            reason: format!(
                                "agent {agent} does not offer action {:?} (not in its allowlist)",
                                cmd.action
                            ),
                            exit_code: None,
                            started_ms: 0,
                            duration_ms: 0,
                            stdout_tail: String::new(),
                            stderr_tail: String::new(),
                        };
                        let more = st.remediation.on_result(&agent, refusal, now);
                        self.apply_remediation(st, more, now);
                        continue;
                    }
                    if !self.hub.send(&agent, cmd) {
                        // Not connected after all: queued again, sent on the next connect.
                        st.remediation.reconnected(&agent);
                        tracing::info!(%agent, %id, "remediation waits for its agent");
                    }
                }
                Effect::Changed(id) => {
                    if let Some(r) = st.remediation.records.get(&id)
                        && let Some(last) = r.history.last()
                    {
                        tracing::info!(remediation = %id, action = %r.action, agent = %r.agent, state = r.state.as_str(), "{}", last.1);
                        if let Some(inc) = st.correlator.latest_incident_of(r.alert_fp) {
                            let text = format!("remediation {id} ({}): {}", r.action, last.1);
                            st.correlator.note(inc, now, "remediation", text);
                            st.dirty_incidents.insert(inc);
                        }
                    }
                    st.dirty_remediations.insert(id);
                }
                Effect::Outcome { action, result } => {
                    *st.runs.entry((action, result)).or_insert(0) += 1;
                    st.runs_changed = true;
                }
                Effect::Remediated(id) => {
                    let fp = st.remediation.records.get(&id).map(|r| r.alert_fp);
                    if let Some(inc) = fp.and_then(|fp| st.correlator.latest_incident_of(fp)) {
                        st.correlator.remediated(inc, &id, now);
                        st.dirty_incidents.insert(inc);
                    }
                }
                Effect::Escalate(id) => st.to_escalate.push(id),
                Effect::Forget(id) => st.forgotten_remediations.push(id),
            }
        }
    }

    /// Pages the first step of the escalation policy of a failed remediation's alert (or its
    /// incident's root cause), the result attached.
    fn escalate_remediation(
        &self,
        st: &mut State,
        id: &str,
        now: i64,
        batch: &mut sled::Batch,
    ) -> Result<u64, String> {
        let routing = self.routing();
        let Some(r) = st.remediation.records.get(id).cloned() else {
            return Ok(0);
        };
        let inc = st
            .correlator
            .latest_incident_of(r.alert_fp)
            .and_then(|i| st.correlator.incidents.get(&i).cloned());
        let labels = inc
            .as_ref()
            .and_then(|i| i.root().map(|a| a.labels.clone()))
            .unwrap_or_else(|| r.labels.clone());
        let Some(policy) = policy_for(&routing.cfg.escalation_policies, &labels)
            .or_else(|| policy_for(&routing.cfg.escalation_policies, &r.labels))
        else {
            tracing::warn!(remediation = %id, "remediation failed; no escalation policy matches its alert");
            return Ok(0);
        };
        let Some(step) = policy.steps.first() else {
            return Ok(0);
        };
        let page = Page {
            incident: inc.as_ref().map_or(0, |i| i.id),
            receiver: step.receiver.clone(),
            step: 0,
            round: 0,
            priority: priority_of(&r.labels),
            policy: policy.name.clone(),
        };
        let detail = serde_json::to_value(&r).unwrap_or(Value::Null);
        let mut queued = 0;
        let integrations = routing
            .cfg
            .receivers
            .get(&step.receiver)
            .cloned()
            .unwrap_or_default();
        for (idx, integ) in integrations.iter().enumerate() {
            let alerts = match &inc {
                Some(i) => i.firing_alerts(),
                None => st.alerts.get(&r.alert_fp).cloned().into_iter().collect(),
            };
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
            let lane = format!("{}/{idx}/remediation/{id}", step.receiver);
            queued += self.enqueue(batch, page.priority, &step.receiver, idx, lane, &body, now)?;
        }
        if let Some(i) = inc {
            st.correlator.note(
                i.id,
                now,
                "paged",
                format!("paged {} after remediation {id} failed", step.receiver),
            );
            st.dirty_incidents.insert(i.id);
        }
        Ok(queued)
    }

    fn command_result(&self, agent: &str, r: CommandResult) {
        let now = now_ms();
        {
            let mut st = self.lock();
            let fx = st.remediation.on_result(agent, r, now);
            self.apply_remediation(&mut st, fx, now);
        }
        self.wake.notify_one();
    }

    /// Remediations, newest first, filtered by state, action, agent (instance) and alertname.
    pub fn remediations(&self, f: &RemediationFilter) -> Vec<Value> {
        let st = self.lock();
        let mut v: Vec<&Record> = st
            .remediation
            .records
            .values()
            .filter(|r| f.state.as_ref().is_none_or(|s| r.state.as_str() == s))
            .filter(|r| f.action.as_ref().is_none_or(|a| &r.action == a))
            .filter(|r| f.instance.as_ref().is_none_or(|a| &r.agent == a))
            .filter(|r| {
                f.alertname
                    .as_ref()
                    .is_none_or(|a| r.labels.get("alertname") == Some(a.as_str()))
            })
            .collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.created_ms));
        v.into_iter().map(remediation_json).collect()
    }

    /// One remediation.
    pub fn remediation(&self, id: &str) -> Result<Value, ApiError> {
        self.lock()
            .remediation
            .records
            .get(id)
            .map(remediation_json)
            .ok_or_else(|| ApiError::NotFound(format!("remediation {id} not found")))
    }

    /// Approves or rejects a remediation awaiting approval.
    pub async fn decide_remediation(
        &self,
        id: &str,
        approve: bool,
        by: &str,
    ) -> Result<Value, ApiError> {
        let now = now_ms();
        {
            let mut st = self.lock();
            let fx = st
                .remediation
                .decide(id, approve, by, now)
                .map_err(ApiError::Bad)?;
            self.apply_remediation(&mut st, fx, now);
        }
        self.step(now_ms()).await.map_err(ApiError::Internal)?;
        self.remediation(id)
    }

    /// The global switch and the runbooks.
    pub fn remediation_status(&self) -> Value {
        let st = self.lock();
        serde_json::json!({
            "enabled": st.remediation.enabled,
            "runbooks": st.remediation.cfg.runbooks.iter().map(|r| serde_json::json!({
                "name": r.name, "action": r.action, "mode": r.mode,
                "target": r.target, "verifyWindowSeconds": r.verify_window.as_secs(),
                "maxRunsPerAlert": r.max_runs_per_alert, "maxRunsPerHost": r.max_runs_per_host,
                "windowSeconds": r.window.as_secs(),
            })).collect::<Vec<_>>(),
        })
    }

    /// Turns all remediation on or off (persisted).
    pub async fn set_remediation(&self, enabled: bool) -> Result<Value, ApiError> {
        self.lock().remediation.enabled = enabled;
        self.tree
            .insert("remediation/enabled", if enabled { "1" } else { "0" })
            .map_err(json_err)?;
        self.db.flush_async().await.map_err(json_err)?;
        tracing::warn!(enabled, "remediation switched");
        self.wake.notify_one();
        Ok(self.remediation_status())
    }

    /// Makes everything written so far durable (on shutdown).
    pub async fn persist(&self) {
        if let Err(e) = self.db.flush_async().await {
            tracing::warn!(error = %e, "cannot flush the alerting state");
        }
    }

    // ----- API -----

    /// All silences, as the v2 API lists them.
    pub fn silences(&self) -> Vec<Value> {
        let now = now_ms();
        self.lock()
            .silences
            .values()
            .map(|s| s.to_json(now))
            .collect()
    }

    /// One silence.
    pub fn silence(&self, id: &str) -> Result<Value, ApiError> {
        let now = now_ms();
        self.lock()
            .silences
            .get(id)
            .map(|s| s.to_json(now))
            .ok_or_else(|| ApiError::NotFound(format!("silence {id} not found")))
    }

    fn store_silence(&self, st: &mut State, s: Silence) -> Result<(), ApiError> {
        self.tree
            .insert(
                format!("s/{}", s.id).as_bytes(),
                serde_json::to_vec(&s).map_err(json_err)?,
            )
            .map_err(json_err)?;
        st.silences.insert(s.id.clone(), s);
        st.compiled = Silences::new(st.silences.values().cloned());
        Ok(())
    }

    /// Creates or updates a silence; returns its id.
    pub async fn put_silence(&self, p: PostableSilence) -> Result<String, ApiError> {
        let now = now_ms();
        let mut s = p.into_silence(now).map_err(ApiError::Bad)?;
        let id = {
            let mut st = self.lock();
            if !s.id.is_empty() {
                match st.silences.get(&s.id) {
                    None => return Err(ApiError::NotFound(format!("silence {} not found", s.id))),
                    // An expired silence is not changed: a new one replaces it.
                    Some(old) if old.state(now) == "expired" => s.id = new_id(),
                    Some(_) => {}
                }
            } else {
                s.id = new_id();
            }
            let id = s.id.clone();
            self.store_silence(&mut st, s)?;
            id
        };
        self.db.flush_async().await.map_err(json_err)?;
        self.wake.notify_one();
        Ok(id)
    }

    /// Expires a silence now.
    pub async fn expire_silence(&self, id: &str) -> Result<(), ApiError> {
        let now = now_ms();
        {
            let mut st = self.lock();
            let mut s = st
                .silences
                .get(id)
                .cloned()
                .ok_or_else(|| ApiError::NotFound(format!("silence {id} not found")))?;
            if s.state(now) == "expired" {
                return Err(ApiError::Bad(format!("silence {id} already expired")));
            }
            if s.starts_at > now {
                s.starts_at = now;
            }
            s.ends_at = now;
            s.updated_at = now;
            self.store_silence(&mut st, s)?;
        }
        self.db.flush_async().await.map_err(json_err)?;
        self.wake.notify_one();
        Ok(())
    }

    /// Alerts as Alertmanager's `GET /api/v2/alerts` lists them.
    pub fn alerts_v2(&self) -> Vec<Value> {
        let now = now_ms();
        let st = self.lock();
        let firing: Vec<&Alert> = st.alerts.values().filter(|a| !a.resolved_at(now)).collect();
        let mut out: Vec<(u8, i64, Value)> = Vec::new();
        for a in &firing {
            let silenced = st.compiled.silenced_by(&a.labels, now);
            let inhibited: Vec<String> =
                inhibited_by(&self.routing().cfg.inhibit_rules, &a.labels, &firing)
                    .map(fingerprint_hex)
                    .into_iter()
                    .collect();
            let state = if silenced.is_empty() && inhibited.is_empty() {
                "active"
            } else {
                "suppressed"
            };
            let receivers: Vec<Value> = self
                .routing()
                .cfg
                .route
                .matching(&a.labels)
                .iter()
                .map(|r| serde_json::json!({"name": r.receiver}))
                .collect();
            out.push((
                a.priority(),
                a.starts_at,
                serde_json::json!({
                    "labels": labels_json(&a.labels),
                    "annotations": labels_json(&a.annotations),
                    "startsAt": rfc3339(a.starts_at),
                    "endsAt": rfc3339(a.ends_at),
                    "updatedAt": rfc3339(now),
                    "generatorURL": a.generator_url,
                    "fingerprint": fingerprint_hex(a.fingerprint()),
                    "receivers": receivers,
                    "status": {"state": state, "silencedBy": silenced, "inhibitedBy": inhibited},
                }),
            ));
        }
        out.sort_by_key(|(p, t, _)| (*p, *t));
        out.into_iter().map(|(_, _, v)| v).collect()
    }

    /// Incidents, newest first (`state`: `open`, `resolved` or anything else for all).
    pub fn incidents(&self, state: &str) -> Vec<Value> {
        let now = now_ms();
        let st = self.lock();
        st.correlator
            .incidents
            .values()
            .rev()
            .filter(|i| match state {
                "open" => i.open(),
                "resolved" => !i.open(),
                _ => true,
            })
            .map(|i| incident_view(&st, i, now))
            .collect()
    }

    /// One incident.
    pub fn incident(&self, id: u64) -> Result<Value, ApiError> {
        let now = now_ms();
        let st = self.lock();
        let i = st
            .correlator
            .incidents
            .get(&id)
            .ok_or_else(|| ApiError::NotFound(format!("incident {id} not found")))?;
        Ok(incident_view(&st, i, now))
    }

    /// Acknowledges an incident: its escalation stops.
    pub async fn acknowledge(&self, id: u64, by: &str) -> Result<(), ApiError> {
        let now = now_ms();
        {
            let mut st = self.lock();
            st.correlator
                .acknowledge(id, by, now)
                .map_err(ApiError::NotFound)?;
            if let Some(e) = st.escalations.get_mut(&id) {
                e.stop(&format!("acknowledged by {by}"));
            }
            st.dirty_incidents.insert(id);
        }
        self.wake.notify_one();
        // Persisted by the driver's next step; make it durable before answering.
        self.step(now).await.map_err(ApiError::Internal)?;
        Ok(())
    }

    /// Acknowledges the incident holding alert `fingerprint` (16 hex digits).
    pub async fn acknowledge_alert(&self, fingerprint: &str, by: &str) -> Result<u64, ApiError> {
        let fp = u64::from_str_radix(fingerprint, 16)
            .map_err(|_| ApiError::Bad(format!("invalid fingerprint {fingerprint:?}")))?;
        let id = self.lock().correlator.incident_of(fp).ok_or_else(|| {
            ApiError::NotFound(format!("no open incident holds alert {fingerprint}"))
        })?;
        self.acknowledge(id, by).await?;
        Ok(id)
    }

    /// Renders the service's metrics.
    pub fn render_metrics(&self, out: &mut String) {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, help, arr) in [
            (
                names::AGG_NOTIFICATIONS,
                "Notifications delivered, by integration.",
                &self.counters.sent,
            ),
            (
                names::AGG_NOTIFICATION_FAILURES,
                "Notification delivery attempts that failed, by integration.",
                &self.counters.failed,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (i, k) in KINDS.iter().enumerate() {
                let _ = writeln!(out, "{name}{{integration=\"{k}\"}} {}", l(&arr[i]));
            }
        }
        counter(
            out,
            names::AGG_NOTIFICATIONS_DROPPED,
            "Notifications given up on (queue full, refused, undeliverable for a day).",
            l(&self.counters.dropped),
        );
        counter(
            out,
            names::AGG_REMEDIATION_UNKNOWN_ACTION,
            "Remediations refused because their agent does not offer the runbook's action.",
            l(&self.counters.unknown_action),
        );
        counter(
            out,
            names::AGG_ALERTING_STATE_DAMAGED,
            "Damaged alerting state found at start-up (a store moved aside, unreadable records).",
            l(&self.counters.damaged),
        );
        gauge(
            out,
            names::AGG_NOTIFICATION_QUEUE,
            "Notifications waiting for delivery.",
            l(&self.counters.queued),
        );
        let now = now_ms();
        let st = self.lock();
        let firing: Vec<&Alert> = st.alerts.values().filter(|a| !a.resolved_at(now)).collect();
        let suppressed = firing
            .iter()
            .filter(|a| {
                !st.compiled.silenced_by(&a.labels, now).is_empty()
                    || inhibited_by(&self.routing().cfg.inhibit_rules, &a.labels, &firing).is_some()
            })
            .count();
        let n = names::AGG_ALERTS;
        let _ = writeln!(
            out,
            "# HELP {n} Alerts held by the alerting side, by state.\n# TYPE {n} gauge\n{n}{{state=\"active\"}} {}\n{n}{{state=\"suppressed\"}} {suppressed}",
            firing.len() - suppressed
        );
        let n = names::REMEDIATION_RUNS;
        let _ = writeln!(
            out,
            "# HELP {n} Remediation outcomes, by action and result.\n# TYPE {n} counter"
        );
        for ((a, r), v) in &st.runs {
            let _ = writeln!(out, "{n}{{action={a:?},result={r:?}}} {v}");
        }
        gauge(
            out,
            names::AGG_INCIDENTS_OPEN,
            "Open incidents.",
            st.correlator
                .incidents
                .values()
                .filter(|i| i.open())
                .count() as u64,
        );
    }
}

impl Notifier for AlertingService {
    fn send(&self, alerts: Vec<Alert>) {
        self.receive(alerts);
    }
}

/// Sleeps until `deadline` (ms; at most a minute, a minute without one) or until `wake`.
async fn sleep_until_or(deadline: Option<i64>, wake: &Notify) {
    let wait = deadline
        .map(|t| Duration::from_millis((t - now_ms()).clamp(1, 60_000) as u64))
        .unwrap_or(Duration::from_secs(60));
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = wake.notified() => {}
    }
}

/// What the service needs for remediation.
pub struct Remediation {
    /// The runbooks.
    pub runbooks: crate::remediate::Runbooks,
    /// Agents' command channels.
    pub hub: Arc<Hub>,
    /// Where outcome series go.
    pub storage: Option<Arc<dyn Appender>>,
}

/// Filters of `/api/v1/remediations`.
#[derive(Debug, Default)]
pub struct RemediationFilter {
    /// State.
    pub state: Option<String>,
    /// Action.
    pub action: Option<String>,
    /// Agent.
    pub instance: Option<String>,
    /// Alert name.
    pub alertname: Option<String>,
}

fn remediation_json(r: &Record) -> Value {
    serde_json::json!({
        "id": r.id,
        "runbook": r.runbook,
        "action": r.action,
        "params": r.params.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
        "instance": r.agent,
        "alert": {"fingerprint": fingerprint_hex(r.alert_fp), "labels": labels_json(&r.labels)},
        "mode": r.mode,
        "state": r.state.as_str(),
        "createdAt": rfc3339(r.created_ms),
        "deadline": rfc3339(r.deadline_ms),
        "decidedBy": r.decided_by,
        "result": r.result,
        "history": r.history.iter().map(|(t, s)| serde_json::json!({"at": rfc3339(*t), "text": s})).collect::<Vec<_>>(),
    })
}

/// An incident for the API, with its escalation.
fn incident_view(st: &State, i: &Incident, now: i64) -> Value {
    let mut v = incident_json(i, now);
    if let (Value::Object(m), Some(e)) = (&mut v, st.escalations.get(&i.id)) {
        m.insert(
            "escalation".into(),
            serde_json::to_value(e).unwrap_or(Value::Null),
        );
    }
    v
}

/// A random silence id, formatted like a UUID (version 4).
fn new_id() -> String {
    let mut a: u128 = rand::random();
    a = (a & !(0xf << 76)) | (0x4 << 76);
    a = (a & !(0x3 << 62)) | (0x2 << 62);
    let h = format!("{a:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
