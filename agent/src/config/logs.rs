//! `[[log]]` sections: log sources, validated into [`crate::sources::logfile::FileSource`].

use std::collections::BTreeMap;
use std::path::Path;

use regex_lite::Regex;
use serde::Deserialize;
use telltale_common::config::ConfigError;
use telltale_common::model::valid_label_name;

use crate::sources::forward::ForwardSource;
use crate::sources::journald::JournaldSource;
use crate::sources::logbatch::{Admission, OverLimit};
use crate::sources::logfile::FileSource;
use crate::sources::logparse::Parser;
use crate::sources::loki::LokiSource;
use crate::sources::syslog::SyslogSource;

/// The validated log sources.
#[derive(Debug, Clone, Default)]
pub struct LogSources {
    /// File sources.
    pub files: Vec<FileSource>,
    /// Syslog listeners.
    pub syslog: Vec<SyslogSource>,
    /// Fluentd forward-protocol listeners.
    pub forward: Vec<ForwardSource>,
    /// The systemd journal.
    pub journald: Vec<JournaldSource>,
    /// Loki push listeners.
    pub loki: Vec<LokiSource>,
}

impl LogSources {
    /// Whether no log source is configured.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
            && self.syslog.is_empty()
            && self.forward.is_empty()
            && self.journald.is_empty()
            && self.loki.is_empty()
    }
}

/// One `[[log]]` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// The source's name: its lines' `source` label.
    pub name: String,
    /// `file`, `syslog`, `forward`, `journald` or `loki`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where a listener listens: `syslog` on UDP and TCP (default `127.0.0.1:1514`),
    /// `forward` on TCP (default `127.0.0.1:24224`, Fluentd's port), `loki` on HTTP (default
    /// `127.0.0.1:3100`, Loki's port).
    pub listen: Option<std::net::SocketAddr>,
    /// Files to tail: paths whose file-name part may hold `*` and `?`.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Files present when the source first starts: `end` (default) or `beginning`.
    pub start_at: Option<String>,
    /// A regex that starts a record; lines that do not match continue the previous one (stack
    /// traces).
    pub multiline_start: Option<String>,
    /// Longest record kept (default `256KiB`); longer ones are cut and counted.
    #[serde(default, deserialize_with = "super::opt_bytes")]
    pub max_line_bytes: Option<u64>,
    /// `none` (default), `json`, `logfmt` or `regex`.
    pub parser: Option<String>,
    /// The regex of `parser = "regex"` (named groups are the fields).
    pub regex: Option<String>,
    /// Static labels of the source's streams.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Parsed fields that become stream labels (keep them few: every value is a stream);
    /// other fields travel as structured metadata.
    #[serde(default)]
    pub label_keys: Vec<String>,
    /// Most lines a second (default: no limit).
    pub max_lines_per_second: Option<u64>,
    /// Most bytes of lines a second (default: no limit).
    #[serde(default, deserialize_with = "super::opt_bytes")]
    pub max_bytes_per_second: Option<u64>,
    /// Past a limit: `drop` (default) or `sample` (keep one line in `sample_one_in`).
    pub over_limit: Option<String>,
    /// With `over_limit = "sample"`: keep one line in this many (default 10).
    pub sample_one_in: Option<u32>,
    /// Counters of the lines matching a regex, by name
    /// (`telltale_agent_log_matches_total{source, counter}`); every line is counted, before
    /// any limit.
    #[serde(default)]
    pub counters: BTreeMap<String, String>,
}

/// Validates the `[[log]]` sections.
pub fn validate(src: &Path, sections: &[LogSection]) -> Result<LogSources, ConfigError> {
    let mut out: Vec<FileSource> = Vec::new();
    let mut syslog: Vec<SyslogSource> = Vec::new();
    let mut forward: Vec<ForwardSource> = Vec::new();
    let mut journald: Vec<JournaldSource> = Vec::new();
    let mut loki: Vec<LokiSource> = Vec::new();
    for (i, s) in sections.iter().enumerate() {
        let at = |k: &str| format!("log[{i}].{k}");
        let bad = |k: &str, m: String| ConfigError::invalid(src, &at(k), m);
        if s.name.is_empty()
            || !s
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(bad(
                "name",
                "use A-Z a-z 0-9 - _ . (it is the `source` label)".into(),
            ));
        }
        if out.iter().any(|o| o.name == s.name)
            || syslog.iter().any(|o| o.name == s.name)
            || forward.iter().any(|o| o.name == s.name)
            || journald.iter().any(|o| o.name == s.name)
            || loki.iter().any(|o| o.name == s.name)
        {
            return Err(bad("name", format!("{:?} is used by two sources", s.name)));
        }
        for k in s.labels.keys() {
            if !valid_label_name(k)
                || ["source", "filename", "level", "instance"].contains(&k.as_str())
            {
                return Err(bad(
                    "labels",
                    format!("{k:?} is not a label name a source may set"),
                ));
            }
        }
        let max_line_bytes = s.max_line_bytes.unwrap_or(256 * 1024);
        if !(64..=16 << 20).contains(&max_line_bytes) {
            return Err(bad(
                "max_line_bytes",
                "must be between 64B and 16MiB".into(),
            ));
        }
        let over = match (s.over_limit.as_deref(), s.sample_one_in) {
            (None | Some("drop"), None) => OverLimit::Drop,
            (Some("sample"), n) => match n.unwrap_or(10) {
                n @ 2.. => OverLimit::Sample(n),
                _ => return Err(bad("sample_one_in", "must be at least 2".into())),
            },
            (None | Some("drop"), Some(_)) => {
                return Err(bad(
                    "sample_one_in",
                    "only used with over_limit = \"sample\"".into(),
                ));
            }
            (Some(other), _) => {
                return Err(bad("over_limit", format!("{other:?}: use drop or sample")));
            }
        };
        let mut counters = Vec::new();
        for (name, re) in &s.counters {
            if !valid_label_name(name) {
                return Err(bad(
                    "counters",
                    format!("{name:?} is not a valid counter name"),
                ));
            }
            let re = Regex::new(re).map_err(|e| bad(&format!("counters.{name}"), e.to_string()))?;
            counters.push((name.clone(), re));
        }
        let admission = Admission {
            max_lines: s.max_lines_per_second.unwrap_or(0),
            max_bytes: s.max_bytes_per_second.unwrap_or(0),
            over,
            counters,
        };
        match s.kind.as_str() {
            "file" => {}
            "journald" => {
                for (key, set) in [
                    ("paths", !s.paths.is_empty()),
                    ("listen", s.listen.is_some()),
                    ("multiline_start", s.multiline_start.is_some()),
                    ("parser", s.parser.is_some()),
                    ("regex", s.regex.is_some()),
                    ("label_keys", !s.label_keys.is_empty()),
                ] {
                    if set {
                        return Err(bad(key, "not used by a journald source".into()));
                    }
                }
                let start_at_end = match s.start_at.as_deref() {
                    None | Some("end") => true,
                    Some("beginning") => false,
                    Some(other) => {
                        return Err(bad("start_at", format!("{other:?}: use end or beginning")));
                    }
                };
                journald.push(JournaldSource {
                    name: s.name.clone(),
                    start_at_end,
                    labels: s
                        .labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    max_line_bytes: max_line_bytes as usize,
                    admission,
                    journalctl: "/usr/bin/journalctl".into(),
                });
                continue;
            }
            "syslog" | "forward" | "loki" => {
                for (key, set) in [
                    ("paths", !s.paths.is_empty()),
                    ("start_at", s.start_at.is_some()),
                    ("multiline_start", s.multiline_start.is_some()),
                    ("parser", s.parser.is_some()),
                    ("regex", s.regex.is_some()),
                    ("label_keys", !s.label_keys.is_empty()),
                ] {
                    if set {
                        return Err(bad(key, format!("not used by a {} source", s.kind)));
                    }
                }
                let port = match s.kind.as_str() {
                    "syslog" => 1514,
                    "forward" => 24224,
                    _ => 3100,
                };
                let listen = s.listen.unwrap_or_else(|| ([127, 0, 0, 1], port).into());
                if listen.port() == 0 {
                    return Err(bad("listen", "needs a port".into()));
                }
                if syslog.iter().any(|o| o.listen == listen)
                    || forward.iter().any(|o| o.listen == listen)
                    || loki.iter().any(|o| o.listen == listen)
                {
                    return Err(bad("listen", format!("{listen} is used by two sources")));
                }
                let labels: Vec<(String, String)> = s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let max_line_bytes = max_line_bytes as usize;
                if s.kind == "syslog" {
                    syslog.push(SyslogSource {
                        name: s.name.clone(),
                        listen,
                        labels,
                        max_line_bytes,
                        admission,
                    });
                } else if s.kind == "loki" {
                    loki.push(LokiSource {
                        name: s.name.clone(),
                        listen,
                        labels,
                        max_line_bytes,
                        admission,
                    });
                } else {
                    forward.push(ForwardSource {
                        name: s.name.clone(),
                        listen,
                        labels,
                        max_line_bytes,
                        admission,
                    });
                }
                continue;
            }
            other => {
                return Err(bad(
                    "type",
                    format!(
                        "{other:?} is not a log source type this agent has (file, syslog, forward, journald, loki)"
                    ),
                ));
            }
        }
        if s.listen.is_some() {
            return Err(bad("listen", "not used by a file source".into()));
        }
        if s.paths.is_empty() {
            return Err(bad("paths", "a file source needs at least one path".into()));
        }
        if let Some(p) = s.paths.iter().find(|p| !Path::new(p).is_absolute()) {
            return Err(bad("paths", format!("{p:?} is not an absolute path")));
        }
        let start_at_end = match s.start_at.as_deref() {
            None | Some("end") => true,
            Some("beginning") => false,
            Some(other) => return Err(bad("start_at", format!("{other:?}: use end or beginning"))),
        };
        let multiline_start = s
            .multiline_start
            .as_deref()
            .map(|r| Regex::new(r).map_err(|e| bad("multiline_start", e.to_string())))
            .transpose()?;
        let parser = match s.parser.as_deref() {
            None | Some("none") => Parser::None,
            Some("json") => Parser::Json,
            Some("logfmt") => Parser::Logfmt,
            Some("regex") => {
                let r = s
                    .regex
                    .as_deref()
                    .ok_or_else(|| bad("regex", "parser = \"regex\" needs a regex".into()))?;
                let re = Regex::new(r).map_err(|e| bad("regex", e.to_string()))?;
                if re.capture_names().flatten().next().is_none() {
                    return Err(bad(
                        "regex",
                        "needs at least one named group (?P<name>...)".into(),
                    ));
                }
                Parser::Regex(re)
            }
            Some(other) => {
                return Err(bad(
                    "parser",
                    format!("{other:?}: use none, json, logfmt or regex"),
                ));
            }
        };
        if s.regex.is_some() && !matches!(parser, Parser::Regex(_)) {
            return Err(bad("regex", "only used with parser = \"regex\"".into()));
        }
        for k in &s.label_keys {
            if !valid_label_name(k)
                || ["source", "filename", "level", "instance"].contains(&k.as_str())
            {
                return Err(bad(
                    "labels",
                    format!("{k:?} is not a label name a source may set"),
                ));
            }
        }
        out.push(FileSource {
            name: s.name.clone(),
            paths: s.paths.clone(),
            start_at_end,
            multiline_start,
            max_line_bytes: max_line_bytes as usize,
            parser,
            labels: s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            label_keys: s.label_keys.clone(),
            admission,
        });
    }
    Ok(LogSources {
        files: out,
        syslog,
        forward,
        journald,
        loki,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<FileSource>, String> {
        parse_all(text).map(|l| l.files)
    }

    fn parse_all(text: &str) -> Result<LogSources, String> {
        #[derive(Deserialize)]
        struct F {
            log: Vec<LogSection>,
        }
        let f: F = toml::from_str(text).map_err(|e| e.to_string())?;
        validate(Path::new("agent.toml"), &f.log).map_err(|e| e.to_string())
    }

    #[test]
    fn errors_name_the_key() {
        let ok = parse(
            "[[log]]\nname = \"app\"\ntype = \"file\"\npaths = [\"/var/log/*.log\"]\nparser = \"regex\"\nregex = '(?P<lvl>\\w+)'\nlabel_keys = [\"lvl\"]\n",
        )
        .expect("valid");
        assert!(ok[0].start_at_end);
        for (text, want) in [
            (
                "name = \"\"\ntype = \"file\"\npaths = [\"/x\"]",
                "log[0].name",
            ),
            ("name = \"a\"\ntype = \"gelf\"", "log[0].type"),
            (
                "name = \"a\"\ntype = \"file\"\npaths = [\"/x\"]\nover_limit = \"shed\"",
                "log[0].over_limit",
            ),
            (
                "name = \"a\"\ntype = \"file\"\npaths = [\"/x\"]\nsample_one_in = 5",
                "log[0].sample_one_in",
            ),
            (
                "name = \"a\"\ntype = \"file\"\npaths = [\"/x\"]\nover_limit = \"sample\"\nsample_one_in = 1",
                "log[0].sample_one_in",
            ),
            (
                "name = \"a\"\ntype = \"file\"\npaths = [\"/x\"]\ncounters = { x = \"(\" }",
                "log[0].counters.x",
            ),
            (
                "name = \"a\"\ntype = \"syslog\"\npaths = [\"/x\"]",
                "log[0].paths",
            ),
            (
                "name = \"a\"\ntype = \"file\"\npaths = [\"/x\"]\nlisten = \"127.0.0.1:1\"",
                "log[0].listen",
            ),
            ("name = \"a\"\ntype = \"file\"", "log[0].paths"),
            (
                "name = \"a\"\ntype = \"file\"\npaths = [\"rel/x.log\"]",
                "log[0].paths",
            ),
            (
                "name = \"a\"\ntype = \"file\"\npaths = [\"/x\"]\nstart_at = \"middle\"",
                "log[0].start_at",
            ),
            (
                "name = \"a\"\ntype = \"file\"\npaths = [\"/x\"]\nmultiline_start = \"(\"",
                "log[0].multiline_start",
            ),
            (
                "name = \"a\"\ntype = \"file\"\npaths = [\"/x\"]\nparser = \"regex\"",
                "log[0].regex",
            ),
            (
                "name = \"a\"\ntype = \"file\"\npaths = [\"/x\"]\nparser = \"regex\"\nregex = \"x\"",
                "named group",
            ),
            (
                "name = \"a\"\ntype = \"file\"\npaths = [\"/x\"]\nparser = \"xml\"",
                "log[0].parser",
            ),
            (
                "name = \"a\"\ntype = \"file\"\npaths = [\"/x\"]\nlabel_keys = [\"level\"]",
                "log[0].labels",
            ),
            (
                "name = \"a\"\ntype = \"file\"\npaths = [\"/x\"]\nmax_line_bytes = 10",
                "log[0].max_line_bytes",
            ),
        ] {
            let e = parse(&format!("[[log]]\n{text}\n")).expect_err(text);
            assert!(e.contains(want), "{text}: {e}");
        }
        let e = parse(
            "[[log]]\nname = \"a\"\ntype = \"file\"\npaths = [\"/x\"]\n[[log]]\nname = \"a\"\ntype = \"file\"\npaths = [\"/y\"]\n",
        )
        .expect_err("twice");
        assert!(e.contains("log[1].name"), "{e}");
    }
}

#[cfg(test)]
mod syslog_tests {
    #[test]
    fn a_syslog_source_defaults_to_a_high_loopback_port() {
        #[derive(serde::Deserialize)]
        struct F {
            log: Vec<super::LogSection>,
        }
        let f: F = toml::from_str("[[log]]\nname = \"sys\"\ntype = \"syslog\"\n").expect("toml");
        let l = super::validate(std::path::Path::new("agent.toml"), &f.log).expect("valid");
        assert_eq!(l.syslog[0].listen, ([127, 0, 0, 1], 1514).into());
    }
}
