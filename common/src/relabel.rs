//! Prometheus-style relabelling of series, per source: `replace`, `keep`, `drop`, `hashmod`,
//! `labelmap`, `labeldrop`, `labelkeep`, `lowercase`, `uppercase`, with Prometheus' defaults
//! (separator `;`, regex `(.*)` anchored at both ends, replacement `$1`, action `replace`).
//!
//! One difference, on purpose: `hashmod` hashes with FNV-1a (64 bit) instead of MD5, so the
//! agent needs no MD5 code; shard numbers are stable across agents and restarts but differ
//! from the ones Prometheus computes for the same values.

use crate::config::Invalid;
use crate::model::Labels;
use regex_lite::Regex;
use serde::Deserialize;

/// One rule as written in `agent.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Labels whose values are joined with `separator` and matched against `regex`.
    #[serde(default)]
    pub source_labels: Vec<String>,
    /// Default `;`.
    pub separator: Option<String>,
    /// Default `(.*)`; anchored at both ends.
    pub regex: Option<String>,
    /// For `hashmod`.
    pub modulus: Option<u64>,
    /// The label written by `replace`, `hashmod`, `lowercase`, `uppercase`.
    pub target_label: Option<String>,
    /// Default `$1`.
    pub replacement: Option<String>,
    /// Default `replace`.
    pub action: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Replace,
    Keep,
    Drop,
    HashMod,
    LabelMap,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    source_labels: Vec<String>,
    separator: String,
    regex: Regex,
    modulus: u64,
    target_label: String,
    replacement: String,
    action: Action,
}

impl Rule {
    /// Validates a rule; the error says which field is wrong.
    pub fn new(c: &RuleConfig) -> Result<Rule, Invalid> {
        let action = match c.action.as_deref().unwrap_or("replace") {
            "replace" => Action::Replace,
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            "hashmod" => Action::HashMod,
            "labelmap" => Action::LabelMap,
            "labeldrop" => Action::LabelDrop,
            "labelkeep" => Action::LabelKeep,
            "lowercase" => Action::Lowercase,
            "uppercase" => Action::Uppercase,
            other => {
                return Err(format!(
                    "action {other:?} is not one of replace, keep, drop, hashmod, labelmap, labeldrop, labelkeep, lowercase, uppercase"
                ).into());
            }
        };
        let pattern = c.regex.as_deref().unwrap_or("(.*)");
        // Go's syntax (RE2, read by `goregex`), anchored; `.` matches a newline too, as in
        // Prometheus 3 (2.x stopped there, which its maintainers called a bug).
        let regex =
            crate::goregex::translate(&format!("^(?s:{pattern})$"), crate::goregex::Flavor::Lite)
                .map_err(|e| e.to_string())
                .and_then(|t| Regex::new(&t).map_err(|e| e.to_string()))
                .map_err(|e| format!("regex {pattern:?}: {e}"))?;
        let target_label = c.target_label.clone().unwrap_or_default();
        let needs_target = matches!(
            action,
            Action::Replace | Action::HashMod | Action::Lowercase | Action::Uppercase
        );
        if needs_target && target_label.is_empty() {
            return Err(format!("action {action:?} needs target_label")
                .to_lowercase()
                .into());
        }
        let modulus = c.modulus.unwrap_or(0);
        if action == Action::HashMod && modulus == 0 {
            return Err("action hashmod needs a modulus above 0".into());
        }
        let needs_sources = matches!(
            action,
            Action::Keep | Action::Drop | Action::HashMod | Action::Lowercase | Action::Uppercase
        );
        if needs_sources && c.source_labels.is_empty() {
            return Err("this action needs source_labels".into());
        }
        Ok(Rule {
            source_labels: c.source_labels.clone(),
            separator: c.separator.clone().unwrap_or_else(|| ";".into()),
            regex,
            modulus,
            target_label,
            replacement: c.replacement.clone().unwrap_or_else(|| "$1".into()),
            action,
        })
    }
}

/// Validates a list of rules; the error names the rule's index.
pub fn compile(rules: &[RuleConfig]) -> Result<Vec<Rule>, Invalid> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| Rule::new(r).map_err(|e| e.context(format!("rule {i}"))))
        .collect()
}

fn get<'a>(l: &'a [(String, String)], name: &str) -> &'a str {
    l.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

fn set(l: &mut Vec<(String, String)>, name: &str, value: String) {
    match l.iter_mut().find(|(n, _)| n == name) {
        Some(slot) => slot.1 = value,
        None => l.push((name.to_string(), value)),
    }
}

/// FNV-1a, 64 bit.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Applies `rules` in order. Returns `None` when a rule drops the series (or no metric name
/// is left).
pub fn apply(rules: &[Rule], labels: &Labels) -> Option<Labels> {
    if rules.is_empty() {
        return Some(labels.clone());
    }
    let mut l: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for r in rules {
        let joined = r
            .source_labels
            .iter()
            .map(|s| get(&l, s))
            .collect::<Vec<_>>()
            .join(&r.separator);
        match r.action {
            Action::Keep if !r.regex.is_match(&joined) => return None,
            Action::Drop if r.regex.is_match(&joined) => return None,
            Action::Keep | Action::Drop => {}
            Action::Replace => {
                if let Some(caps) = r.regex.captures(&joined) {
                    let mut target = String::new();
                    caps.expand(&r.target_label, &mut target);
                    let mut value = String::new();
                    caps.expand(&r.replacement, &mut value);
                    if crate::model::valid_label_name(&target) {
                        if value.is_empty() {
                            l.retain(|(n, _)| *n != target);
                        } else {
                            set(&mut l, &target, value);
                        }
                    }
                }
            }
            Action::HashMod => {
                let v = fnv1a(&joined) % r.modulus;
                set(&mut l, &r.target_label, v.to_string());
            }
            Action::Lowercase => set(&mut l, &r.target_label, joined.to_lowercase()),
            Action::Uppercase => set(&mut l, &r.target_label, joined.to_uppercase()),
            Action::LabelMap => {
                let mapped: Vec<(String, String)> = l
                    .iter()
                    .filter_map(|(n, v)| {
                        let caps = r.regex.captures(n)?;
                        let mut target = String::new();
                        caps.expand(&r.replacement, &mut target);
                        Some((target, v.clone()))
                    })
                    .collect();
                for (n, v) in mapped {
                    set(&mut l, &n, v);
                }
            }
            Action::LabelDrop => l.retain(|(n, _)| !r.regex.is_match(n)),
            Action::LabelKeep => {
                l.retain(|(n, _)| n == crate::model::METRIC_NAME || r.regex.is_match(n))
            }
        }
    }
    let out = Labels::from_pairs(l);
    out.metric_name().is_some().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml_text: &str) -> Rule {
        let c: RuleConfig = toml::from_str(toml_text).unwrap();
        Rule::new(&c).unwrap()
    }

    fn labels(p: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(p.iter().copied())
    }

    #[test]
    fn each_action_behaves_as_in_prometheus() {
        let l = labels(&[
            ("__name__", "http_requests_total"),
            ("path", "/api/v1/users"),
            ("code", "500"),
        ]);
        let r = rule(
            "source_labels=[\"path\"]\nregex=\"/api/(v[0-9]+)/.*\"\ntarget_label=\"api\"\nreplacement=\"$1\"",
        );
        assert_eq!(apply(&[r], &l).unwrap().get("api"), Some("v1"));
        // No match: unchanged.
        let r = rule("source_labels=[\"path\"]\nregex=\"/other\"\ntarget_label=\"api\"");
        assert_eq!(apply(&[r], &l).unwrap(), l);
        // The regex is anchored: "50" does not match "500".
        let keep = rule("source_labels=[\"code\"]\nregex=\"50\"\naction=\"keep\"");
        assert!(apply(&[keep], &l).is_none());
        let drop = rule("source_labels=[\"code\"]\nregex=\"5..\"\naction=\"drop\"");
        assert!(apply(&[drop], &l).is_none());
        let ld = rule("regex=\"pa.*\"\naction=\"labeldrop\"");
        assert_eq!(apply(&[ld], &l).unwrap().get("path"), None);
        let lk = rule("regex=\"code\"\naction=\"labelkeep\"");
        let kept = apply(&[lk], &l).unwrap();
        assert_eq!(kept.len(), 2, "{kept:?}");
        let hm =
            rule("source_labels=[\"path\"]\nmodulus=4\ntarget_label=\"shard\"\naction=\"hashmod\"");
        let a = apply(std::slice::from_ref(&hm), &l).unwrap();
        let shard: u64 = a.get("shard").unwrap().parse().unwrap();
        assert!(shard < 4);
        assert_eq!(apply(&[hm], &l).unwrap().get("shard"), a.get("shard"));
        let lm = rule("regex=\"(p.*)\"\nreplacement=\"orig_$1\"\naction=\"labelmap\"");
        assert_eq!(
            apply(&[lm], &l).unwrap().get("orig_path"),
            Some("/api/v1/users")
        );
        // An empty replacement deletes the target label.
        let del = rule("source_labels=[\"code\"]\ntarget_label=\"path\"\nreplacement=\"\"");
        assert_eq!(apply(&[del], &l).unwrap().get("path"), None);
        // Dropping the metric name drops the series.
        let noname = rule("regex=\"__name__\"\naction=\"labeldrop\"");
        assert!(apply(&[noname], &l).is_none());
    }

    #[test]
    fn invalid_rules_say_what_is_wrong() {
        for (t, want) in [
            ("action=\"explode\"", "not one of"),
            ("regex=\"(\"\ntarget_label=\"x\"", "regex"),
            (
                "action=\"hashmod\"\nsource_labels=[\"a\"]\ntarget_label=\"x\"",
                "modulus",
            ),
            ("action=\"keep\"", "source_labels"),
            ("regex=\"\\\\p{L}+\"\ntarget_label=\"x\"", "regex"),
            ("action=\"replace\"", "target_label"),
        ] {
            let c: RuleConfig = toml::from_str(t).unwrap();
            let e = compile(&[c]).unwrap_err();
            assert!(e.0.contains("rule 0") && e.0.contains(want), "{t}: {e}");
        }
    }
}
