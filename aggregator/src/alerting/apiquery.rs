//! The query parameters of Alertmanager's v2 API, read as Alertmanager 0.25 reads them —
//! what `amtool alert query`, `amtool silence query` and Grafana's Alertmanager data source
//! send: `GET /api/v2/alerts?active=&silenced=&inhibited=&filter=&receiver=` and
//! `GET /api/v2/silences?filter=`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};
use telltale_common::config::Invalid;
use telltale_common::model::Labels;

use super::core::Routing;
use super::inhibit::inhibited_by;
use super::silence::{Silence, Silences};
use crate::alert::{Alert, fingerprint_hex, labels_json, matchers, rfc3339};
use crate::labels::{MatchOp, Matcher, anchored_regex};

/// go-openapi's boolean (`swag.ConvertBool`): these words are true and any other is false;
/// an absent or empty parameter keeps the default.
fn boolean(v: Option<&str>, default: bool) -> bool {
    match v {
        None | Some("") => default,
        Some(v) => matches!(
            v.to_ascii_lowercase().as_str(),
            "true" | "1" | "yes" | "ok" | "y" | "on" | "selected" | "checked" | "t" | "enabled"
        ),
    }
}

/// Which alerts `GET /api/v2/alerts` lists.
pub struct AlertQuery {
    active: bool,
    silenced: bool,
    inhibited: bool,
    /// Each filter, with whether its value is empty.
    filter: Vec<(Matcher, bool)>,
    receiver: Option<regex::Regex>,
}

impl Default for AlertQuery {
    fn default() -> Self {
        AlertQuery {
            active: true,
            silenced: true,
            inhibited: true,
            filter: Vec::new(),
            receiver: None,
        }
    }
}

impl AlertQuery {
    /// From the request's last value of each parameter (`get`; go-openapi takes the last)
    /// and every `filter` value; the error is Alertmanager's text.
    pub fn parse<'a>(
        get: impl Fn(&str) -> Option<&'a str>,
        filters: &[&str],
    ) -> Result<AlertQuery, Invalid> {
        let filter = filters
            .iter()
            .map(|f| {
                let (name, op, value) = matchers::parse_parts(f)?;
                Ok((matchers::build(&name, op, &value)?, value.is_empty()))
            })
            .collect::<Result<Vec<_>, Invalid>>()?;
        // An empty value is no filter (go-openapi skips empty values).
        let receiver = match get("receiver").filter(|r| !r.is_empty()) {
            None => None,
            Some(r) => Some(
                anchored_regex(r)
                    .map_err(|e| Invalid::from(format!("failed to parse receiver param: {e}")))?,
            ),
        };
        Ok(AlertQuery {
            active: boolean(get("active"), true),
            silenced: boolean(get("silenced"), true),
            inhibited: boolean(get("inhibited"), true),
            filter,
            receiver,
        })
    }

    /// Whether the `receiver` parameter lets `name` through.
    fn receiver_matches(&self, name: &str) -> bool {
        self.receiver.as_ref().is_none_or(|r| r.is_match(name))
    }

    /// Whether an alert with `labels`, silenced and inhibited as given, is listed (the
    /// receiver aside).
    fn alert_matches(&self, labels: &Labels, silenced: bool, inhibited: bool) -> bool {
        let active = !silenced && !inhibited;
        if (active && !self.active)
            || (silenced && !self.silenced)
            || (inhibited && !self.inhibited)
        {
            return false;
        }
        self.filter
            .iter()
            .all(|(m, empty)| filter_matches(m, *empty, labels))
    }
}

/// What the v2 API's alert and group lists read from the alerting core.
pub struct V2View<'a> {
    /// Every alert by fingerprint (resolved ones too).
    pub alerts: &'a HashMap<u64, Alert>,
    /// The silences.
    pub silences: &'a Silences,
    /// The aggregation groups: receiver, group labels, alerts' fingerprints.
    pub groups: Vec<(&'a str, &'a Labels, Vec<u64>)>,
    /// The routing (inhibition rules, the tree).
    pub routing: &'a Routing,
    /// Now (ms).
    pub now: i64,
}

impl V2View<'_> {
    fn firing(&self) -> Vec<&Alert> {
        self.alerts
            .values()
            .filter(|a| !a.resolved_at(self.now))
            .collect()
    }

    /// An alert's silences and inhibitor.
    fn status(&self, a: &Alert, firing: &[&Alert]) -> (Vec<String>, Vec<String>) {
        let silenced = self.silences.silenced_by(&a.labels, self.now);
        let inhibited = inhibited_by(&self.routing.cfg.inhibit_rules, &a.labels, firing)
            .map(fingerprint_hex)
            .into_iter()
            .collect();
        (silenced, inhibited)
    }

    fn alert_json(
        &self,
        a: &Alert,
        receivers: &[&str],
        status: (Vec<String>, Vec<String>),
    ) -> Value {
        let (silenced, inhibited) = status;
        let state = if silenced.is_empty() && inhibited.is_empty() {
            "active"
        } else {
            "suppressed"
        };
        let receivers: Vec<Value> = receivers.iter().map(|r| json!({"name": r})).collect();
        json!({
            "labels": labels_json(&a.labels),
            "annotations": labels_json(&a.annotations),
            "startsAt": rfc3339(a.starts_at),
            "endsAt": rfc3339(a.ends_at),
            "updatedAt": rfc3339(self.now),
            "generatorURL": a.generator_url,
            "fingerprint": fingerprint_hex(a.fingerprint()),
            "receivers": receivers,
            "status": {"state": state, "silencedBy": silenced, "inhibitedBy": inhibited},
        })
    }

    /// `GET /api/v2/alerts`: the unresolved alerts `q` lists, by fingerprint.
    pub fn alerts(&self, q: &AlertQuery) -> Vec<Value> {
        let firing = self.firing();
        let mut out: Vec<(u64, Value)> = Vec::new();
        for a in &firing {
            let routes = self.routing.cfg.route.matching(&a.labels);
            let names: Vec<&str> = routes.iter().map(|r| r.receiver.as_str()).collect();
            if !names.iter().any(|n| q.receiver_matches(n)) {
                continue;
            }
            let status = self.status(a, &firing);
            if !q.alert_matches(&a.labels, !status.0.is_empty(), !status.1.is_empty()) {
                continue;
            }
            out.push((a.fingerprint(), self.alert_json(a, &names, status)));
        }
        out.sort_by_key(|(fp, _)| *fp);
        out.into_iter().map(|(_, v)| v).collect()
    }

    /// `GET /api/v2/alerts/groups`, as Alertmanager's dispatcher lists its aggregation
    /// groups: groups whose receiver `q` lets through, with the alerts `q` lists (a group left
    /// empty is not listed), each alert naming the listed groups' receivers it is in;
    /// groups ordered by their labels, then receiver, alerts by `job`, `instance`, labels.
    pub fn groups(&self, q: &AlertQuery) -> Vec<Value> {
        let firing = self.firing();
        let mut kept: Vec<(&str, &Labels, Vec<&Alert>)> = Vec::new();
        let mut receivers: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
        for (receiver, labels, fps) in &self.groups {
            if !q.receiver_matches(receiver) {
                continue;
            }
            let mut alerts = Vec::new();
            for fp in fps {
                let Some(a) = self.alerts.get(fp).filter(|a| !a.resolved_at(self.now)) else {
                    continue;
                };
                let (s, i) = self.status(a, &firing);
                if q.alert_matches(&a.labels, !s.is_empty(), !i.is_empty()) {
                    receivers.entry(*fp).or_default().push(receiver);
                    alerts.push(a);
                }
            }
            if !alerts.is_empty() {
                alerts.sort_by(|x, y| alert_order(&x.labels, &y.labels));
                kept.push((receiver, labels, alerts));
            }
        }
        kept.sort_by(|x, y| labels_before(x.1, y.1).then_with(|| x.0.cmp(y.0)));
        for r in receivers.values_mut() {
            r.sort_unstable();
        }
        kept.into_iter()
            .map(|(receiver, labels, alerts)| {
                let alerts: Vec<Value> = alerts
                    .into_iter()
                    .map(|a| {
                        let names = receivers.get(&a.fingerprint()).map_or(&[][..], |v| v);
                        self.alert_json(a, names, self.status(a, &firing))
                    })
                    .collect();
                json!({"labels": labels_json(labels), "receiver": {"name": receiver}, "alerts": alerts})
            })
            .collect()
    }
}

/// Prometheus' `LabelSet.Before` as an ordering: fewer labels first, then by the sorted
/// names' values.
fn labels_before(a: &Labels, b: &Labels) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| {
        let mut names: Vec<&str> = a.iter().chain(b.iter()).map(|(k, _)| k).collect();
        names.sort_unstable();
        for n in names {
            match (a.get(n), b.get(n)) {
                (None, _) => return Ordering::Less,
                (_, None) => return Ordering::Greater,
                (Some(x), Some(y)) if x != y => return x.cmp(y),
                _ => {}
            }
        }
        Ordering::Equal
    })
}

/// Alertmanager's `AlertSlice` order: by `job`, then `instance` (an alert with the label
/// first), then by labels.
fn alert_order(a: &Labels, b: &Labels) -> Ordering {
    for key in ["job", "instance"] {
        match (a.get(key), b.get(key)) {
            (None, None) => continue,
            (None, Some(_)) => return Ordering::Greater,
            (Some(_), None) => return Ordering::Less,
            (Some(x), Some(y)) if x != y => return x.cmp(y),
            _ => {}
        }
    }
    labels_before(a, b)
}

/// Alertmanager's `matchFilterLabels`: an empty value in `=`/`=~` passes an alert without the
/// label, and in `!=`/`!~` one with it; otherwise the matcher decides (a missing label is "").
fn filter_matches(m: &Matcher, empty: bool, labels: &Labels) -> bool {
    let v = labels.get(&m.name);
    let negative = matches!(m.op, MatchOp::NotEqual(_) | MatchOp::NotRegex(_));
    if empty && (negative == v.is_some()) {
        return true;
    }
    m.matches(v.unwrap_or(""))
}

/// Which silences `GET /api/v2/silences` lists: those that hold, for every filter, a matcher
/// of the same name, kind and text.
pub struct SilenceQuery(Vec<(String, &'static str, String)>);

impl SilenceQuery {
    /// From every `filter` value; the error is Alertmanager's text.
    pub fn parse(filters: &[&str]) -> Result<SilenceQuery, Invalid> {
        let parts = filters
            .iter()
            .map(|f| {
                let (name, op, value) = matchers::parse_parts(f)?;
                // Alertmanager compiles it (and refuses a bad regex) before comparing.
                matchers::build(&name, op, &value)?;
                Ok((name, op, value))
            })
            .collect::<Result<Vec<_>, Invalid>>()?;
        Ok(SilenceQuery(parts))
    }

    /// Every silence.
    pub fn all() -> SilenceQuery {
        SilenceQuery(Vec::new())
    }

    /// Whether `s` is listed.
    pub fn lists(&self, s: &Silence) -> bool {
        self.0.iter().all(|(name, op, value)| {
            s.matchers.iter().any(|m| {
                let kind = match (m.is_regex, m.is_equal) {
                    (false, true) => "=",
                    (false, false) => "!=",
                    (true, true) => "=~",
                    (true, false) => "!~",
                };
                m.name == *name && kind == *op && m.value == *value
            })
        })
    }
}

/// Alertmanager's order of silences: active first, the next to end first; then pending, the
/// next to start first; then expired, the last to end first.
pub fn sort_silences(v: &mut [&Silence], now: i64) {
    v.sort_by_key(|s| match s.state(now) {
        "active" => (0, s.ends_at),
        "pending" => (1, s.starts_at),
        _ => (2, -s.ends_at),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_as_go_openapi_reads_them() {
        assert!(boolean(Some("YES"), false) && boolean(Some("1"), false));
        assert!(!boolean(Some("nope"), true) && !boolean(Some("0"), true));
        assert!(boolean(Some(""), true) && boolean(None, true));
    }

    #[test]
    fn empty_filter_values_pass_as_alertmanager_lets_them() {
        let l = Labels::from_pairs([("a", "x")]);
        let q = |s: &str| AlertQuery::parse(|_| None, &[s]).expect("filter");
        let lists = |s: &str| q(s).alert_matches(&l, false, false);
        assert!(lists("b=\"\""), "absent label, = \"\"");
        assert!(lists("a!=\"\""), "present label, != \"\"");
        assert!(!lists("a=\"\""), "present label, = \"\"");
        assert!(lists("b!~\"y\""));
        assert!(!lists("a=~\"y\""));
    }
}
