//! The remediation driver: feeds the runbook engine ([`super::engine`]) with the alerts the
//! alerting side forwards, the agents' connections and results from the [`Hub`], API
//! decisions and the clock; carries out its effects — commands through the hub, records in
//! the alerting state's sled tree (`r/`, `remediation/enabled`, as earlier releases kept
//! them), outcome series in storage — and tells the alerting side what happened
//! ([`RemediationNews`]) so incidents show it and failures page. Both channels are wired in
//! `serve.rs`; neither side calls the other.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use telltale_common::model::{Labels, Sample, SeriesSamples, now_ms, until};
use telltale_common::names;
use telltale_common::wire::CommandResult;
use tokio::sync::{Notify, mpsc};

use super::Runbooks;
use super::engine::{Effect, Engine, Record};
use super::hub::{Hub, HubEvent};
use crate::alert::{Alert, RemediationNews, RequestError, fingerprint_hex, rfc3339};
use crate::metrics::storage::{AppendData, AppendRequest, Appender};
use crate::selfmetrics::counter;

struct Inner {
    engine: Engine,
    /// `telltale_remediation_runs_total{action,result}`.
    runs: BTreeMap<(String, String), u64>,
    runs_changed: bool,
    /// When each command in flight was handed to its agent's connection (command → result
    /// latency; a command resent after a reconnect counts from its last send).
    sent_at: std::collections::HashMap<String, std::time::Instant>,
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

/// The remediation driver.
pub struct Remediator {
    inner: Mutex<Inner>,
    store: crate::alert::store::StateStore,
    hub: Arc<Hub>,
    storage: Option<Arc<dyn Appender>>,
    news: mpsc::UnboundedSender<RemediationNews>,
    wake: Notify,
    /// Remediations refused because their agent does not offer the runbook's action.
    unknown_action: AtomicU64,
}

/// The channels a remediator is driven by.
pub struct Inputs {
    /// Alerts the alerting side saw (not silenced, or resolved).
    pub alerts: mpsc::UnboundedReceiver<Alert>,
    /// Connections and results from the hub.
    pub hub: mpsc::UnboundedReceiver<HubEvent>,
}

impl Remediator {
    /// Loads the remediation records from `store` (the alerting state's) and starts the driver.
    pub fn open(
        runbooks: Runbooks,
        store: crate::alert::store::StateStore,
        hub: Arc<Hub>,
        storage: Option<Arc<dyn Appender>>,
        news: mpsc::UnboundedSender<RemediationNews>,
        inputs: Inputs,
    ) -> Arc<Remediator> {
        let records: Vec<Record> = store
            .load("r/")
            .0
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        let enabled = match store.get("remediation/enabled") {
            Ok(Some(v)) => v.as_ref() == b"1",
            _ => runbooks.enabled,
        };
        let mut runs = BTreeMap::new();
        for r in records.iter().filter(|r| r.state.done()) {
            *runs
                .entry((r.action.clone(), r.state.as_str().to_string()))
                .or_insert(0) += 1;
        }
        let me = Arc::new(Remediator {
            inner: Mutex::new(Inner {
                engine: Engine::new(runbooks, enabled, records),
                runs,
                runs_changed: false,
                sent_at: Default::default(),
            }),
            store,
            hub,
            storage,
            news,
            wake: Notify::new(),
            unknown_action: AtomicU64::new(0),
        });
        tokio::spawn(me.clone().drive(inputs));
        me
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn drive(self: Arc<Self>, mut inputs: Inputs) {
        let (mut alerts_open, mut hub_open) = (true, true);
        loop {
            let now = now_ms();
            let next = {
                let mut inner = self.lock();
                let hub = self.hub.clone();
                let fx = inner.engine.tick(now, &|a| hub.connected(a));
                self.apply(&mut inner, fx, now);
                inner.engine.next_deadline()
            };
            self.store_runs(now).await;
            tokio::select! {
                _ = tokio::time::sleep(until(next)) => {}
                _ = self.wake.notified() => {}
                a = inputs.alerts.recv(), if alerts_open => match a {
                    Some(a) => {
                        let now = now_ms();
                        let mut inner = self.lock();
                        let fx = inner.engine.on_alert(&a, now, &mut crate::alert::uuid_v4);
                        self.apply(&mut inner, fx, now);
                    }
                    None => alerts_open = false,
                },
                e = inputs.hub.recv(), if hub_open => match e {
                    Some(HubEvent::Connected(agent)) => self.lock().engine.reconnected(&agent),
                    Some(HubEvent::Result(agent, r)) => self.result(&agent, r),
                    None => hub_open = false,
                },
            }
        }
    }

    fn result(&self, agent: &str, r: CommandResult) {
        let now = now_ms();
        let mut inner = self.lock();
        if let Some(t) = inner.sent_at.remove(&r.id) {
            crate::selfmetrics::LATENCY.remediation.observe(t.elapsed());
        }
        let fx = inner.engine.on_result(agent, r, now);
        self.apply(&mut inner, fx, now);
    }

    /// Carries out the engine's effects. (It does not wake the driver: the driver's loop
    /// reads the next deadline after every input, and a wake here would spin it.)
    fn apply(&self, inner: &mut Inner, fx: Vec<Effect>, now: i64) {
        for f in fx {
            match f {
                Effect::Send { agent, cmd } => {
                    let id = cmd.id.clone();
                    if self.hub.offers(&agent, &cmd.action) == Some(false) {
                        // The agent said which actions it has: this one would only be refused
                        // there. Refused here, counted, and the runbook's author told.
                        self.unknown_action.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%agent, action = %cmd.action, remediation = %id,
                            "a runbook names an action this agent does not offer");
                        let refusal = CommandResult {
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
                        let more = inner.engine.on_result(&agent, refusal, now);
                        self.apply(inner, more, now);
                        continue;
                    }
                    let sent = std::time::Instant::now();
                    if self.hub.send(&agent, cmd) {
                        // Bounded: commands whose result never comes (agent gone) are
                        // forgotten in bulk rather than kept for ever.
                        if inner.sent_at.len() >= 10_000 {
                            inner.sent_at.clear();
                        }
                        inner.sent_at.insert(id.clone(), sent);
                    } else {
                        // Not connected after all: queued again, sent on the next connect.
                        inner.engine.reconnected(&agent);
                        tracing::info!(%agent, %id, "remediation waits for its agent");
                    }
                }
                Effect::Changed(id) => {
                    let Some(r) = inner.engine.records.get(&id) else {
                        continue;
                    };
                    if let Some(last) = r.history.last() {
                        tracing::info!(remediation = %id, action = %r.action, agent = %r.agent, state = r.state.as_str(), "{}", last.1);
                        let text = format!("remediation {id} ({}): {}", r.action, last.1);
                        self.tell(RemediationNews::Note {
                            alert_fp: r.alert_fp,
                            text,
                        });
                    }
                    match serde_json::to_vec(r) {
                        Ok(v) => {
                            if let Err(e) = self.store.insert(format!("r/{id}").as_bytes(), v) {
                                tracing::error!(remediation = %id, error = %e, "cannot store a remediation");
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "cannot encode a remediation"),
                    }
                }
                Effect::Outcome { action, result } => {
                    *inner.runs.entry((action, result)).or_insert(0) += 1;
                    inner.runs_changed = true;
                }
                Effect::Remediated(id) => {
                    if let Some(r) = inner.engine.records.get(&id) {
                        self.tell(RemediationNews::Remediated {
                            alert_fp: r.alert_fp,
                            id,
                        });
                    }
                }
                Effect::Escalate(id) => {
                    if let Some(r) = inner.engine.records.get(&id) {
                        self.tell(RemediationNews::Failed {
                            alert_fp: r.alert_fp,
                            labels: r.labels.clone(),
                            detail: serde_json::to_value(r).unwrap_or(Value::Null),
                            id,
                        });
                    }
                }
                Effect::Forget(id) => {
                    if let Err(e) = self.store.remove(format!("r/{id}").as_bytes()) {
                        tracing::warn!(remediation = %id, error = %e, "cannot delete a remediation");
                    }
                }
            }
        }
    }

    fn tell(&self, n: RemediationNews) {
        if self.news.send(n).is_err() {
            tracing::warn!("remediation news dropped: the alerting side has stopped");
        }
    }

    /// Outcomes as series, so runbooks can be tuned with queries.
    async fn store_runs(&self, now: i64) {
        let runs = {
            let mut inner = self.lock();
            if !std::mem::take(&mut inner.runs_changed) {
                return;
            }
            inner.runs.clone()
        };
        let Some(storage) = &self.storage else { return };
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

    /// Replaces the runbooks (a reload).
    pub fn reload(&self, runbooks: Runbooks) {
        if let Some(offered) = self.hub.offered() {
            for r in &runbooks.runbooks {
                if !offered.contains(&r.action) {
                    tracing::warn!(runbook = %r.name, action = %r.action,
                        "no connected agent offers this runbook's action: its remediations will be refused");
                }
            }
        }
        self.lock().engine.cfg = runbooks;
        self.wake.notify_one();
    }

    // ----- API -----

    /// Remediations, newest first, filtered by state, action, agent (instance) and alertname.
    pub fn remediations(&self, f: &RemediationFilter) -> Vec<Value> {
        let inner = self.lock();
        let mut v: Vec<&Record> = inner
            .engine
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
    pub fn remediation(&self, id: &str) -> Result<Value, RequestError> {
        self.lock()
            .engine
            .records
            .get(id)
            .map(remediation_json)
            .ok_or_else(|| RequestError::NotFound(format!("remediation {id} not found")))
    }

    /// Approves or rejects a remediation awaiting approval (durable before this returns).
    pub async fn decide(&self, id: &str, approve: bool, by: &str) -> Result<Value, RequestError> {
        let now = now_ms();
        {
            let mut inner = self.lock();
            let fx = inner.engine.decide(id, approve, by, now)?;
            self.apply(&mut inner, fx, now);
        }
        // Its deadline may have changed (an approval queues the command).
        self.wake.notify_one();
        self.store
            .flush()
            .await
            .map_err(|e| RequestError::Store(e.to_string()))?;
        self.remediation(id)
    }

    /// The global switch and the runbooks.
    pub fn status(&self) -> Value {
        let inner = self.lock();
        serde_json::json!({
            "enabled": inner.engine.enabled,
            "runbooks": inner.engine.cfg.runbooks.iter().map(|r| serde_json::json!({
                "name": r.name, "action": r.action, "mode": r.mode,
                "target": r.target, "verifyWindowSeconds": r.verify_window.as_secs(),
                "maxRunsPerAlert": r.max_runs_per_alert, "maxRunsPerHost": r.max_runs_per_host,
                "windowSeconds": r.window.as_secs(),
            })).collect::<Vec<_>>(),
        })
    }

    /// Turns all remediation on or off (persisted).
    pub async fn set_enabled(&self, enabled: bool) -> Result<Value, RequestError> {
        self.lock().engine.enabled = enabled;
        let store = |e: sled::Error| RequestError::Store(e.to_string());
        self.store
            .insert("remediation/enabled", if enabled { "1" } else { "0" })
            .map_err(store)?;
        self.store.flush().await.map_err(store)?;
        tracing::warn!(enabled, "remediation switched");
        self.wake.notify_one();
        Ok(self.status())
    }

    /// Renders the remediation metrics.
    pub fn render_metrics(&self, out: &mut String) {
        counter(
            out,
            names::AGG_REMEDIATION_UNKNOWN_ACTION,
            "Remediations refused because their agent does not offer the runbook's action.",
            self.unknown_action.load(Ordering::Relaxed),
        );
        let n = names::REMEDIATION_RUNS;
        let _ = writeln!(
            out,
            "# HELP {n} Remediation outcomes, by action and result.\n# TYPE {n} counter"
        );
        for ((a, r), v) in &self.lock().runs {
            let _ = writeln!(out, "{n}{{action={a:?},result={r:?}}} {v}");
        }
    }
}

fn remediation_json(r: &Record) -> Value {
    serde_json::json!({
        "id": r.id,
        "runbook": r.runbook,
        "action": r.action,
        "params": r.params.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
        "instance": r.agent,
        "alert": {"fingerprint": fingerprint_hex(r.alert_fp), "labels": crate::alert::labels_json(&r.labels)},
        "mode": r.mode,
        "state": r.state.as_str(),
        "createdAt": rfc3339(r.created_ms),
        "deadline": rfc3339(r.deadline_ms),
        "decidedBy": r.decided_by,
        "result": r.result,
        "history": r.history.iter().map(|(t, s)| serde_json::json!({"at": rfc3339(*t), "text": s})).collect::<Vec<_>>(),
    })
}
