//! Runbook logic without I/O: alerts, approvals, results and the clock in; effects out.
//!
//! A firing alert matching a runbook (once per alert and runbook while it fires) becomes a
//! remediation: refused by a guardrail (switched off, too many runs for the alert or the host
//! in the window, no target), awaiting approval, or queued. A queued command is sent when its
//! agent is connected (and again after a reconnect: the agent runs an id once) until its
//! deadline, then it expires. A successful run starts the verify window: the alert resolving
//! inside it marks the remediation (and its incident) remediated; otherwise — or when the run
//! failed, was refused or expired — the remediation fails and the alert escalates with the
//! result attached.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use telltale_common::model::Labels;
use telltale_common::wire::{Command, CommandResult};

use super::{Mode, Runbooks};
use crate::alert::template::Data;
use crate::alert::{Alert, RequestError};

/// Where a remediation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waits for `POST /api/v1/remediations/ID/approve`.
    AwaitingApproval,
    /// Waits for its agent.
    Queued,
    /// Sent; waits for the result.
    Sent,
    /// Ran successfully; waits for the alert to resolve.
    Verifying,
    /// The alert resolved after the run.
    Remediated,
    /// The run failed, was refused by the agent, or the alert kept firing.
    Failed,
    /// Not sent: a guardrail refused it.
    Refused,
    /// Its deadline passed before a result came.
    Expired,
    /// A dry run came back.
    DryRun,
    /// Rejected through the API.
    Rejected,
}

impl State {
    /// Whether nothing more happens to it.
    pub fn done(self) -> bool {
        !matches!(
            self,
            State::AwaitingApproval | State::Queued | State::Sent | State::Verifying
        )
    }

    /// The name used in the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            State::AwaitingApproval => "awaiting_approval",
            State::Queued => "queued",
            State::Sent => "sent",
            State::Verifying => "verifying",
            State::Remediated => "remediated",
            State::Failed => "failed",
            State::Refused => "refused",
            State::Expired => "expired",
            State::DryRun => "dry_run",
            State::Rejected => "rejected",
        }
    }
}

/// One remediation, its audit trail included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Id (also the command id).
    pub id: String,
    /// Runbook.
    pub runbook: String,
    /// Action.
    pub action: String,
    /// Parameters after templating.
    pub params: Vec<(String, String)>,
    /// Agent it runs on.
    pub agent: String,
    /// The alert.
    pub alert_fp: u64,
    /// The alert's labels.
    pub labels: Labels,
    /// Mode.
    pub mode: Mode,
    /// State.
    pub state: State,
    /// Created (ms).
    pub created_ms: i64,
    /// Deadline (ms).
    pub deadline_ms: i64,
    /// End of the verify window (ms), once verifying.
    pub verify_until: i64,
    /// Verify window (ms).
    pub verify_ms: i64,
    /// The agent's result.
    pub result: Option<CommandResult>,
    /// Who approved or rejected.
    pub decided_by: Option<String>,
    /// Audit trail: (ms, what happened).
    pub history: Vec<(i64, String)>,
}

impl Record {
    fn note(&mut self, now: i64, s: String) {
        self.history.push((now, s));
    }

    fn command(&self) -> Command {
        Command {
            id: self.id.clone(),
            action: self.action.clone(),
            params: self.params.clone(),
            deadline_ms: self.deadline_ms,
            dry_run: self.mode == Mode::DryRun,
        }
    }
}

/// What the service must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a command to an agent.
    Send {
        /// Agent.
        agent: String,
        /// Command.
        cmd: Command,
    },
    /// The remediation failed: escalate its alert, result attached.
    Escalate(String),
    /// The alert resolved after the run.
    Remediated(String),
    /// Count an outcome for `telltale_remediation_runs_total{action,result}`.
    Outcome {
        /// Action.
        action: String,
        /// Result (a final state).
        result: String,
    },
    /// Persist this record.
    Changed(String),
    /// Delete this record (finished long ago).
    Forget(String),
}

/// Finished remediations are kept this long.
const KEEP_MS: i64 = 30 * 24 * 3600 * 1000;

/// The runbooks and their remediations.
#[derive(Debug, Default)]
pub struct Engine {
    /// Runbooks.
    pub cfg: Runbooks,
    /// The global switch.
    pub enabled: bool,
    /// Remediations by id.
    pub records: BTreeMap<String, Record>,
    /// (runbook, alert) → the remediation started for it while it fires.
    active: HashMap<(String, u64), String>,
    /// Alerts seen resolved (a result arriving after the resolution verifies at once).
    resolved: HashSet<u64>,
}

fn finish(r: &mut Record, state: State, now: i64, why: String, out: &mut Vec<Effect>) {
    r.state = state;
    r.note(now, why);
    out.push(Effect::Outcome {
        action: r.action.clone(),
        result: state.as_str().into(),
    });
    out.push(Effect::Changed(r.id.clone()));
}

impl Engine {
    /// An engine with its runbooks and stored remediations.
    pub fn new(cfg: Runbooks, enabled: bool, stored: Vec<Record>) -> Engine {
        let mut e = Engine {
            cfg,
            enabled,
            ..Default::default()
        };
        for r in stored {
            if !r.state.done() {
                e.active
                    .insert((r.runbook.clone(), r.alert_fp), r.id.clone());
            }
            e.records.insert(r.id.clone(), r);
        }
        e
    }

    /// Takes an alert (firing or resolved); `new_id` makes remediation ids.
    pub fn on_alert(
        &mut self,
        alert: &Alert,
        now: i64,
        new_id: &mut dyn FnMut() -> String,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        let fp = alert.fingerprint();
        if alert.resolved_at(now) {
            // Resolved: verifying remediations of it worked; the alert may be remediated anew
            // if it fires again.
            self.active.retain(|(_, f), _| *f != fp);
            self.resolved.insert(fp);
            for r in self.records.values_mut() {
                if r.alert_fp == fp && r.state == State::Verifying {
                    finish(
                        r,
                        State::Remediated,
                        now,
                        "alert resolved within the verify window".into(),
                        &mut out,
                    );
                    out.push(Effect::Remediated(r.id.clone()));
                }
            }
            return out;
        }
        self.resolved.remove(&fp);
        for rb in &self.cfg.runbooks {
            if !rb.matchers.iter().all(|m| m.matches_labels(&alert.labels)) {
                continue;
            }
            let key = (rb.name.clone(), fp);
            if self.active.contains_key(&key) {
                continue;
            }
            let mut params = Vec::new();
            let ext = Labels::default();
            let name = format!("__runbook_{}", rb.name);
            for (k, t) in &rb.params {
                params.push((
                    k.clone(),
                    t.render(Data {
                        name: &name,
                        labels: &alert.labels,
                        external: &ext,
                        value: 0.0,
                        external_url: "",
                        // Runbook parameters come from the alert's labels; no queries.
                        query: None,
                    }),
                ));
            }
            let agent = rb
                .target
                .clone()
                .or_else(|| alert.labels.get("instance").map(str::to_string))
                .unwrap_or_default();
            let window = rb.window.as_millis() as i64;
            let counted = |r: &&Record| {
                r.runbook == rb.name && now - r.created_ms < window && r.state != State::Refused
            };
            let per_alert = self
                .records
                .values()
                .filter(counted)
                .filter(|r| r.alert_fp == fp)
                .count();
            let per_host = self
                .records
                .values()
                .filter(counted)
                .filter(|r| r.agent == agent)
                .count();
            let mut r = Record {
                id: new_id(),
                runbook: rb.name.clone(),
                action: rb.action.clone(),
                params,
                agent: agent.clone(),
                alert_fp: fp,
                labels: alert.labels.clone(),
                mode: rb.mode,
                state: State::Queued,
                created_ms: now,
                deadline_ms: now + rb.deadline.as_millis() as i64,
                verify_until: 0,
                verify_ms: rb.verify_window.as_millis() as i64,
                result: None,
                decided_by: None,
                history: Vec::new(),
            };
            r.note(
                now,
                format!(
                    "runbook {} matched alert {}",
                    rb.name,
                    alert.labels.get("alertname").unwrap_or("")
                ),
            );
            let refusal = if !self.enabled {
                Some("remediation is switched off".to_string())
            } else if agent.is_empty() {
                Some("no target: the alert has no instance label and the runbook names none".into())
            } else if per_alert >= rb.max_runs_per_alert {
                Some(format!(
                    "guardrail: {per_alert} runs for this alert in the window"
                ))
            } else if per_host >= rb.max_runs_per_host {
                Some(format!(
                    "guardrail: {per_host} runs on {agent} in the window"
                ))
            } else {
                None
            };
            // Registered either way, so a refusal is recorded once per firing, not per re-send.
            self.active.insert(key, r.id.clone());
            match refusal {
                Some(why) => finish(&mut r, State::Refused, now, why, &mut out),
                None if rb.mode == Mode::Approve => {
                    r.state = State::AwaitingApproval;
                    r.note(now, "awaiting approval".into());
                    out.push(Effect::Changed(r.id.clone()));
                }
                None => {
                    r.note(now, format!("queued for {agent}"));
                    out.push(Effect::Changed(r.id.clone()));
                }
            }
            self.records.insert(r.id.clone(), r);
        }
        out
    }

    /// Approves (or rejects) a remediation waiting for it.
    pub fn decide(
        &mut self,
        id: &str,
        approve: bool,
        by: &str,
        now: i64,
    ) -> Result<Vec<Effect>, RequestError> {
        let r = self
            .records
            .get_mut(id)
            .ok_or_else(|| RequestError::NotFound(format!("no remediation {id}")))?;
        if r.state != State::AwaitingApproval {
            return Err(RequestError::Invalid(format!(
                "remediation {id} is {}, not awaiting approval",
                r.state.as_str()
            )));
        }
        let mut out = Vec::new();
        r.decided_by = Some(by.to_string());
        if approve {
            r.state = State::Queued;
            r.note(now, format!("approved by {by}"));
            out.push(Effect::Changed(r.id.clone()));
        } else {
            finish(
                r,
                State::Rejected,
                now,
                format!("rejected by {by}"),
                &mut out,
            );
        }
        Ok(out)
    }

    /// A result from `agent`.
    pub fn on_result(&mut self, agent: &str, res: CommandResult, now: i64) -> Vec<Effect> {
        let mut out = Vec::new();
        let Some(r) = self.records.get_mut(&res.id) else {
            tracing::warn!(agent, id = %res.id, "result for an unknown command ignored");
            return out;
        };
        if r.agent != agent {
            tracing::warn!(agent, id = %res.id, expected = %r.agent, "result from the wrong agent ignored");
            return out;
        }
        if !matches!(r.state, State::Sent | State::Queued) {
            return out;
        }
        let status = res.status.clone();
        let summary = format!(
            "agent: {status}{}{}",
            res.exit_code
                .map(|c| format!(", exit {c}"))
                .unwrap_or_default(),
            if res.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", res.reason)
            }
        );
        r.result = Some(res);
        match status.as_str() {
            "succeeded" if self.resolved.contains(&r.alert_fp) => {
                r.note(now, summary);
                finish(
                    r,
                    State::Remediated,
                    now,
                    "alert already resolved".into(),
                    &mut out,
                );
                out.push(Effect::Remediated(r.id.clone()));
            }
            "succeeded" => {
                r.state = State::Verifying;
                r.verify_until = now + r.verify_ms;
                r.note(now, summary);
                out.push(Effect::Changed(r.id.clone()));
            }
            "dry_run" => finish(r, State::DryRun, now, summary, &mut out),
            _ => {
                finish(r, State::Failed, now, summary, &mut out);
                out.push(Effect::Escalate(r.id.clone()));
            }
        }
        out
    }

    /// Sends what can go, expires what waited too long, fails what did not verify.
    pub fn tick(&mut self, now: i64, connected: &dyn Fn(&str) -> bool) -> Vec<Effect> {
        let mut out = Vec::new();
        let old: Vec<String> = self
            .records
            .values()
            .filter(|r| r.state.done() && now - r.created_ms > KEEP_MS)
            .map(|r| r.id.clone())
            .collect();
        for id in old {
            self.records.remove(&id);
            out.push(Effect::Forget(id));
        }
        for r in self.records.values_mut() {
            match r.state {
                State::Queued | State::Sent | State::AwaitingApproval if now > r.deadline_ms => {
                    finish(
                        r,
                        State::Expired,
                        now,
                        "deadline passed without a result".into(),
                        &mut out,
                    );
                    out.push(Effect::Escalate(r.id.clone()));
                }
                State::Queued if self.enabled && connected(&r.agent) => {
                    r.state = State::Sent;
                    r.note(now, format!("sent to {}", r.agent));
                    out.push(Effect::Send {
                        agent: r.agent.clone(),
                        cmd: r.command(),
                    });
                    out.push(Effect::Changed(r.id.clone()));
                }
                State::Verifying if now >= r.verify_until => {
                    finish(
                        r,
                        State::Failed,
                        now,
                        "alert still firing after the verify window".into(),
                        &mut out,
                    );
                    out.push(Effect::Escalate(r.id.clone()));
                }
                _ => {}
            }
        }
        out
    }

    /// `agent` (re)connected: its sent commands without a result go again (run once by id).
    pub fn reconnected(&mut self, agent: &str) {
        for r in self.records.values_mut() {
            if r.agent == agent && r.state == State::Sent {
                r.state = State::Queued;
            }
        }
    }

    /// When [`Engine::tick`] has something to do next.
    pub fn next_deadline(&self) -> Option<i64> {
        self.records
            .values()
            .filter_map(|r| match r.state {
                State::Queued | State::Sent | State::AwaitingApproval => Some(r.deadline_ms + 1),
                State::Verifying => Some(r.verify_until),
                _ => None,
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(extra: &str) -> Engine {
        let cfg = Runbooks::parse(&format!(
            "runbooks:\n  - name: restart\n    matchers: ['alertname=\"Down\"']\n    action: restart-web\n    params: {{port: '{{{{ $labels.port }}}}'}}\n    verify_window: 30s\n    deadline: 60s\n    max_runs_per_alert: 2\n{extra}"
        ))
        .unwrap();
        Engine::new(cfg, true, vec![])
    }

    fn alert(port: &str, ends_at: i64) -> Alert {
        Alert {
            labels: Labels::from_pairs([
                ("alertname", "Down"),
                ("instance", "web-1"),
                ("port", port),
            ]),
            annotations: Labels::default(),
            starts_at: 0,
            ends_at,
            generator_url: String::new(),
        }
    }

    fn ids() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("r{n}")
        }
    }

    fn ok(id: &str) -> CommandResult {
        CommandResult {
            id: id.into(),
            status: "succeeded".into(),
            reason: String::new(),
            exit_code: Some(0),
            started_ms: 0,
            duration_ms: 5,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
        }
    }

    #[test]
    fn fire_send_run_verify_remediated() {
        let mut e = engine("");
        let mut id = ids();
        let firing = alert("8080", i64::MAX);
        e.on_alert(&firing, 0, &mut id);
        e.on_alert(&firing, 1000, &mut id);
        assert_eq!(e.records.len(), 1, "one remediation per firing alert");
        let r = &e.records["r1"];
        assert_eq!(r.params, vec![("port".to_string(), "8080".to_string())]);
        assert_eq!(r.agent, "web-1");
        // Not connected: stays queued.
        assert!(
            e.tick(1000, &|_| false)
                .iter()
                .all(|x| !matches!(x, Effect::Send { .. }))
        );
        let sent = e.tick(2000, &|a| a == "web-1");
        assert!(
            matches!(&sent[0], Effect::Send { agent, cmd } if agent == "web-1" && cmd.action == "restart-web")
        );
        // A result from another agent is ignored.
        e.on_result("web-2", ok("r1"), 2500);
        assert_eq!(e.records["r1"].state, State::Sent);
        e.on_result("web-1", ok("r1"), 3000);
        assert_eq!(e.records["r1"].state, State::Verifying);
        let fx = e.on_alert(&alert("8080", 4000), 4000, &mut id);
        assert!(fx.contains(&Effect::Remediated("r1".into())));
        assert_eq!(e.records["r1"].state, State::Remediated);
    }

    #[test]
    fn failures_expiry_and_unverified_runs_escalate() {
        let mut e = engine("");
        let mut id = ids();
        e.on_alert(&alert("1", i64::MAX), 0, &mut id);
        e.tick(0, &|_| true);
        let mut bad = ok("r1");
        bad.status = "failed".into();
        bad.exit_code = Some(3);
        let fx = e.on_result("web-1", bad, 10);
        assert!(fx.contains(&Effect::Escalate("r1".into())));
        assert!(fx.contains(&Effect::Outcome {
            action: "restart-web".into(),
            result: "failed".into()
        }));
        // Another alert: ran fine, but the alert keeps firing past the verify window.
        e.on_alert(&alert("2", i64::MAX), 0, &mut id);
        e.tick(0, &|_| true);
        e.on_result("web-1", ok("r2"), 100);
        assert!(e.tick(30_099, &|_| true).is_empty());
        let fx = e.tick(30_100, &|_| true);
        assert!(fx.contains(&Effect::Escalate("r2".into())));
        // A third never reaches its agent: expires at its deadline.
        e.on_alert(&alert("3", i64::MAX), 0, &mut id);
        let fx = e.tick(60_001, &|_| false);
        assert!(fx.contains(&Effect::Escalate("r3".into())));
        assert_eq!(e.records["r3"].state, State::Expired);
    }

    #[test]
    fn guardrails_switch_approval_and_reconnects() {
        let mut e = engine("");
        let mut id = ids();
        // Two runs per alert per window: the third firing is refused, once.
        for t in [0, 10, 20] {
            e.on_alert(&alert("1", i64::MAX), t, &mut id);
            e.on_alert(&alert("1", t + 5), t + 5, &mut id);
        }
        let states: Vec<State> = e.records.values().map(|r| r.state).collect();
        assert_eq!(
            states.iter().filter(|s| **s == State::Refused).count(),
            1,
            "{states:?}"
        );
        e.enabled = false;
        e.on_alert(&alert("9", i64::MAX), 30, &mut id);
        let last = e.records.values().last().unwrap();
        assert_eq!(last.state, State::Refused);
        assert!(last.history.last().unwrap().1.contains("switched off"));
        // Approval mode.
        let mut a = engine("    mode: approve\n");
        a.on_alert(&alert("1", i64::MAX), 0, &mut id);
        let rid = a.records.keys().next().unwrap().clone();
        assert!(
            a.tick(1, &|_| true)
                .iter()
                .all(|x| !matches!(x, Effect::Send { .. }))
        );
        assert!(a.decide("nope", true, "ops", 1).is_err());
        a.decide(&rid, true, "ops", 2).unwrap();
        assert!(a.decide(&rid, true, "ops", 2).is_err(), "only once");
        assert!(
            a.tick(3, &|_| true)
                .iter()
                .any(|x| matches!(x, Effect::Send { .. }))
        );
        // A reconnect resends what has no result yet.
        a.reconnected("web-1");
        assert!(
            a.tick(4, &|_| true)
                .iter()
                .any(|x| matches!(x, Effect::Send { .. }))
        );
        // Dry run: the command says so, and the agent's answer ends it.
        let mut d = engine("    mode: dry-run\n");
        d.on_alert(&alert("1", i64::MAX), 0, &mut id);
        let fx = d.tick(1, &|_| true);
        let (rid, dry) = match &fx[0] {
            Effect::Send { cmd, .. } => (cmd.id.clone(), cmd.dry_run),
            other => panic!("{other:?}"),
        };
        assert!(dry);
        let mut res = ok(&rid);
        res.status = "dry_run".into();
        d.on_result("web-1", res, 2);
        assert_eq!(d.records[&rid].state, State::DryRun);
    }
}
