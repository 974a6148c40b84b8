//! Rule files (YAML), validated into runtime [`Group`]s: Prometheus rule files, whose
//! expressions are PromQL, and Loki ruler files, whose expressions are LogQL metric queries.
//!
//! Both share Prometheus' `rulefmt` shape: `groups:` of `name`, `interval`, `limit`,
//! `query_offset`, `labels` and `rules:`; each rule either `record` or `alert`, with `expr`,
//! `for`, `keep_firing_for`, `labels`, `annotations`. Validation follows `promtool check rules`:
//! every problem names the file, the group and the rule. Which language a file holds comes from
//! where it is configured (`[rules] files` or `[logs] rule_files`), never from its text: many
//! LogQL expressions also parse as PromQL (`sum(rate(x[5m]))`) and would mean something else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use promql_parser::parser::Expr;
use serde::Deserialize;
use telltale_common::config::Invalid;
use telltale_common::model::{valid_label_name, valid_metric_name};

use crate::alert::prom_duration;
use crate::alert::template::Template;

/// A rule file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    groups: Vec<GroupSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupSpec {
    name: String,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    query_offset: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    rules: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    #[serde(default)]
    record: Option<String>,
    #[serde(default)]
    alert: Option<String>,
    #[serde(default)]
    expr: Option<ExprText>,
    #[serde(default, rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    keep_firing_for: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// `expr:` may be written as a number (`expr: 1`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ExprText {
    Text(String),
    Int(i64),
    Float(f64),
}

impl ExprText {
    fn text(&self) -> String {
        match self {
            ExprText::Text(s) => s.clone(),
            ExprText::Int(i) => i.to_string(),
            ExprText::Float(f) => f.to_string(),
        }
    }
}

/// The query language of a rule file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Prometheus rules over the metrics.
    PromQL,
    /// Loki ruler rules over the logs.
    LogQL,
}

/// A rule's parsed expression.
#[derive(Debug, Clone)]
pub enum RuleExpr {
    /// PromQL.
    Prom(Expr),
    /// A LogQL metric query.
    Log(crate::logs::logql::MetricExpr),
}

/// A loaded rule group.
#[derive(Debug, Clone)]
pub struct Group {
    /// The language of its file.
    pub lang: Lang,
    /// Group name (unique within its file).
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// Evaluation interval (the group's, else the default).
    pub interval: Duration,
    /// Evaluate this far in the past (to wait for late data).
    pub query_offset: Duration,
    /// Most series (recording) or alerts (alerting) one rule may produce; 0 = no limit.
    pub limit: u64,
    /// The rules, evaluated in order.
    pub rules: Vec<Rule>,
}

/// One rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The recorded metric or the alert name.
    pub name: String,
    /// The expression as written (trimmed).
    pub query: String,
    /// The parsed expression.
    pub expr: RuleExpr,
    /// Labels added to results (group labels first, the rule's own win); values are templates.
    pub labels: Vec<(String, Template)>,
    /// Alerting or recording.
    pub kind: RuleKind,
}

/// What a rule does with its result.
#[derive(Debug, Clone)]
pub enum RuleKind {
    /// Stores the result under a new metric name.
    Recording,
    /// Keeps alerts.
    Alerting {
        /// How long a result must hold before the alert fires.
        hold: Duration,
        /// How long an alert keeps firing after the result went away.
        keep_firing_for: Duration,
        /// Annotation templates.
        annotations: Vec<(String, Template)>,
    },
}

/// A problem in a rule file.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct RuleFileError {
    /// The file.
    pub file: String,
    /// What is wrong, naming the group and rule.
    pub message: String,
}

/// Parses and validates one rule file's text.
pub fn parse(
    file: &Path,
    text: &str,
    default_interval: Duration,
    lang: Lang,
) -> Result<Vec<Group>, RuleFileError> {
    let fname = file.display().to_string();
    let err = |message: String| RuleFileError {
        file: fname.clone(),
        message,
    };
    let spec: FileSpec = serde_saphyr::from_str(text).map_err(|e| err(e.to_string()))?;
    let mut names = std::collections::HashSet::new();
    let mut groups = Vec::new();
    for g in spec.groups {
        if g.name.is_empty() {
            return Err(err("group name must not be empty".into()));
        }
        if !names.insert(g.name.clone()) {
            return Err(err(format!("{:?}: repeated in the same file", g.name)));
        }
        let gname = g.name.clone();
        let gerr = |m: String| err(format!("group {gname:?}: {m}"));
        let interval = match &g.interval {
            Some(s) => prom_duration(s).map_err(|e| gerr(e.0))?,
            None => default_interval,
        };
        if interval.is_zero() {
            return Err(gerr("interval must be greater than zero".into()));
        }
        let query_offset = match &g.query_offset {
            Some(s) => prom_duration(s).map_err(|e| gerr(e.0))?,
            None => Duration::ZERO,
        };
        for k in g.labels.keys() {
            if !valid_label_name(k) {
                return Err(gerr(format!("invalid label name {k:?}")));
            }
        }
        let mut rules = Vec::new();
        for (i, r) in g.rules.into_iter().enumerate() {
            let rname = r.alert.clone().or(r.record.clone()).unwrap_or_default();
            let rerr = |m: String| gerr(format!("rule {} ({rname:?}): {m}", i + 1));
            rules.push(rule(r, &g.labels, lang).map_err(rerr)?);
        }
        groups.push(Group {
            lang,
            name: g.name,
            file: file.to_path_buf(),
            interval,
            query_offset,
            limit: g.limit.unwrap_or(0),
            rules,
        });
    }
    Ok(groups)
}

fn templates(m: &BTreeMap<String, String>, what: &str) -> Result<Vec<(String, Template)>, String> {
    m.iter()
        .map(|(k, v)| {
            Template::parse(v)
                .map(|t| (k.clone(), t))
                .map_err(|e| format!("{what} {k:?}: {e}"))
        })
        .collect()
}

fn rule(r: RuleSpec, group_labels: &BTreeMap<String, String>, lang: Lang) -> Result<Rule, String> {
    let query = r
        .expr
        .as_ref()
        .map(|e| e.text().trim().to_string())
        .unwrap_or_default();
    if query.is_empty() {
        return Err("field 'expr' must be set in rule".into());
    }
    let expr = match lang {
        Lang::PromQL => RuleExpr::Prom(
            crate::metrics::promql::limits::parse(&query)
                .map_err(|e| format!("could not parse expression: {e}"))?,
        ),
        Lang::LogQL => match crate::logs::logql::parse(&query)
            .map_err(|e| format!("could not parse expression: {e}"))?
        {
            crate::logs::logql::Query::Metric(m) => RuleExpr::Log(m),
            crate::logs::logql::Query::Log(_) => {
                return Err(
                    "a log query returns lines, not numbers: use a metric query such as count_over_time({...}[5m]) > 0"
                        .into(),
                );
            }
        },
    };
    let mut all_labels = group_labels.clone();
    all_labels.extend(r.labels.clone());
    for k in all_labels.keys() {
        if !valid_label_name(k) {
            return Err(format!("invalid label name {k:?}"));
        }
        if k == "__name__" {
            return Err("invalid label name: __name__".into());
        }
    }
    let labels = templates(&all_labels, "label")?;
    match (r.record, r.alert) {
        (Some(_), Some(_)) => Err("only one of 'record' and 'alert' must be set".into()),
        (None, None) => Err("one of 'record' or 'alert' must be set".into()),
        (Some(name), None) => {
            if !valid_metric_name(&name) {
                return Err(format!("invalid recording rule name: {name}"));
            }
            if r.for_.is_some() || r.keep_firing_for.is_some() {
                return Err("invalid field 'for' or 'keep_firing_for' in recording rule".into());
            }
            if !r.annotations.is_empty() {
                return Err("invalid field 'annotations' in recording rule".into());
            }
            Ok(Rule {
                name,
                query,
                expr,
                labels,
                kind: RuleKind::Recording,
            })
        }
        (None, Some(name)) => {
            if name.is_empty() {
                return Err("alert name must not be empty".into());
            }
            let hold = r
                .for_
                .as_deref()
                .map(prom_duration)
                .transpose()?
                .unwrap_or_default();
            let keep_firing_for = r
                .keep_firing_for
                .as_deref()
                .map(prom_duration)
                .transpose()?
                .unwrap_or_default();
            for k in r.annotations.keys() {
                if !valid_label_name(k) {
                    return Err(format!("invalid annotation name {k:?}"));
                }
            }
            Ok(Rule {
                name,
                query,
                expr,
                labels,
                kind: RuleKind::Alerting {
                    hold,
                    keep_firing_for,
                    annotations: templates(&r.annotations, "annotation")?,
                },
            })
        }
    }
}

/// Reads and parses a rule file.
pub fn load(
    file: &Path,
    default_interval: Duration,
    lang: Lang,
) -> Result<Vec<Group>, RuleFileError> {
    let text = std::fs::read_to_string(file).map_err(|e| RuleFileError {
        file: file.display().to_string(),
        message: format!("cannot read: {e}"),
    })?;
    parse(file, &text, default_interval, lang)
}

/// Expands a pattern whose file-name part may hold `*` and `?` (like Prometheus'
/// `rule_files`); a pattern without wildcards names one file, which must exist.
pub fn expand_glob(pattern: &str) -> Result<Vec<PathBuf>, Invalid> {
    let p = Path::new(pattern);
    let name = p
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("rule pattern {pattern:?} names no file"))?;
    if !name.contains(['*', '?']) {
        if !p.is_file() {
            return Err(format!("rule file {pattern:?} does not exist").into());
        }
        return Ok(vec![p.to_path_buf()]);
    }
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if dir.to_string_lossy().contains(['*', '?']) {
        return Err(format!(
            "rule pattern {pattern:?}: wildcards are supported in the file name only"
        )
        .into());
    }
    let re = format!(
        "^{}$",
        regex::escape(name).replace("\\*", ".*").replace("\\?", ".")
    );
    let re = regex::Regex::new(&re).map_err(|e| e.to_string())?;
    let rd = std::fs::read_dir(&dir).map_err(|e| format!("rule pattern {pattern:?}: {e}"))?;
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(|n| re.is_match(n)))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEF: Duration = Duration::from_secs(60);

    fn parse_str(text: &str) -> Result<Vec<Group>, RuleFileError> {
        parse(Path::new("t.yml"), text, DEF, Lang::PromQL)
    }

    #[test]
    fn a_loki_ruler_file_loads_as_logql_and_log_queries_are_refused() {
        let text = r#"
groups:
  - name: app-errors
    rules:
      - alert: HighErrorRate
        expr: sum by (app) (rate({app="api"} |= "error" [5m])) / sum by (app) (rate({app="api"}[5m])) > 0.05
        for: 10m
        labels: {severity: page}
        annotations: {summary: "{{ $labels.app }} logs {{ $value }} errors per line"}
      - record: app:log_lines:rate5m
        expr: sum by (app) (rate({app=~".+"}[5m]))
"#;
        let g = parse(Path::new("loki.yml"), text, DEF, Lang::LogQL).expect("loads");
        assert_eq!(g[0].lang, Lang::LogQL);
        assert!(matches!(g[0].rules[0].expr, RuleExpr::Log(_)));
        assert!(matches!(g[0].rules[1].expr, RuleExpr::Log(_)));
        // The same text is not a Prometheus rule file: LogQL is not PromQL.
        assert!(parse_str(text).is_err());
        let e = parse(
            Path::new("loki.yml"),
            "groups: [{name: a, rules: [{alert: X, expr: '{app=\"api\"} |= \"error\"'}]}]",
            DEF,
            Lang::LogQL,
        )
        .expect_err("log query");
        assert!(e.to_string().contains("metric query"), "{e}");
        assert!(e.to_string().contains("group \"a\""), "{e}");
    }

    #[test]
    fn a_prometheus_rule_file_loads() {
        let g = parse_str(
            r#"
groups:
  - name: node
    interval: 15s
    labels: {team: infra}
    rules:
      - record: instance:node_cpus:count
        expr: count(node_cpu_seconds_total{mode="idle"}) without (cpu,mode)
      - alert: HostDown
        expr: up == 0
        for: 1m
        keep_firing_for: 30s
        labels:
          severity: critical
        annotations:
          summary: "{{ $labels.instance }} is down ({{ $value }})"
  - name: defaults
    rules:
      - alert: Always
        expr: 1
"#,
        )
        .expect("loads");
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].interval, Duration::from_secs(15));
        assert_eq!(g[1].interval, DEF);
        assert_eq!(prom_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(prom_duration("0"), Ok(Duration::ZERO));
        assert_eq!(prom_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(prom_duration("0x").is_err());
        assert_eq!(g[0].rules.len(), 2);
        match &g[0].rules[1].kind {
            RuleKind::Alerting {
                hold,
                keep_firing_for,
                annotations,
            } => {
                assert_eq!(*hold, Duration::from_secs(60));
                assert_eq!(*keep_firing_for, Duration::from_secs(30));
                assert_eq!(annotations[0].0, "summary");
            }
            RuleKind::Recording => panic!("alerting rule expected"),
        }
        let names: Vec<&str> = g[0].rules[1].labels.iter().map(|l| l.0.as_str()).collect();
        assert_eq!(names, ["severity", "team"]);
    }

    #[test]
    fn problems_name_file_group_and_rule() {
        let cases = [
            (
                "groups: [{name: a, rules: [{alert: X, expr: 'up ==' }]}]",
                "could not parse expression",
            ),
            (
                "groups: [{name: a, rules: [{record: 'bad name', expr: up}]}]",
                "invalid recording rule name",
            ),
            (
                "groups: [{name: a, rules: [{record: r, alert: X, expr: up}]}]",
                "only one of",
            ),
            (
                "groups: [{name: a, rules: [{expr: up}]}]",
                "one of 'record' or 'alert'",
            ),
            (
                "groups: [{name: a, rules: [{alert: X}]}]",
                "'expr' must be set",
            ),
            (
                "groups: [{name: a, rules: [{record: r, expr: up, for: 1m}]}]",
                "recording rule",
            ),
            (
                "groups: [{name: a, rules: []}, {name: a, rules: []}]",
                "repeated",
            ),
            (
                "groups: [{name: a, interval: 5x, rules: []}]",
                "invalid duration",
            ),
            (
                "groups: [{name: a, rules: [{alert: X, expr: up, annotations: {s: '{{ nope }}'}}]}]",
                "annotation \"s\"",
            ),
            (
                "groups: [{name: a, rules: [{alert: X, expr: up, bogus: 1}]}]",
                "bogus",
            ),
        ];
        for (text, want) in cases {
            let e = parse_str(text).expect_err(text).to_string();
            assert!(e.starts_with("t.yml: "), "{e}");
            assert!(e.contains(want), "{text}: {e}");
        }
        let e = parse_str("groups: [{name: g1, rules: [{alert: X, expr: 'up =='}]}]")
            .expect_err("bad")
            .to_string();
        assert!(e.contains("group \"g1\": rule 1 (\"X\")"), "{e}");
    }
}
