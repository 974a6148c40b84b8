//! Inhibition: a firing *source* alert mutes the *target* alerts that share the labels named
//! in `equal` (Alertmanager's semantics: a label missing from both counts as equal; an alert
//! matching both sides cannot be muted by another that also matches both — so a rule like
//! "critical mutes warning of the same alertname" never lets an alert mute itself).

use telltale_common::model::Labels;

use super::Alert;
use crate::labels::Matcher;

/// One inhibition rule.
#[derive(Debug, Clone)]
pub struct InhibitRule {
    /// Matchers a muting alert satisfies.
    pub source: Vec<Matcher>,
    /// Matchers a muted alert satisfies.
    pub target: Vec<Matcher>,
    /// Labels both must share.
    pub equal: Vec<String>,
}

fn all(ms: &[Matcher], l: &Labels) -> bool {
    ms.iter().all(|m| m.matches_labels(l))
}

/// Whether rule `r` lets an alert with labels `source` mute one with labels `target`.
fn mutes(r: &InhibitRule, source: &Labels, target: &Labels) -> bool {
    if !all(&r.target, target) || !all(&r.source, source) {
        return false;
    }
    // An alert does not mute itself (same labels: same alert).
    if source == target {
        return false;
    }
    // An alert matching both sides cannot be muted by another that also does.
    if all(&r.source, target) && all(&r.target, source) {
        return false;
    }
    r.equal.iter().all(|n| source.get(n) == target.get(n))
}

/// Whether any rule lets `source` mute `target` (correlation takes it as evidence that the
/// source explains the target).
pub fn inhibits(rules: &[InhibitRule], source: &Labels, target: &Labels) -> bool {
    rules.iter().any(|r| mutes(r, source, target))
}

/// The fingerprint of an alert among `firing` that inhibits an alert with `target` labels.
pub fn inhibited_by(rules: &[InhibitRule], target: &Labels, firing: &[&Alert]) -> Option<u64> {
    for r in rules {
        if let Some(s) = firing.iter().find(|s| mutes(r, &s.labels, target)) {
            return Some(s.fingerprint());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::matchers::parse_one;

    fn alert(pairs: &[(&str, &str)]) -> Alert {
        Alert {
            labels: Labels::from_pairs(pairs.iter().copied()),
            annotations: Labels::default(),
            starts_at: 1,
            ends_at: 0,
            generator_url: String::new(),
        }
    }

    // Alertmanager's documented example: critical mutes warning of the same alertname.
    fn rule() -> InhibitRule {
        InhibitRule {
            source: vec![parse_one("severity=critical").expect("m")],
            target: vec![parse_one("severity=warning").expect("m")],
            equal: vec!["alertname".into(), "cluster".into()],
        }
    }

    #[test]
    fn critical_mutes_warning_with_equal_labels() {
        let crit = alert(&[
            ("alertname", "Disk"),
            ("severity", "critical"),
            ("cluster", "a"),
        ]);
        let warn_a = alert(&[
            ("alertname", "Disk"),
            ("severity", "warning"),
            ("cluster", "a"),
        ]);
        let warn_b = alert(&[
            ("alertname", "Disk"),
            ("severity", "warning"),
            ("cluster", "b"),
        ]);
        let other = alert(&[
            ("alertname", "Cpu"),
            ("severity", "warning"),
            ("cluster", "a"),
        ]);
        let firing = [&crit];
        let r = [rule()];
        assert_eq!(
            inhibited_by(&r, &warn_a.labels, &firing),
            Some(crit.fingerprint())
        );
        assert_eq!(
            inhibited_by(&r, &warn_b.labels, &firing),
            None,
            "cluster differs"
        );
        assert_eq!(
            inhibited_by(&r, &other.labels, &firing),
            None,
            "alertname differs"
        );
        assert_eq!(
            inhibited_by(&r, &crit.labels, &firing),
            None,
            "source is not a target"
        );
        // Missing on both sides counts as equal.
        let crit_nc = alert(&[("alertname", "Disk"), ("severity", "critical")]);
        let warn_nc = alert(&[("alertname", "Disk"), ("severity", "warning")]);
        assert!(inhibited_by(&r, &warn_nc.labels, &[&crit_nc]).is_some());
    }

    #[test]
    fn an_alert_matching_both_sides_does_not_mute_its_peers() {
        let r = [InhibitRule {
            source: vec![parse_one("alertname=Down").expect("m")],
            target: vec![parse_one("alertname=Down").expect("m")],
            equal: vec!["job".into()],
        }];
        let a = alert(&[("alertname", "Down"), ("job", "x"), ("instance", "1")]);
        let b = alert(&[("alertname", "Down"), ("job", "x"), ("instance", "2")]);
        assert_eq!(inhibited_by(&r, &a.labels, &[&a, &b]), None);
    }
}
