//! What a log line says beyond its text: fields parsed from it (JSON, logfmt or a regex with
//! named groups), its level, and which fields become stream labels.
//!
//! Labels name a stream, so they must stay few: only the source's static labels, the fields
//! listed in `label_keys`, and `level` (normalised to `error`, `warn`, `info`, `debug` or
//! `unknown`). Every other parsed field travels as structured metadata with the line.

use regex_lite::Regex;

/// How a source parses its lines.
#[derive(Debug, Clone)]
pub enum Parser {
    /// Text only (the level is still detected).
    None,
    /// A JSON object per line (nested keys joined with `_`).
    Json,
    /// logfmt.
    Logfmt,
    /// A regex whose named groups are the fields.
    Regex(Regex),
}

/// Most metadata fields kept per line.
const MAX_FIELDS: usize = 32;
/// Longest metadata value kept (longer ones are cut).
const MAX_VALUE: usize = 1024;

/// Adds `v`'s fields under `key` (nested keys joined with `_`), taking the parsed strings
/// rather than copying them.
fn flatten(key: String, v: serde_json::Value, out: &mut Vec<(String, String)>) {
    use serde_json::Value;
    if out.len() >= MAX_FIELDS {
        return;
    }
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let key = if key.is_empty() {
                    k
                } else {
                    format!("{key}_{k}")
                };
                flatten(key, x, out);
            }
        }
        Value::Array(_) | Value::Null => {}
        Value::String(s) => out.push((key, s)),
        other => out.push((key, other.to_string())),
    }
}

/// The fields of `line` under `parser` (empty when it does not parse).
pub fn fields(parser: &Parser, line: &str) -> Vec<(String, String)> {
    let mut out = match parser {
        Parser::None => Vec::new(),
        Parser::Json => match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v @ serde_json::Value::Object(_)) => {
                let mut out = Vec::new();
                flatten(String::new(), v, &mut out);
                out
            }
            _ => Vec::new(),
        },
        Parser::Logfmt => telltale_common::logfmt::parse(line).unwrap_or_default(),
        Parser::Regex(re) => match re.captures(line) {
            Some(c) => re
                .capture_names()
                .flatten()
                .filter_map(|n| c.name(n).map(|m| (n.to_string(), m.as_str().to_string())))
                .collect(),
            None => Vec::new(),
        },
    };
    out.truncate(MAX_FIELDS);
    for (k, v) in out.iter_mut() {
        if !telltale_common::model::valid_label_name(k) {
            *k = telltale_common::model::label_name_from(k);
        }
        super::logbatch::cut_line(v, MAX_VALUE);
        // The spellings of a trace or span id loggers use (`traceId`, `traceID`,
        // `trace.id` → `trace_id` after sanitising, `dd.trace_id`...) become `trace_id` and
        // `span_id`, in lower case, so a line links to its trace.
        let squashed: String = k
            .chars()
            .filter(|c| *c != '_')
            .flat_map(char::to_lowercase)
            .collect();
        let canonical = match squashed.trim_start_matches("dd") {
            "traceid" => "trace_id",
            "spanid" => "span_id",
            _ => continue,
        };
        if k != canonical {
            *k = canonical.to_string();
        }
        if v.bytes().any(|b| b.is_ascii_uppercase()) && v.bytes().all(|b| b.is_ascii_hexdigit()) {
            *v = v.to_ascii_lowercase();
        }
    }
    out
}

/// A level word normalised; `None` when it is not one.
fn level_word(w: &str) -> Option<&'static str> {
    const WORDS: [(&str, &[&str]); 4] = [
        (
            "error",
            &[
                "error",
                "err",
                "eror",
                "fatal",
                "critical",
                "crit",
                "emerg",
                "emergency",
                "alert",
                "panic",
                "severe",
                "e",
            ],
        ),
        ("warn", &["warn", "warning", "w"]),
        (
            "info",
            &["info", "information", "informational", "notice", "i"],
        ),
        ("debug", &["debug", "trace", "dbug", "d"]),
    ];
    // Compared without case and without a lowered copy: this runs on several words of
    // every line.
    WORDS
        .iter()
        .find(|(_, words)| words.iter().any(|x| x.eq_ignore_ascii_case(w)))
        .map(|(level, _)| *level)
}

/// The line's level: from a parsed `level`, `lvl`, `severity` or `loglevel` field, else the
/// first level word among the line's first 120 bytes (`ERROR`, `[warn]`, `level=info`...),
/// else `unknown`.
pub fn level(fields: &[(String, String)], line: &str) -> &'static str {
    for key in ["level", "lvl", "severity", "loglevel", "log_level"] {
        if let Some((_, v)) = fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(key))
            && let Some(l) = level_word(v.trim())
        {
            return l;
        }
    }
    let mut end = line.len().min(120);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end]
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| w.len() >= 4)
        .find_map(level_word)
        .unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_and_span_ids_get_one_name_whatever_the_logger_called_them() {
        let id = "4BF92F3577B34DA6A3CE929D0E0E4736";
        for line in [
            format!(r#"{{"traceId":"{id}","spanId":"00F067AA0BA902B7","msg":"x"}}"#),
            format!(r#"{{"trace":{{"id":"{id}"}},"span":{{"id":"00F067AA0BA902B7"}}}}"#),
            format!(r#"{{"dd.trace_id":"{id}","dd.span_id":"00F067AA0BA902B7"}}"#),
            format!(r#"{{"traceID":"{id}","span_id":"00F067AA0BA902B7"}}"#),
        ] {
            let f = fields(&Parser::Json, &line);
            assert!(
                f.contains(&("trace_id".into(), id.to_lowercase())),
                "{line}: {f:?}"
            );
            assert!(
                f.contains(&("span_id".into(), "00f067aa0ba902b7".into())),
                "{line}: {f:?}"
            );
        }
        let f = fields(&Parser::Logfmt, &format!("msg=ok trace_id={id} user=Bob"));
        assert!(f.contains(&("trace_id".into(), id.to_lowercase())));
        assert!(
            f.contains(&("user".into(), "Bob".into())),
            "other values keep their case"
        );
        // Not an id: left alone.
        let f = fields(&Parser::Logfmt, "tracer=on traceid=Not-Hex");
        assert!(f.contains(&("tracer".into(), "on".into())));
        assert!(f.contains(&("trace_id".into(), "Not-Hex".into())));
    }

    #[test]
    fn fields_and_levels() {
        let j = fields(
            &Parser::Json,
            r#"{"level":"WARNING","req":{"id":7,"path":"/a"},"tags":[1]}"#,
        );
        assert_eq!(
            j,
            vec![
                ("level".to_string(), "WARNING".to_string()),
                ("req_id".to_string(), "7".to_string()),
                ("req_path".to_string(), "/a".to_string()),
            ]
        );
        assert_eq!(level(&j, ""), "warn");
        let l = fields(&Parser::Logfmt, "lvl=eror msg=boom");
        assert_eq!(level(&l, ""), "error");
        let re = Regex::new(r"^(?P<ip>\S+) (?P<code>\d+)").expect("re");
        assert_eq!(
            fields(&Parser::Regex(re), "10.0.0.1 503 x"),
            vec![
                ("ip".to_string(), "10.0.0.1".to_string()),
                ("code".to_string(), "503".to_string())
            ]
        );
        assert_eq!(level(&[], "2026-12-02 10:00:01 [ERROR] disk full"), "error");
        assert_eq!(
            level(&[], "Dec  2 10:00:01 host sshd[1]: Accepted key"),
            "unknown"
        );
        assert_eq!(level(&[], "INFO starting"), "info");
        assert!(fields(&Parser::Json, "not json").is_empty());
        let many: String = format!(
            "{{{}}}",
            (0..100)
                .map(|i| format!("\"k{i}\":{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(fields(&Parser::Json, &many).len(), MAX_FIELDS);
    }
}
