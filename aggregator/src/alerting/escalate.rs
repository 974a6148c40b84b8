//! Escalation policies, without I/O: ordered steps (receiver, delay after the previous step;
//! the first step's delay counts from the incident's opening), repeated `repeat` more times
//! with `repeat_delay` between rounds. An acknowledgement or the incident's resolution stops
//! it. Pages due at the same time go out most urgent first (priority from `severity`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use telltale_common::model::Labels;

use crate::labels::Matcher;

/// One step.
#[derive(Debug, Clone)]
pub struct Step {
    /// Receiver to page.
    pub receiver: String,
    /// Wait after the previous step (or the opening, for the first).
    pub delay: Duration,
}

/// A policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Name.
    pub name: String,
    /// Incidents whose root-cause alert matches these (all) follow this policy.
    pub matchers: Vec<Matcher>,
    /// Steps in order.
    pub steps: Vec<Step>,
    /// Extra rounds after the first.
    pub repeat: u32,
    /// Wait between the last step of a round and the first of the next.
    pub repeat_delay: Duration,
}

/// The first policy whose matchers all match `labels`.
pub fn policy_for<'a>(policies: &'a [Policy], labels: &Labels) -> Option<&'a Policy> {
    policies
        .iter()
        .find(|p| p.matchers.iter().all(|m| m.matches_labels(labels)))
}

/// A running escalation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    /// Incident id.
    pub incident: u64,
    /// Policy name.
    pub policy: String,
    /// 0 (most urgent) to 3.
    pub priority: u8,
    /// Next step to page.
    pub step: usize,
    /// Current round (0 = first).
    pub round: u32,
    /// When the next step is due (ms).
    pub next_at: i64,
    /// Why it stopped, if it did.
    pub stopped: Option<String>,
}

/// A page to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Incident id.
    pub incident: u64,
    /// Receiver.
    pub receiver: String,
    /// Step index.
    pub step: usize,
    /// Round.
    pub round: u32,
    /// Priority.
    pub priority: u8,
    /// Policy name.
    pub policy: String,
}

impl Escalation {
    /// Starts `policy` for an incident opened at `now`.
    pub fn start(incident: u64, policy: &Policy, priority: u8, now: i64) -> Escalation {
        Escalation {
            incident,
            policy: policy.name.clone(),
            priority,
            step: 0,
            round: 0,
            next_at: now + ms(policy.steps.first().map(|s| s.delay).unwrap_or_default()),
            stopped: None,
        }
    }

    /// The pages due at `now`, advancing through the steps.
    pub fn tick(&mut self, policy: &Policy, now: i64) -> Vec<Page> {
        let mut out = Vec::new();
        while self.stopped.is_none() && self.next_at <= now {
            let Some(step) = policy.steps.get(self.step) else {
                self.stopped = Some("policy has no such step".into());
                break;
            };
            out.push(Page {
                incident: self.incident,
                receiver: step.receiver.clone(),
                step: self.step,
                round: self.round,
                priority: self.priority,
                policy: self.policy.clone(),
            });
            self.step += 1;
            if self.step < policy.steps.len() {
                self.next_at += ms(policy.steps[self.step].delay);
            } else if self.round < policy.repeat {
                self.round += 1;
                self.step = 0;
                self.next_at += ms(policy.repeat_delay) + ms(policy.steps[0].delay);
            } else {
                self.stopped = Some("all steps done".into());
            }
        }
        out
    }

    /// Stops it (acknowledged, resolved).
    pub fn stop(&mut self, reason: &str) {
        if self.stopped.is_none() {
            self.stopped = Some(reason.to_string());
        }
    }
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = 60_000;

    fn policy() -> Policy {
        Policy {
            name: "db".into(),
            matchers: vec![crate::alert::matchers::parse_one("team=db").expect("m")],
            steps: vec![
                Step {
                    receiver: "oncall".into(),
                    delay: Duration::ZERO,
                },
                Step {
                    receiver: "lead".into(),
                    delay: Duration::from_secs(600),
                },
            ],
            repeat: 1,
            repeat_delay: Duration::from_secs(1800),
        }
    }

    #[test]
    fn steps_in_order_then_repeat_then_stop() {
        let p = policy();
        let mut e = Escalation::start(7, &p, 0, 0);
        let r = |v: Vec<Page>| {
            v.into_iter()
                .map(|p| (p.receiver, p.round))
                .collect::<Vec<_>>()
        };
        assert_eq!(r(e.tick(&p, 0)), [("oncall".to_string(), 0)]);
        assert!(e.tick(&p, 9 * M).is_empty());
        assert_eq!(r(e.tick(&p, 10 * M)), [("lead".to_string(), 0)]);
        assert!(e.tick(&p, 39 * M).is_empty());
        assert_eq!(r(e.tick(&p, 40 * M)), [("oncall".to_string(), 1)]);
        assert_eq!(r(e.tick(&p, 60 * M)), [("lead".to_string(), 1)]);
        assert!(e.tick(&p, 600 * M).is_empty());
        assert_eq!(e.stopped.as_deref(), Some("all steps done"));
    }

    #[test]
    fn acknowledgement_stops_and_a_late_tick_catches_up_in_order() {
        let p = policy();
        let mut e = Escalation::start(7, &p, 0, 0);
        assert_eq!(e.tick(&p, 10 * M).len(), 2, "both steps due");
        e.stop("acknowledged by ops");
        assert!(e.tick(&p, 100 * M).is_empty());
        let l = Labels::from_pairs([("team", "db")]);
        assert_eq!(
            policy_for(std::slice::from_ref(&p), &l).map(|p| p.name.as_str()),
            Some("db")
        );
        assert!(policy_for(&[p], &Labels::default()).is_none());
    }
}
