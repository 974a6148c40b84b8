//! The query parameters of Alertmanager's v2 API, read as Alertmanager 0.25 reads them —
//! what `amtool alert query`, `amtool silence query` and Grafana's Alertmanager data source
//! send: `GET /api/v2/alerts?active=&silenced=&inhibited=&filter=&receiver=` and
//! `GET /api/v2/silences?filter=`.

use telltale_common::config::Invalid;
use telltale_common::model::Labels;

use super::silence::Silence;
use crate::alert::matchers;
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

    /// Whether an alert routed to `receivers`, with `labels`, silenced and inhibited as
    /// given, is listed.
    pub fn lists(
        &self,
        receivers: &[&str],
        labels: &Labels,
        silenced: bool,
        inhibited: bool,
    ) -> bool {
        if let Some(r) = &self.receiver
            && !receivers.iter().any(|x| r.is_match(x))
        {
            return false;
        }
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
        let lists = |s: &str| q(s).lists(&[], &l, false, false);
        assert!(lists("b=\"\""), "absent label, = \"\"");
        assert!(lists("a!=\"\""), "present label, != \"\"");
        assert!(!lists("a=\"\""), "present label, = \"\"");
        assert!(lists("b!~\"y\""));
        assert!(!lists("a=~\"y\""));
    }
}
