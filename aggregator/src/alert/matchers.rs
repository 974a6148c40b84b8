//! Alertmanager's matcher syntax, read as Alertmanager 0.25 reads it (`labels.ParseMatchers`):
//! `name="value"`, `name!=value`, `name=~"re"`, `name!~re`, optionally in braces and
//! comma-separated (`{a="b", c=~"d.*"}`). Names may hold colons; a value may be quoted, and
//! inside it `\"`, `\\` and `\n` are escapes while any other backslash is itself;
//! whitespace around each part is dropped. Regexes are Go's, anchored at both ends.

use telltale_common::config::Invalid;

use crate::labels::{MatchOp, Matcher, anchored_regex};

/// Builds a matcher from its parts.
pub fn build(name: &str, op: &str, value: &str) -> Result<Matcher, Invalid> {
    let anchored = || {
        anchored_regex(value)
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

/// Go's `\s`: what Alertmanager's matcher pattern skips around the parts.
fn go_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0C' | '\r' | ' ')
}

/// Parses one matcher such as `severity="critical"`.
pub fn parse_one(s: &str) -> Result<Matcher, Invalid> {
    let (name, op, value) = parse_parts(s)?;
    build(&name, op, &value)
}

/// One matcher's name, operator and (unescaped) value, unchecked beyond the syntax.
pub fn parse_parts(s: &str) -> Result<(String, &'static str, String), Invalid> {
    let bad = || Invalid::from(format!("bad matcher format: {s}"));
    let t = s.trim_start_matches(go_space);
    let name_end = t
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(t.len());
    let name = &t[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(bad());
    }
    let rest = t[name_end..].trim_start_matches(go_space);
    let op = ["=~", "=", "!=", "!~"]
        .into_iter()
        .find(|op| rest.starts_with(op))
        .ok_or_else(bad)?;
    let raw = rest[op.len()..].trim_matches(go_space);
    let (body, mut expect_quote) = match raw.strip_prefix('"') {
        Some(b) => (b, true),
        None => (raw, false),
    };
    let unescaped_quote = || {
        Invalid::from(format!(
            "matcher value contains unescaped double quote: {raw}"
        ))
    };
    let mut value = String::with_capacity(body.len());
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        if escaped {
            escaped = false;
            match c {
                'n' => value.push('\n'),
                '"' | '\\' => value.push(c),
                other => {
                    value.push('\\');
                    value.push(other);
                }
            }
            continue;
        }
        let last = i + c.len_utf8() == body.len();
        match c {
            '\\' if !last => escaped = true,
            '"' => {
                if !expect_quote || !last {
                    return Err(unescaped_quote());
                }
                expect_quote = false;
            }
            _ => value.push(c),
        }
    }
    if expect_quote {
        return Err(unescaped_quote());
    }
    Ok((name.to_string(), op, value))
}

/// Parses a matcher list: one matcher, or several separated by commas outside quotes,
/// optionally in braces; a trailing comma is allowed, an empty matcher between two commas is
/// not.
pub fn parse_list(s: &str) -> Result<Vec<Matcher>, Invalid> {
    let s = s.strip_prefix('{').unwrap_or(s);
    let s = s.strip_suffix('}').unwrap_or(s);
    let mut tokens = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut escaped) = (false, false);
    for c in s.chars() {
        match c {
            ',' if !quoted => {
                tokens.push(std::mem::take(&mut cur));
                continue;
            }
            ',' => {}
            '"' => {
                if escaped {
                    escaped = false;
                } else {
                    quoted = !quoted;
                }
            }
            '\\' => escaped = !escaped,
            _ => escaped = false,
        }
        cur.push(c);
    }
    let last = cur.trim_matches(char::is_whitespace);
    if !last.is_empty() {
        tokens.push(last.to_string());
    }
    tokens.iter().map(|t| parse_one(t)).collect()
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
        for bad in ["=x", "1a=b", "a", "a=\"b", "a=~\"(\"", "a=b\"c"] {
            assert!(parse_one(bad).is_err(), "{bad}");
        }
        assert!(parse_one(r#"a="x\"y""#).expect("escape").matches("x\"y"));
    }
}
