//! The alerting rule state machine, without I/O: results in, state and alerts out, the clock
//! passed in.
//!
//! Per label set: inactive → pending (the expression returned it) → firing (it held for `for`)
//! → inactive again, remembered as resolved for 15 minutes so receivers hear of it. With
//! `keep_firing_for`, a firing alert whose result went away keeps firing that long. The
//! semantics are Prometheus' (`rules/alerting.go`), so `ALERTS`, `ALERTS_FOR_STATE` and
//! `/api/v1/alerts` read the same.

use std::collections::HashMap;
use std::time::Duration;

use telltale_common::model::{Labels, Sample, SeriesSamples};

use super::EvalError;
use crate::alert::Alert;
use crate::alert::template::{Data, QueryFn, Template};

/// How long a resolved alert is still sent (Prometheus: 15 minutes).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;
/// How often an unchanged firing alert is re-sent (Prometheus' `--rules.alert.resend-delay`).
pub const RESEND_DELAY_MS: i64 = 60 * 1000;

/// An alert's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not active (kept while resolved, to be sent).
    Inactive,
    /// Active, waiting for `for`.
    Pending,
    /// Active for at least `for`.
    Firing,
}

impl State {
    /// Prometheus' name for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Inactive => "inactive",
            State::Pending => "pending",
            State::Firing => "firing",
        }
    }
}

/// One alert of a rule.
#[derive(Debug, Clone)]
pub struct ActiveAlert {
    /// Its labels (result labels + rule labels + `alertname`).
    pub labels: Labels,
    /// Rendered annotations.
    pub annotations: Labels,
    /// State.
    pub state: State,
    /// The latest value.
    pub value: f64,
    /// When it became pending (ms).
    pub active_at: i64,
    /// When it started firing (ms, 0 if not yet).
    pub fired_at: i64,
    /// When it resolved (ms, 0 if not).
    pub resolved_at: i64,
    /// Since when the result has been absent while `keep_firing_for` holds it (0 if not).
    pub keep_firing_since: i64,
    /// When it was last handed to the alerting side (ms, 0 never).
    pub last_sent_at: i64,
    /// Until when a receiver should consider it firing without hearing again.
    pub valid_until: i64,
}

/// What an alerting rule needs to evaluate.
#[derive(Clone)]
pub struct AlertSpec<'a> {
    /// `alertname`.
    pub name: &'a str,
    /// Label templates.
    pub labels: &'a [(String, Template)],
    /// Annotation templates.
    pub annotations: &'a [(String, Template)],
    /// `for`.
    pub hold: Duration,
    /// `keep_firing_for`.
    pub keep_firing_for: Duration,
    /// Most alerts the rule may hold (0 = no limit).
    pub limit: u64,
    /// `$externalURL` in the templates.
    pub external_url: &'a str,
    /// What the templates' `query` runs.
    pub query: Option<&'a QueryFn<'a>>,
}

/// The alerts of one alerting rule.
#[derive(Debug, Default)]
pub struct AlertSet {
    active: HashMap<Labels, ActiveAlert>,
    /// `active_at` values read back from `ALERTS_FOR_STATE` after a restart, used once.
    restore: Option<HashMap<Labels, i64>>,
}

impl AlertSet {
    /// Hands restored `active_at` times (by alert labels) to the next evaluation.
    pub fn restore_from(&mut self, for_state: HashMap<Labels, i64>) {
        self.restore = Some(for_state);
    }

    /// Applies one evaluation's result at `now` (ms). An error (duplicate label sets, limit
    /// exceeded) leaves no alerts, like Prometheus.
    pub fn apply(
        &mut self,
        spec: &AlertSpec<'_>,
        now: i64,
        result: Vec<(Labels, f64)>,
        external: &Labels,
    ) -> Result<(), EvalError> {
        let hold = spec.hold.as_millis() as i64;
        let keep = spec.keep_firing_for.as_millis() as i64;
        let restore = self.restore.take();
        let mut seen: HashMap<Labels, (Labels, f64)> = HashMap::with_capacity(result.len());
        let name = format!("__alert_{}", spec.name);
        for (metric, v) in result {
            // Templates see the result's labels as they are (with `__name__`, as Prometheus'
            // `$labels`); the alert's labels go without it.
            let data = Data {
                name: &name,
                labels: &metric,
                external,
                value: v,
                external_url: spec.external_url,
                query: spec.query,
            };
            let mut labels = metric.clone();
            labels.remove("__name__");
            for (k, t) in spec.labels {
                set_or_remove(&mut labels, k, &t.render(data));
            }
            labels.set("alertname", spec.name);
            // Annotations that render empty are kept, as Prometheus keeps them.
            let annotations = Labels::from_pairs_keeping_empty(
                spec.annotations
                    .iter()
                    .map(|(k, t)| (k.clone(), t.render(data))),
            );
            if seen.insert(labels, (annotations, v)).is_some() {
                self.active.clear();
                return Err(EvalError::DuplicateLabels { what: "alert" });
            }
        }
        for (labels, (annotations, value)) in &seen {
            match self.active.get_mut(labels) {
                Some(a) if a.state != State::Inactive => {
                    a.value = *value;
                    a.annotations = annotations.clone();
                    a.keep_firing_since = 0;
                }
                _ => {
                    let active_at = restore
                        .as_ref()
                        .and_then(|r| r.get(&stored_labels(spec.labels, labels)).copied())
                        .filter(|t| *t <= now)
                        .unwrap_or(now);
                    self.active.insert(
                        labels.clone(),
                        ActiveAlert {
                            labels: labels.clone(),
                            annotations: annotations.clone(),
                            state: State::Pending,
                            value: *value,
                            active_at,
                            fired_at: 0,
                            resolved_at: 0,
                            keep_firing_since: 0,
                            last_sent_at: 0,
                            valid_until: 0,
                        },
                    );
                }
            }
        }
        self.active.retain(|labels, a| {
            if seen.contains_key(labels) {
                return true;
            }
            if keep > 0 && a.state == State::Firing {
                if a.keep_firing_since == 0 {
                    a.keep_firing_since = now;
                }
                if now - a.keep_firing_since < keep {
                    return true;
                }
            }
            if a.state == State::Pending
                || (a.resolved_at != 0 && now - a.resolved_at > RESOLVED_RETENTION_MS)
            {
                return false;
            }
            if a.state != State::Inactive {
                a.state = State::Inactive;
                a.resolved_at = now;
            }
            true
        });
        let live = self
            .active
            .values()
            .filter(|a| a.state != State::Inactive)
            .count() as u64;
        if spec.limit > 0 && live > spec.limit {
            self.active.clear();
            return Err(EvalError::Limit {
                limit: spec.limit,
                count: live,
                what: "alerts",
            });
        }
        for a in self.active.values_mut() {
            if a.state == State::Pending && now - a.active_at >= hold {
                a.state = State::Firing;
                a.fired_at = now;
            }
        }
        Ok(())
    }

    /// Each alert's identity and state, sorted (to tell whether an evaluation changed any).
    pub fn states(&self) -> Vec<(u64, State)> {
        let mut v: Vec<(u64, State)> = self
            .active
            .values()
            .map(|a| (crate::alert::fingerprint(&a.labels), a.state))
            .collect();
        v.sort_by_key(|x| x.0);
        v
    }

    /// The alerts, any state.
    pub fn alerts(&self) -> impl Iterator<Item = &ActiveAlert> {
        self.active.values()
    }

    /// The most advanced state of any alert.
    pub fn state(&self) -> State {
        let mut s = State::Inactive;
        for a in self.active.values() {
            match a.state {
                State::Firing => return State::Firing,
                State::Pending => s = State::Pending,
                State::Inactive => {}
            }
        }
        s
    }

    /// `ALERTS` (value 1, `alertstate` label) and `ALERTS_FOR_STATE` (value `active_at` in
    /// seconds) samples at `now` for every pending or firing alert, labelled as
    /// [`stored_labels`] says.
    pub fn series(&self, now: i64, rule_labels: &[(String, Template)]) -> Vec<SeriesSamples> {
        let mut out = Vec::new();
        for a in self.active.values().filter(|a| a.state != State::Inactive) {
            let stored = stored_labels(rule_labels, &a.labels);
            let mut l = stored.clone();
            l.set("__name__", "ALERTS");
            l.set("alertstate", a.state.as_str());
            out.push(SeriesSamples {
                labels: l,
                samples: vec![Sample(now, 1.0)],
            });
            let mut f = stored;
            f.set("__name__", "ALERTS_FOR_STATE");
            out.push(SeriesSamples {
                labels: f,
                samples: vec![Sample(now, a.active_at as f64 / 1000.0)],
            });
        }
        out
    }

    /// The alerts to hand to the alerting side at `now`: newly firing or resolved ones at
    /// once, unchanged firing ones every [`RESEND_DELAY_MS`]. Firing alerts are valid for four
    /// times the larger of the interval and the resend delay.
    pub fn to_send(&mut self, now: i64, interval: Duration, generator_url: &str) -> Vec<Alert> {
        let valid_for = 4 * RESEND_DELAY_MS.max(interval.as_millis() as i64);
        let mut out = Vec::new();
        for a in self.active.values_mut() {
            let due = match a.state {
                State::Pending => false,
                _ if a.resolved_at > a.last_sent_at => true,
                State::Inactive => false,
                State::Firing => {
                    a.last_sent_at == 0
                        || a.last_sent_at < a.fired_at
                        || a.last_sent_at + RESEND_DELAY_MS <= now
                }
            };
            if !due {
                continue;
            }
            a.last_sent_at = now;
            let ends_at = if a.state == State::Inactive {
                a.resolved_at
            } else {
                a.valid_until = now + valid_for;
                a.valid_until
            };
            out.push(Alert {
                labels: a.labels.clone(),
                annotations: a.annotations.clone(),
                starts_at: a.active_at,
                ends_at,
                generator_url: generator_url.to_string(),
            });
        }
        out
    }
}

/// Sets a label, or removes it when the value is empty (an empty label is an absent one).
pub fn set_or_remove(labels: &mut Labels, name: &str, value: &str) {
    if value.is_empty() {
        labels.remove(name);
    } else {
        labels.set(name, value);
    }
}

/// The labels of an alert's `ALERTS` and `ALERTS_FOR_STATE` series, as Prometheus builds
/// them (`sample`, `forStateSample` in rules/alerting.go): the rule's labels *as written*,
/// then the alert's over them. A templated label that rendered empty (so the alert has none)
/// stays in the series with its template text, as in Prometheus.
pub fn stored_labels(rule_labels: &[(String, Template)], alert: &Labels) -> Labels {
    let mut l = Labels::from_pairs(
        rule_labels
            .iter()
            .map(|(k, t)| (k.clone(), t.source().to_string())),
    );
    for (k, v) in alert.iter() {
        l.set(k, v);
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(
        labels: &'a [(String, Template)],
        ann: &'a [(String, Template)],
        hold: u64,
        keep: u64,
    ) -> AlertSpec<'a> {
        AlertSpec {
            name: "HighLatency",
            labels,
            annotations: ann,
            hold: Duration::from_secs(hold),
            keep_firing_for: Duration::from_secs(keep),
            limit: 0,
            external_url: "http://telltale.example:9470",
            query: None,
        }
    }

    fn res(v: f64) -> Vec<(Labels, f64)> {
        vec![(
            Labels::from_pairs([("__name__", "lat"), ("instance", "a")]),
            v,
        )]
    }

    fn only(s: &AlertSet) -> ActiveAlert {
        let v: Vec<_> = s.alerts().cloned().collect();
        assert_eq!(v.len(), 1, "{v:?}");
        v[0].clone()
    }

    #[test]
    fn inactive_pending_firing_resolved_with_the_clock_passed_in() {
        let sev = [("severity".to_string(), Template::parse("page").expect("t"))];
        let ann = [(
            "summary".to_string(),
            Template::parse("{{ $labels.instance }} at {{ $value }}").expect("t"),
        )];
        let sp = spec(&sev, &ann, 60, 0);
        let ext = Labels::default();
        let mut s = AlertSet::default();
        s.apply(&sp, 0, vec![], &ext).expect("ok");
        assert_eq!(s.state(), State::Inactive);
        s.apply(&sp, 1_000, res(7.0), &ext).expect("ok");
        let a = only(&s);
        assert_eq!(a.state, State::Pending);
        assert_eq!(a.labels.get("alertname"), Some("HighLatency"));
        assert_eq!(a.labels.get("severity"), Some("page"));
        assert_eq!(a.labels.get("__name__"), None);
        assert_eq!(a.annotations.get("summary"), Some("a at 7"));
        assert!(
            s.to_send(1_000, Duration::from_secs(1), "").is_empty(),
            "pending is not sent"
        );
        // 59 s later: still pending; 60 s: firing.
        s.apply(&sp, 60_000, res(8.0), &ext).expect("ok");
        assert_eq!(only(&s).state, State::Pending);
        s.apply(&sp, 61_000, res(9.0), &ext).expect("ok");
        let a = only(&s);
        assert_eq!(
            (a.state, a.fired_at, a.active_at),
            (State::Firing, 61_000, 1_000)
        );
        let sent = s.to_send(61_000, Duration::from_secs(1), "");
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].starts_at, 1_000);
        assert!(sent[0].ends_at > 61_000);
        assert!(
            s.to_send(62_000, Duration::from_secs(1), "").is_empty(),
            "not re-sent at once"
        );
        assert_eq!(
            s.to_send(121_000, Duration::from_secs(1), "").len(),
            1,
            "re-sent after 1m"
        );
        let series = s.series(61_000, &[]);
        assert_eq!(series.len(), 2);
        // Gone: resolved, sent once with ends_at = resolution time, kept 15 minutes.
        s.apply(&sp, 130_000, vec![], &ext).expect("ok");
        let a = only(&s);
        assert_eq!((a.state, a.resolved_at), (State::Inactive, 130_000));
        let sent = s.to_send(130_000, Duration::from_secs(1), "");
        assert_eq!(sent[0].ends_at, 130_000);
        assert!(s.series(130_000, &[]).is_empty());
        s.apply(&sp, 130_000 + RESOLVED_RETENTION_MS + 1, vec![], &ext)
            .expect("ok");
        assert_eq!(s.alerts().count(), 0);
    }

    #[test]
    fn pending_that_goes_away_is_dropped_and_for_zero_fires_at_once() {
        let sp = spec(&[], &[], 60, 0);
        let ext = Labels::default();
        let mut s = AlertSet::default();
        s.apply(&sp, 0, res(1.0), &ext).expect("ok");
        s.apply(&sp, 10_000, vec![], &ext).expect("ok");
        assert_eq!(s.alerts().count(), 0);
        let sp0 = spec(&[], &[], 0, 0);
        s.apply(&sp0, 20_000, res(1.0), &ext).expect("ok");
        assert_eq!(only(&s).state, State::Firing);
    }

    #[test]
    fn keep_firing_for_holds_a_firing_alert() {
        let sp = spec(&[], &[], 0, 30);
        let ext = Labels::default();
        let mut s = AlertSet::default();
        s.apply(&sp, 0, res(1.0), &ext).expect("ok");
        s.apply(&sp, 10_000, vec![], &ext).expect("ok");
        assert_eq!(only(&s).state, State::Firing);
        s.apply(&sp, 39_000, vec![], &ext).expect("ok");
        assert_eq!(only(&s).state, State::Firing);
        s.apply(&sp, 40_000, vec![], &ext).expect("ok");
        assert_eq!(only(&s).state, State::Inactive);
    }

    #[test]
    fn restored_active_at_survives_a_restart() {
        let sp = spec(&[], &[], 60, 0);
        let ext = Labels::default();
        let mut s = AlertSet::default();
        let labels = Labels::from_pairs([("alertname", "HighLatency"), ("instance", "a")]);
        s.restore_from(HashMap::from([(labels, 5_000)]));
        s.apply(&sp, 70_000, res(1.0), &ext).expect("ok");
        let a = only(&s);
        assert_eq!((a.state, a.active_at), (State::Firing, 5_000));
    }

    /// A label template that renders empty leaves the alert without that label, but its
    /// `ALERTS` series keep the template text (Prometheus builds them from the rule's labels
    /// as written); an empty annotation stays. A restart finds the alert by those labels.
    #[test]
    fn alerts_series_keep_the_text_of_a_label_that_rendered_empty() {
        let lab = [(
            "zone".to_string(),
            Template::parse("{{ $labels.zone }}").expect("t"),
        )];
        let ann = [(
            "empty".to_string(),
            Template::parse("{{ $labels.zone }}").expect("t"),
        )];
        let sp = spec(&lab, &ann, 60, 0);
        let ext = Labels::default();
        let mut s = AlertSet::default();
        s.apply(&sp, 0, res(1.0), &ext).expect("ok");
        let a = only(&s);
        assert_eq!(a.labels.get("zone"), None);
        assert_eq!(a.annotations.get("empty"), Some(""));
        let series = s.series(0, &lab);
        for x in &series {
            assert_eq!(x.labels.get("zone"), Some("{{ $labels.zone }}"), "{x:?}");
        }
        let mut stored = series[0].labels.clone();
        if stored.get("__name__") == Some("ALERTS") {
            stored = series[1].labels.clone();
        }
        stored.remove("__name__");
        let mut after = AlertSet::default();
        after.restore_from(HashMap::from([(stored, 0)]));
        after.apply(&sp, 70_000, res(1.0), &ext).expect("ok");
        assert_eq!(only(&after).state, State::Firing);
    }

    #[test]
    fn duplicate_label_sets_and_limits_are_errors() {
        let ext = Labels::default();
        let mut s = AlertSet::default();
        let sp = spec(&[], &[], 0, 0);
        let dup = vec![
            (Labels::from_pairs([("__name__", "x"), ("i", "1")]), 1.0),
            (Labels::from_pairs([("__name__", "y"), ("i", "1")]), 1.0),
        ];
        assert!(s.apply(&sp, 0, dup, &ext).is_err());
        let mut lim = spec(&[], &[], 0, 0);
        lim.limit = 1;
        let two = vec![
            (Labels::from_pairs([("i", "1")]), 1.0),
            (Labels::from_pairs([("i", "2")]), 1.0),
        ];
        let e = s.apply(&lim, 0, two, &ext).expect_err("limit");
        assert!(e.to_string().contains("exceeded limit of 1"), "{e}");
        assert_eq!(s.alerts().count(), 0);
    }
}
