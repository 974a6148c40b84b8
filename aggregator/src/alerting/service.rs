//! The alerting driver: feeds the pure core ([`super::core`]) with alerts, news from
//! remediation, API requests and the clock, writes what it decides to sled, and delivers
//! through a durable outbox.
//!
//! State lives in one sled tree under `DATA_DIR/alerting`, keyed by prefix:
//! `a/` alerts, `s/` silences, `n/` the notification log, `i/` incidents, `e/` escalations,
//! `o/` the outbox (`o/` + priority byte + sequence: iteration order is urgency, then age);
//! remediation keeps `r/` and `remediation/enabled` in the same tree (see
//! [`crate::remediate::driver`]). A notification is written to the outbox together with its
//! notification-log entry in one atomic batch, flushed to disk, and only then sent; it leaves
//! the outbox once its receiver accepted it. So a crash or restart neither loses a pending
//! notification (it is sent after start-up) nor repeats one that was decided (the log says
//! it was). A delivery is retried with exponential backoff (1 s doubling to 5 min) for up to
//! a day; the outbox holds at most `MAX_OUTBOX` entries — beyond that new notifications are
//! dropped and counted.
//!
//! Remediation is not called from here: alerts it should see leave through the channel given
//! to [`AlertingService::open`], and its news arrive through another (both wired in
//! `serve.rs`).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use telltale_common::model::{now_ms, until};
use telltale_common::names;
use tokio::sync::{Notify, Semaphore, mpsc};

use super::apiquery::{AlertQuery, SilenceQuery};
use super::config::{Integration, RoutingConfig};
use super::core::{Core, Effect, Routing, Stored};
use super::deliver::{Deliverer, SendError};
use super::silence::{PostableSilence, Silence};
use crate::alert::{Alert, Notifier, RemediationNews, RequestError};
use crate::selfmetrics::{LATENCY, counter, gauge};

/// Most notifications waiting for delivery.
pub const MAX_OUTBOX: usize = 10_000;
/// A delivery failing for longer than this is given up.
const MAX_RETRY_MS: i64 = 24 * 3600 * 1000;
/// Deliveries in flight at once.
const PARALLEL_DELIVERIES: usize = 16;

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
    /// See [`super::core::Outgoing::fired_ms`] (absent in records from before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fired: Option<i64>,
}

fn outbox_key(priority: u8, id: u64) -> Vec<u8> {
    let mut k = b"o/".to_vec();
    k.push(priority);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

#[derive(Default)]
struct Counters {
    sent: [AtomicU64; KINDS.len()],
    failed: [AtomicU64; KINDS.len()],
    dropped: AtomicU64,
    queued: AtomicU64,
    /// Damaged state found at start-up: a store moved aside, records unreadable.
    damaged: AtomicU64,
}

fn kind_index(i: &Integration) -> usize {
    match i {
        Integration::Webhook { .. } => 0,
        Integration::Alertmanager { .. } => 1,
        Integration::Nats { .. } => 2,
        Integration::Log { .. } => 3,
        Integration::ClickHouse { .. } => 4,
    }
}
const KINDS: [&str; 5] = ["webhook", "alertmanager", "nats", "log", "clickhouse"];

pub use crate::alert::store::StateStore;
use crate::alert::store::{OpenError, Record};

/// Why the alerting state could not be opened, read or written. The HTTP layer answers
/// requests that hit it with 500 ([`RequestError::Store`]); the driver retries its step.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The store could not be opened (held, no permission, a full disk).
    #[error(transparent)]
    Open(#[from] telltale_common::store::StoreError),
    /// sled failed to read or write.
    #[error("alerting state: {0}")]
    Sled(#[from] sled::Error),
    /// A record could not be encoded (a bug, not a disk problem).
    #[error("alerting state: cannot encode a record: {0}")]
    Encode(#[from] serde_json::Error),
    /// The HTTP client for notifications could not be built.
    #[error("cannot build the HTTP client for notifications: {0}")]
    Client(#[from] reqwest::Error),
}

impl From<OpenError> for StateError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Store(e) => StateError::Open(e),
            OpenError::Sled(e) => StateError::Sled(e),
        }
    }
}

impl From<StateError> for RequestError {
    fn from(e: StateError) -> Self {
        RequestError::Store(e.to_string())
    }
}

/// The alerting service.
pub struct AlertingService {
    routing: std::sync::RwLock<Arc<Routing>>,
    store: StateStore,
    core: Mutex<Core>,
    wake: Notify,
    deliver_wake: Notify,
    deliverer: Deliverer,
    counters: Counters,
    /// Alerts for the remediation driver.
    to_remediation: mpsc::UnboundedSender<Alert>,
    /// One pass at a time (the driver and requests that persist at once).
    step_lock: tokio::sync::Mutex<()>,
}

impl AlertingService {
    /// Loads the state from `store` and starts the driver (which also takes `news` from
    /// remediation) and the delivery loop. Alerts remediation should see go to
    /// `to_remediation`.
    pub fn open(
        cfg: RoutingConfig,
        store: StateStore,
        external_url: &str,
        to_remediation: mpsc::UnboundedSender<Alert>,
        news: mpsc::UnboundedReceiver<RemediationNews>,
    ) -> Result<Arc<AlertingService>, StateError> {
        for w in &cfg.warnings {
            tracing::warn!("routing: {w}");
        }
        let counters = Counters::default();
        counters
            .damaged
            .store(u64::from(store.moved_aside), Ordering::Relaxed);
        let mut stored = Stored::default();
        let load = |prefix: &str| {
            let (records, bad) = store.load(prefix);
            counters.damaged.fetch_add(bad, Ordering::Relaxed);
            records
        };
        for (k, v) in load("s/") {
            match serde_json::from_slice::<Silence>(&v) {
                Ok(s) => stored.silences.push(s),
                Err(e) => {
                    tracing::warn!(key = %String::from_utf8_lossy(&k), error = %e, "skipping unreadable silence")
                }
            }
        }
        for (k, v) in load("n/") {
            if let Ok(e) = serde_json::from_slice(&v) {
                stored
                    .nflog
                    .insert(String::from_utf8_lossy(&k[2..]).into_owned(), e);
            }
        }
        stored.incidents = load("i/").into_iter().filter_map(json).collect();
        stored.escalations = load("e/").into_iter().filter_map(json).collect();
        // The alerts known before a restart: the ones no rule fires again run out (`ends_at`)
        // and are announced as resolved, like Alertmanager does for a restarted Prometheus.
        stored.alerts = load("a/").into_iter().filter_map(json).collect();
        let queued = load("o/").len() as u64;
        let routing = Routing::new(cfg);
        let core = Core::new(&routing, stored, external_url, now_ms());
        let svc = Arc::new(AlertingService {
            store,
            core: Mutex::new(core),
            routing: std::sync::RwLock::new(Arc::new(routing)),
            wake: Notify::new(),
            deliver_wake: Notify::new(),
            deliverer: Deliverer::new()?,
            counters,
            to_remediation,
            step_lock: tokio::sync::Mutex::new(()),
        });
        svc.counters.queued.store(queued, Ordering::Relaxed);
        if queued > 0 {
            tracing::info!(
                pending = queued,
                "notifications pending from before the restart"
            );
        }
        tokio::spawn(svc.clone().drive(news));
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

    /// Replaces routing (a reload): alerts are grouped again under the new routes; the
    /// notification log keeps groups that already notified from notifying again.
    pub fn reload(&self, cfg: RoutingConfig) {
        for w in &cfg.warnings {
            tracing::warn!("routing: {w}");
        }
        let routing = Arc::new(Routing::new(cfg));
        {
            let mut core = self.lock();
            core.regroup(&routing, now_ms());
            *self.routing.write().unwrap_or_else(|e| e.into_inner()) = routing;
        }
        self.wake.notify_one();
    }

    /// Adds the topology learnt from traces (calls between services, hosts of services) to
    /// the configured one for incident correlation (see `Correlator::learn`).
    pub fn learn_topology(&self, calls: &[(String, String)], hosts: &[(String, String)]) {
        self.lock().learn_topology(calls, hosts);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes alerts (from the rules or `POST /api/v2/alerts`).
    pub fn receive(&self, alerts: Vec<Alert>) {
        let started = std::time::Instant::now();
        let fx = self.lock().receive(&self.routing(), alerts, now_ms());
        LATENCY.correlation.observe(started.elapsed());
        if let Err(e) = self.apply(fx) {
            tracing::warn!(error = %e, "cannot store alerts");
        }
        self.wake.notify_one();
    }

    /// The routing file's receivers, by name.
    pub fn receiver_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.routing().cfg.receivers.keys().cloned().collect();
        v.sort();
        v
    }

    /// Whether the routing file has a receiver of this name.
    pub fn knows_receiver(&self, name: &str) -> bool {
        self.routing().cfg.receivers.contains_key(name)
    }

    /// Queues `body` (a report) for every integration of `receiver` through the durable
    /// outbox, at the lowest priority, in a lane of its own. Alertmanager integrations take
    /// alerts only and are skipped. Returns how many were queued.
    pub async fn deliver_report(&self, receiver: &str, body: Value) -> Result<usize, RequestError> {
        let routing = self.routing();
        let integrations = routing.cfg.receivers.get(receiver).ok_or_else(|| {
            RequestError::NotFound(format!("no receiver {receiver:?} in the routing file"))
        })?;
        let fx: Vec<Effect> = integrations
            .iter()
            .enumerate()
            .filter(|(_, i)| {
                !matches!(
                    i,
                    Integration::Alertmanager { .. } | Integration::ClickHouse { .. }
                )
            })
            .map(|(i, _)| {
                Effect::Notify(super::core::Outgoing {
                    priority: 3,
                    receiver: receiver.to_string(),
                    integration: i,
                    lane: format!("{receiver}/{i}/reports"),
                    body: body.clone(),
                    fired_ms: None,
                })
            })
            .collect();
        let n = fx.len();
        self.apply_durably(fx).await?;
        Ok(n)
    }

    /// Applies effects: state writes and outbox entries in one atomic batch, alerts to
    /// remediation. Returns how many notifications were queued (not yet flushed).
    fn apply(&self, fx: Vec<Effect>) -> Result<u64, StateError> {
        let mut batch = sled::Batch::default();
        let mut queued = 0u64;
        let now = now_ms();
        for f in fx {
            match f {
                Effect::Put(k, v) => batch.insert(k, v),
                Effect::Delete(k) => batch.remove(k),
                Effect::Remediate(a) => {
                    // The remediation driver stops only with the process.
                    let _ = self.to_remediation.send(a);
                }
                Effect::Notify(o) => {
                    let pending = self.counters.queued.load(Ordering::Relaxed) + queued;
                    if pending as usize >= MAX_OUTBOX {
                        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            receiver = %o.receiver,
                            "notification dropped: {MAX_OUTBOX} notifications already wait for delivery"
                        );
                        continue;
                    }
                    let id = self.store.generate_id()?;
                    let d = Delivery {
                        id,
                        priority: o.priority,
                        receiver: o.receiver,
                        integration: o.integration,
                        lane: o.lane,
                        body: o.body.to_string(),
                        attempts: 0,
                        next_attempt: now,
                        created: now,
                        fired: o.fired_ms,
                    };
                    let v = serde_json::to_vec(&d)?;
                    batch.insert(outbox_key(d.priority, id), v);
                    queued += 1;
                }
            }
        }
        self.store.apply_batch(batch)?;
        Ok(queued)
    }

    /// Applies effects and makes them durable; new notifications are then delivered.
    async fn apply_durably(&self, fx: Vec<Effect>) -> Result<(), StateError> {
        let queued = self.apply(fx)?;
        self.store.flush().await?;
        if queued > 0 {
            self.counters.queued.fetch_add(queued, Ordering::Relaxed);
            self.deliver_wake.notify_one();
        }
        Ok(())
    }

    async fn drive(self: Arc<Self>, mut news: mpsc::UnboundedReceiver<RemediationNews>) {
        let mut news_open = true;
        loop {
            let now = now_ms();
            let next = match self.step(now).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "alerting step failed; retrying in 1s");
                    Some(now + 1000)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(until(next)) => {}
                _ = self.wake.notified() => {}
                n = news.recv(), if news_open => match n {
                    Some(n) => {
                        let fx = self.lock().remediation(&self.routing(), n, now_ms());
                        if let Err(e) = self.apply_durably(fx).await {
                            tracing::error!(error = %e, "cannot store remediation news");
                        }
                    }
                    None => news_open = false,
                },
            }
        }
    }

    /// One pass of the core, made durable. Returns the next deadline.
    async fn step(&self, now: i64) -> Result<Option<i64>, StateError> {
        let _one = self.step_lock.lock().await;
        let (fx, next) = self.lock().step(&self.routing(), now);
        if !fx.is_empty() {
            self.apply_durably(fx).await?;
        }
        Ok(next)
    }

    async fn deliver_loop(self: Arc<Self>) {
        let sem = Arc::new(Semaphore::new(PARALLEL_DELIVERIES));
        let in_flight: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(HashSet::new()));
        loop {
            let now = now_ms();
            let mut next: Option<i64> = None;
            let mut busy_lanes: HashSet<String> =
                in_flight.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let items = self.store.scan_prefix("o/").into_iter().flatten();
            for item in items {
                let Ok((k, v)) = item else { continue };
                let d: Delivery = match serde_json::from_slice(&v) {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::error!(error = %e, "dropping an unreadable queued notification");
                        let _ = self.store.remove(&k);
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
            let _ = self.store.remove(&key);
            self.gone(true);
            return;
        };
        let k = kind_index(integ);
        let id = format!("telltale-{}", d.id);
        let started = std::time::Instant::now();
        let sent = self.deliverer.send(integ, d.body.as_bytes(), &id).await;
        LATENCY.delivery.observe(started.elapsed());
        match sent {
            Ok(()) => {
                if let Some(f) = d.fired {
                    LATENCY
                        .alert_to_notification
                        .observe_secs((now_ms() - f) as f64 / 1000.0);
                }
                self.counters.sent[k].fetch_add(1, Ordering::Relaxed);
                let _ = self.store.remove(&key);
                // Made durable at once: a crash right after a delivery must not resend it.
                if let Err(e) = self.store.flush().await {
                    tracing::warn!(error = %e, "cannot flush the outbox");
                }
                self.gone(false);
                tracing::debug!(receiver = %d.receiver, integration = KINDS[k], "notification delivered");
            }
            Err(SendError::Permanent(e)) => {
                self.counters.failed[k].fetch_add(1, Ordering::Relaxed);
                tracing::error!(receiver = %d.receiver, integration = KINDS[k], error = %e, "notification refused; dropped");
                let _ = self.store.remove(&key);
                self.gone(true);
            }
            Err(SendError::Retry(e)) => {
                self.counters.failed[k].fetch_add(1, Ordering::Relaxed);
                let now = now_ms();
                if now - d.created > MAX_RETRY_MS {
                    tracing::error!(receiver = %d.receiver, integration = KINDS[k], error = %e, "notification undeliverable for a day; dropped");
                    let _ = self.store.remove(&key);
                    self.gone(true);
                    return;
                }
                d.attempts += 1;
                let backoff = 1000i64 << d.attempts.saturating_sub(1).min(9);
                d.next_attempt = now + backoff.min(300_000);
                tracing::warn!(receiver = %d.receiver, integration = KINDS[k], attempt = d.attempts, retry_in_ms = d.next_attempt - now, error = %e, "notification delivery failed; will retry");
                match serde_json::to_vec(&d) {
                    Ok(v) => {
                        let _ = self.store.insert(&key, v);
                    }
                    Err(e) => tracing::error!(error = %e, "cannot re-queue a notification"),
                }
            }
        }
    }

    /// Makes everything written so far durable (on shutdown).
    pub async fn persist(&self) {
        if let Err(e) = self.store.flush().await {
            tracing::warn!(error = %e, "cannot flush the alerting state");
        }
    }

    // ----- API -----

    /// The silences `q` lists, as the v2 API lists them.
    pub fn silences(&self, q: &SilenceQuery) -> Vec<Value> {
        self.lock().silences(now_ms(), q)
    }

    /// One silence.
    pub fn silence(&self, id: &str) -> Result<Value, RequestError> {
        self.lock().silence(id, now_ms())
    }

    /// Creates or updates a silence; returns its id.
    pub async fn put_silence(&self, p: PostableSilence) -> Result<String, RequestError> {
        let (id, fx) = self
            .lock()
            .put_silence(p, now_ms(), crate::alert::uuid_v4)?;
        self.apply_durably(fx).await?;
        self.wake.notify_one();
        Ok(id)
    }

    /// Expires a silence now.
    pub async fn expire_silence(&self, id: &str) -> Result<(), RequestError> {
        let fx = self.lock().expire_silence(id, now_ms())?;
        self.apply_durably(fx).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// The alerts `q` lists, as Alertmanager's `GET /api/v2/alerts` lists them.
    pub fn alerts_v2(&self, q: &AlertQuery) -> Vec<Value> {
        let routing = self.routing();
        self.lock().v2_view(&routing, now_ms()).alerts(q)
    }

    /// The receivers' names in the routing file's order (`GET /api/v2/receivers`).
    pub fn receivers(&self) -> Vec<String> {
        self.routing().cfg.receiver_names.clone()
    }

    /// The aggregation groups `q` lists, as Alertmanager's `GET /api/v2/alerts/groups`.
    pub fn alert_groups(&self, q: &AlertQuery) -> Vec<Value> {
        let routing = self.routing();
        self.lock().v2_view(&routing, now_ms()).groups(q)
    }

    /// Incidents, newest first (`state`: `open`, `resolved` or anything else for all).
    pub fn incidents(&self, state: &str) -> Vec<Value> {
        self.lock().incidents(state, now_ms())
    }

    /// One incident.
    pub fn incident(&self, id: u64) -> Result<Value, RequestError> {
        self.lock().incident(id, now_ms())
    }

    /// Acknowledges an incident: its escalation stops (durable before this returns).
    pub async fn acknowledge(&self, id: u64, by: &str) -> Result<(), RequestError> {
        let fx = self.lock().acknowledge(id, by, now_ms())?;
        self.apply_durably(fx).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Acknowledges the incident holding alert `fingerprint` (16 hex digits).
    pub async fn acknowledge_alert(
        &self,
        fingerprint: &str,
        by: &str,
    ) -> Result<u64, RequestError> {
        let id = self.lock().incident_of_alert(fingerprint)?;
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
        let core = self.lock();
        let n = names::AGG_NOTIFICATIONS_UNDELIVERABLE;
        let _ = writeln!(
            out,
            "# HELP {n} Notifications for integrations Telltale does not deliver (slack_configs, email_configs...), by receiver and integration.\n# TYPE {n} counter"
        );
        for ((receiver, kind), c) in core.undeliverable() {
            let r = receiver.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(out, "{n}{{receiver=\"{r}\",integration=\"{kind}\"}} {c}");
        }
        let (active, suppressed) = core.alert_counts(&self.routing(), now_ms());
        let n = names::AGG_ALERTS;
        let _ = writeln!(
            out,
            "# HELP {n} Alerts held by the alerting side, by state.\n# TYPE {n} gauge\n{n}{{state=\"active\"}} {active}\n{n}{{state=\"suppressed\"}} {suppressed}",
        );
        gauge(
            out,
            names::AGG_INCIDENTS_OPEN,
            "Open incidents.",
            core.open_incidents() as u64,
        );
    }
}

impl Notifier for AlertingService {
    fn send(&self, alerts: Vec<Alert>) {
        self.receive(alerts);
    }
}

/// A stored record's JSON value; an unreadable one is skipped.
fn json<T: serde::de::DeserializeOwned>((_, v): Record) -> Option<T> {
    serde_json::from_slice(&v).ok()
}

/// Sleeps until `deadline` (ms; at most a minute, a minute without one) or until `wake`.
async fn sleep_until_or(deadline: Option<i64>, wake: &Notify) {
    tokio::select! {
        _ = tokio::time::sleep(until(deadline)) => {}
        _ = wake.notified() => {}
    }
}
