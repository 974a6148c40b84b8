//! Silences, as Alertmanager's v2 API has them: matchers plus a time range. A silence is
//! pending before `startsAt`, active until `endsAt`, then expired (kept for the API, never
//! deleted by a user — "delete" expires it, like Alertmanager).

use serde::{Deserialize, Serialize};
use telltale_common::config::Invalid;
use telltale_common::model::Labels;

use crate::alert::{matchers, parse_rfc3339, rfc3339};
use crate::labels::{MatchOp, Matcher};

/// A matcher of a silence (API shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SilenceMatcher {
    /// Label name.
    pub name: String,
    /// Value or regex.
    pub value: String,
    /// `value` is a regex.
    pub is_regex: bool,
    /// Equality (`true`, the default) or inequality.
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

/// A silence as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    /// Identifier.
    pub id: String,
    /// Matchers (all must match).
    pub matchers: Vec<SilenceMatcher>,
    /// Start (ms).
    pub starts_at: i64,
    /// End (ms).
    pub ends_at: i64,
    /// Last change (ms).
    pub updated_at: i64,
    /// Who created it.
    pub created_by: String,
    /// Why.
    pub comment: String,
}

/// A silence as the v2 API receives it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostableSilence {
    /// Set to update an existing silence.
    #[serde(default)]
    pub id: Option<String>,
    /// Matchers.
    pub matchers: Vec<SilenceMatcher>,
    /// RFC 3339 start.
    pub starts_at: String,
    /// RFC 3339 end.
    pub ends_at: String,
    /// Author.
    pub created_by: String,
    /// Comment.
    pub comment: String,
}

impl PostableSilence {
    /// Validates into a silence (without id) at `now`.
    pub fn into_silence(self, now: i64) -> Result<Silence, Invalid> {
        let s = Silence {
            id: self.id.unwrap_or_default(),
            matchers: self.matchers,
            starts_at: parse_rfc3339(&self.starts_at)?,
            ends_at: parse_rfc3339(&self.ends_at)?,
            updated_at: now,
            created_by: self.created_by,
            comment: self.comment,
        };
        s.validate()?;
        // The v2 API's own checks, with its texts.
        if s.starts_at >= s.ends_at {
            return Err("Failed to create silence: start time must be before end time".into());
        }
        if s.ends_at < now {
            return Err("Failed to create silence: end time can't be in the past".into());
        }
        Ok(s)
    }
}

impl Silence {
    /// `pending`, `active` or `expired` at `now`.
    pub fn state(&self, now: i64) -> &'static str {
        if now < self.starts_at {
            "pending"
        } else if now >= self.ends_at {
            "expired"
        } else {
            "active"
        }
    }

    /// The matchers, compiled.
    pub fn compile(&self) -> Result<Vec<Matcher>, Invalid> {
        self.matchers
            .iter()
            .map(|m| {
                let op = match (m.is_regex, m.is_equal) {
                    (false, true) => "=",
                    (false, false) => "!=",
                    (true, true) => "=~",
                    (true, false) => "!~",
                };
                matchers::build(&m.name, op, &m.value)
            })
            .collect()
    }

    /// Checks what Alertmanager checks.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.matchers.is_empty() {
            return Err("at least one matcher required".into());
        }
        for m in &self.matchers {
            if m.name.is_empty()
                || !m
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                || m.name.starts_with(|c: char| c.is_ascii_digit())
            {
                return Err(format!("invalid label name {:?}", m.name).into());
            }
        }
        let compiled = self.compile()?;
        // Alertmanager 0.25 counts an equality with "" and a regex that matches "" as
        // matching the empty string; a negative matcher never does (`a!~"x"` is accepted
        // alone), though it matches an alert without the label.
        let matches_empty = |m: &Matcher| match &m.op {
            MatchOp::Equal(v) => v.is_empty(),
            MatchOp::Regex(r) => r.is_match(""),
            MatchOp::NotEqual(_) | MatchOp::NotRegex(_) => false,
        };
        if compiled.iter().all(matches_empty) {
            return Err("at least one matcher must not match the empty string".into());
        }
        if self.ends_at <= self.starts_at {
            return Err("end time must not be before start time".into());
        }
        if self.created_by.is_empty() {
            return Err("creator information missing".into());
        }
        if self.comment.is_empty() {
            return Err("comment missing".into());
        }
        Ok(())
    }

    /// The v2 API's JSON.
    pub fn to_json(&self, now: i64) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "status": {"state": self.state(now)},
            "updatedAt": rfc3339(self.updated_at),
            "matchers": self.matchers,
            "startsAt": rfc3339(self.starts_at),
            "endsAt": rfc3339(self.ends_at),
            "createdBy": self.created_by,
            "comment": self.comment,
        })
    }
}

/// The silences in effect, compiled.
#[derive(Debug, Default, Clone)]
pub struct Silences {
    list: Vec<(Silence, Vec<Matcher>)>,
}

impl Silences {
    /// From stored silences (ones whose matchers no longer compile are skipped, logged).
    pub fn new(all: impl IntoIterator<Item = Silence>) -> Silences {
        let mut list = Vec::new();
        for s in all {
            match s.compile() {
                Ok(m) => list.push((s, m)),
                Err(e) => tracing::warn!(id = %s.id, error = %e, "skipping a stored silence"),
            }
        }
        Silences { list }
    }

    /// Ids of the silences active at `now` that match `labels`.
    pub fn silenced_by(&self, labels: &Labels, now: i64) -> Vec<String> {
        self.list
            .iter()
            .filter(|(s, m)| s.state(now) == "active" && m.iter().all(|m| m.matches_labels(labels)))
            .map(|(s, _)| s.id.clone())
            .collect()
    }

    /// The earliest future instant at which a silence starts or ends (to re-check groups).
    pub fn next_change(&self, now: i64) -> Option<i64> {
        self.list
            .iter()
            .flat_map(|(s, _)| [s.starts_at, s.ends_at])
            .filter(|t| *t > now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(json: &str) -> Result<Silence, Invalid> {
        serde_json::from_str::<PostableSilence>(json)
            .map_err(|e| Invalid(e.to_string()))?
            .into_silence(0)
    }

    #[test]
    fn silences_validate_and_match_in_their_time_range() {
        let s = post(
            r#"{"matchers":[{"name":"alertname","value":"Disk.*","isRegex":true}],
            "startsAt":"2026-11-25T10:00:00Z","endsAt":"2026-11-25T11:00:00Z",
            "createdBy":"ops","comment":"maintenance"}"#,
        )
        .expect("valid");
        let mut s = s;
        s.id = "a".into();
        let set = Silences::new([s.clone()]);
        let l = Labels::from_pairs([("alertname", "DiskFull")]);
        let t = parse_rfc3339("2026-11-25T10:30:00Z").expect("t");
        assert_eq!(set.silenced_by(&l, t), ["a"]);
        assert!(
            set.silenced_by(&Labels::from_pairs([("alertname", "Cpu")]), t)
                .is_empty()
        );
        assert!(set.silenced_by(&l, t - 3_600_000).is_empty(), "pending");
        assert!(set.silenced_by(&l, s.ends_at).is_empty(), "expired");
        assert_eq!(s.state(t), "active");
        assert_eq!(s.to_json(t)["status"]["state"], "active");
        for bad in [
            r#"{"matchers":[],"startsAt":"2026-11-25T10:00:00Z","endsAt":"2026-11-25T11:00:00Z","createdBy":"a","comment":"b"}"#,
            r#"{"matchers":[{"name":"a","value":".*","isRegex":true}],"startsAt":"2026-11-25T10:00:00Z","endsAt":"2026-11-25T11:00:00Z","createdBy":"a","comment":"b"}"#,
            r#"{"matchers":[{"name":"a","value":"x","isRegex":false}],"startsAt":"2026-11-25T11:00:00Z","endsAt":"2026-11-25T10:00:00Z","createdBy":"a","comment":"b"}"#,
            r#"{"matchers":[{"name":"a","value":"(","isRegex":true}],"startsAt":"2026-11-25T10:00:00Z","endsAt":"2026-11-25T11:00:00Z","createdBy":"a","comment":"b"}"#,
            r#"{"matchers":[{"name":"a","value":"x","isRegex":false}],"startsAt":"2026-11-25T10:00:00Z","endsAt":"2026-11-25T11:00:00Z","createdBy":"","comment":"b"}"#,
        ] {
            assert!(post(bad).is_err(), "{bad}");
        }
    }
}
