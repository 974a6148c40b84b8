//! Alertmanager's matcher syntax: `name="value"`, `name!=value`, `name=~"re"`, `name!~re`,
//! optionally in braces and comma-separated (`{a="b", c=~"d.*"}`); values may be quoted (with
//! Go escapes) or bare. Regexes are anchored at both ends, as in Alertmanager.

use telltale_common::config::Invalid;

use crate::labels::{MatchOp, Matcher};

/// Builds a matcher from its parts.
pub fn build(name: &str, op: &str, value: &str) -> Result<Matcher, Invalid> {
    let anchored = || {
        regex::Regex::new(&format!("^(?:{value})$"))
            .map_err(|e| format!("invalid regex {value:?} in matcher for {name:?}: {e}"))
    };
    let op = match op {
        "=" => MatchOp::Equal(value.to_string()),
        "!=" => MatchOp::NotEqual(value.to_string()),
        "=~" => MatchOp::Regex(anchored()?),
        "!~" => MatchOp::NotRegex(anchored()?),
        other => return Err(format!("unknown matcher operator {other:?}").into()),
    };
    Ok(Matcher {
        name: name.to_string(),
        op,
    })
}

/// Parses one matcher such as `severity="critical"`.
pub fn parse_one(s: &str) -> Result<Matcher, Invalid> {
    let t = s.trim();
    let name_end = t
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(t.len());
    let name = &t[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("bad matcher {s:?}: expected a label name first").into());
    }
    let rest = t[name_end..].trim_start();
    let op = ["=~", "!~", "!=", "="]
        .into_iter()
        .find(|op| rest.starts_with(op))
        .ok_or_else(|| format!("bad matcher {s:?}: expected one of = != =~ !~ after {name:?}"))?;
    let raw = rest[op.len()..].trim();
    let value = if let Some(q) = raw.strip_prefix('"') {
        let inner = q
            .strip_suffix('"')
            .ok_or_else(|| format!("bad matcher {s:?}: unterminated quoted value"))?;
        unquote(inner).ok_or_else(|| format!("bad matcher {s:?}: bad escape in value"))?
    } else {
        if raw.contains('"') {
            return Err(format!("bad matcher {s:?}: stray quote in value").into());
        }
        raw.to_string()
    };
    build(name, op, &value)
}

fn unquote(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        } else if c == '"' {
            return None;
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Parses a matcher list: one matcher, or several separated by commas, optionally in braces.
pub fn parse_list(s: &str) -> Result<Vec<Matcher>, Invalid> {
    let t = s.trim();
    let t = match t.strip_prefix('{') {
        Some(inner) => inner
            .strip_suffix('}')
            .ok_or_else(|| format!("bad matchers {s:?}: missing closing brace"))?,
        None => t,
    };
    split_outside_quotes(t)
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| parse_one(&p))
        .collect()
}

fn split_outside_quotes(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escape = false;
    for c in s.chars() {
        if escape {
            cur.push(c);
            escape = false;
            continue;
        }
        match c {
            '\\' if quoted => {
                cur.push(c);
                escape = true;
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// The matcher as text (for the API and logs).
pub fn to_text(m: &Matcher) -> String {
    let (op, v) = match &m.op {
        MatchOp::Equal(v) => ("=", v.clone()),
        MatchOp::NotEqual(v) => ("!=", v.clone()),
        MatchOp::Regex(r) => ("=~", strip_anchor(r.as_str())),
        MatchOp::NotRegex(r) => ("!~", strip_anchor(r.as_str())),
    };
    format!("{}{op}{v:?}", m.name)
}

/// The regex as written, without the anchoring this module adds.
pub fn strip_anchor(r: &str) -> String {
    r.strip_prefix("^(?:")
        .and_then(|x| x.strip_suffix(")$"))
        .unwrap_or(r)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use telltale_common::model::Labels;

    #[test]
    fn alertmanager_matcher_forms() {
        let l = Labels::from_pairs([("severity", "critical"), ("service", "db-main")]);
        for (m, want) in [
            ("severity=\"critical\"", true),
            ("severity = critical", true),
            ("severity!=critical", false),
            ("service=~\"db-.*\"", true),
            ("service=~db", false),
            ("service!~\"web.*\"", true),
            ("team=\"\"", true),
            ("team=~\".+\"", false),
        ] {
            assert_eq!(parse_one(m).expect(m).matches_labels(&l), want, "{m}");
        }
        let list = parse_list("{severity=\"critical\", service=~\"db,x|db-.*\"}").expect("list");
        assert_eq!(list.len(), 2);
        assert!(list.iter().all(|m| m.matches_labels(&l)));
        assert_eq!(to_text(&list[1]), "service=~\"db,x|db-.*\"");
        for bad in ["=x", "1a=b", "a", "a=\"b", "a=~\"(\"", "a=b\"c"] {
            assert!(parse_one(bad).is_err(), "{bad}");
        }
        assert!(parse_one(r#"a="x\"y""#).expect("escape").matches("x\"y"));
    }
}
