//! The Prometheus text exposition format (0.0.4) and OpenMetrics text, as scrape targets serve
//! them and as node_exporter's textfile collector reads `*.prom` files.
//!
//! The parser is line-oriented and never panics: a line that does not parse is reported with
//! its line number and the caller decides (a scrape fails as a whole like Prometheus does; a
//! textfile is skipped and counted, like node_exporter). `# TYPE` lines are kept so callers can
//! tell counters from gauges; exemplars (after ` # ` in OpenMetrics) are ignored.

use telltale_common::model::valid_label_name;

/// Label pairs in the order written.
pub type Pairs = Vec<(String, String)>;

/// What [`parse`] returns: the samples and `(family, type)` for each `# TYPE` line.
pub type Parsed = (Vec<Line>, Pairs);

/// One parsed sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Metric name.
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
    /// The timestamp in milliseconds, when the line had one.
    pub t_ms: Option<i64>,
}

/// A parse error: the 1-based line and what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Which dialect: OpenMetrics writes timestamps in seconds and ends with `# EOF`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Prometheus text format 0.0.4 (timestamps in ms).
    Text,
    /// OpenMetrics 1.0 text (timestamps in seconds).
    OpenMetrics,
}

impl Dialect {
    /// The dialect a `Content-Type` header names.
    pub fn from_content_type(ct: &str) -> Dialect {
        if ct.contains("application/openmetrics-text") {
            Dialect::OpenMetrics
        } else {
            Dialect::Text
        }
    }
}

/// Limits enforced while an exposition is parsed (Prometheus' scrape-config names): the
/// parse fails as soon as one is passed, so a hostile input never costs more than the limits.
/// Zero means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most samples.
    pub sample_limit: usize,
    /// Most labels on one sample (the metric name not counted).
    pub label_limit: usize,
    /// Longest label name (bytes).
    pub label_name_length_limit: usize,
    /// Longest label value (bytes).
    pub label_value_length_limit: usize,
}

impl Limits {
    /// No limits.
    pub const NONE: Limits = Limits {
        sample_limit: 0,
        label_limit: 0,
        label_name_length_limit: 0,
        label_value_length_limit: 0,
    };

    /// The defaults for scrape jobs and textfiles: far above what exporters produce (node_exporter
    /// writes about 1,500 samples), low enough to keep an agent within tens of MiB.
    pub const DEFAULT: Limits = Limits {
        sample_limit: 20_000,
        label_limit: 64,
        label_name_length_limit: 256,
        label_value_length_limit: 4096,
    };
}

/// Parses a whole exposition. Returns the samples and the `# TYPE` of each family.
pub fn parse(text: &str, dialect: Dialect) -> Result<Parsed, ParseError> {
    parse_limited(text, dialect, &Limits::NONE)
}

/// [`parse`] within `limits`, checked line by line as it goes.
pub fn parse_limited(text: &str, dialect: Dialect, limits: &Limits) -> Result<Parsed, ParseError> {
    let mut out = Vec::new();
    let mut types = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let err = |m: String| ParseError {
            line: i + 1,
            message: m,
        };
        let line = raw.trim_start();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut f = rest.split_whitespace();
            match f.next() {
                Some("TYPE") => {
                    let (Some(n), Some(t)) = (f.next(), f.next()) else {
                        return Err(err("TYPE needs a metric name and a type".into()));
                    };
                    types.push((n.to_string(), t.to_string()));
                }
                Some("EOF") => break,
                _ => {}
            }
            continue;
        }
        // The label limits are checked as each label is read (`parse_labels`).
        if limits.sample_limit > 0 && out.len() >= limits.sample_limit {
            return Err(err(format!(
                "sample_limit exceeded: more than {} samples",
                limits.sample_limit
            )));
        }
        out.push(parse_line(line, dialect, limits).map_err(err)?);
    }
    Ok((out, types))
}

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

/// Parses a value as the exposition formats write it (`NaN`, `+Inf`, `-Inf`, floats).
pub fn parse_value(s: &str) -> Option<f64> {
    match s {
        "NaN" | "nan" => Some(f64::NAN),
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse::<f64>().ok().filter(|v| !v.is_nan()),
    }
}

fn parse_line(line: &str, dialect: Dialect, limits: &Limits) -> Result<Line, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_ascii_whitespace())
        .ok_or_else(|| format!("{line:?} has no value"))?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (l, r) = parse_labels(after, limits)?;
        labels = l;
        rest = r;
    }
    // Exemplars follow " # " in OpenMetrics.
    let rest = rest.split(" # ").next().unwrap_or("");
    let mut f = rest.split_ascii_whitespace();
    let v = f.next().ok_or_else(|| format!("{name}: missing value"))?;
    let value = parse_value(v).ok_or_else(|| format!("{name}: invalid value {v:?}"))?;
    let t_ms = match f.next() {
        None => None,
        Some(t) => Some(match dialect {
            Dialect::Text => t
                .parse::<i64>()
                .map_err(|_| format!("{name}: invalid timestamp {t:?}"))?,
            Dialect::OpenMetrics => {
                let s = t
                    .parse::<f64>()
                    .map_err(|_| format!("{name}: invalid timestamp {t:?}"))?;
                (s * 1000.0).round() as i64
            }
        }),
    };
    if let Some(extra) = f.next() {
        return Err(format!("{name}: unexpected {extra:?} after the timestamp"));
    }
    Ok(Line {
        name: name.to_string(),
        labels,
        value,
        t_ms,
    })
}

/// Parses `name="value",...}` and returns the labels and what follows the `}`.
/// The label limits are checked as each label is read, so a line of a million labels costs
/// no more than the limit.
fn parse_labels<'a>(mut s: &'a str, limits: &Limits) -> Result<(Pairs, &'a str), String> {
    let mut labels: Vec<(String, String)> = Vec::new();
    // Names seen, for lines too long to check for duplicates by scanning.
    let mut seen: Option<std::collections::HashSet<String>> = None;
    loop {
        s = s.trim_start();
        if let Some(r) = s.strip_prefix('}') {
            return Ok((labels, r));
        }
        if limits.label_limit > 0 && labels.len() >= limits.label_limit {
            return Err(format!(
                "label_limit exceeded: more than {} labels",
                limits.label_limit
            ));
        }
        let eq = s.find('=').ok_or("label without '='")?;
        let lname = s[..eq].trim();
        if !valid_label_name(lname) {
            return Err(format!("invalid label name {lname:?}"));
        }
        s = s[eq + 1..].trim_start();
        s = s
            .strip_prefix('"')
            .ok_or_else(|| format!("label {lname}: value must be quoted"))?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("label {lname}: unterminated value")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, c)) => {
                        value.push('\\');
                        value.push(c);
                    }
                    None => return Err(format!("label {lname}: unterminated value")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if limits.label_name_length_limit > 0 && lname.len() > limits.label_name_length_limit {
            return Err(format!(
                "label_name_length_limit exceeded: a label name of {} bytes, the limit is {}",
                lname.len(),
                limits.label_name_length_limit
            ));
        }
        if limits.label_value_length_limit > 0 && value.len() > limits.label_value_length_limit {
            return Err(format!(
                "label_value_length_limit exceeded: label {lname} has a value of {} bytes, the limit is {}",
                value.len(),
                limits.label_value_length_limit
            ));
        }
        let twice = match &mut seen {
            Some(set) => !set.insert(lname.to_string()),
            None if labels.len() >= 32 => {
                let mut set: std::collections::HashSet<String> =
                    labels.iter().map(|(n, _)| n.clone()).collect();
                let twice = !set.insert(lname.to_string());
                seen = Some(set);
                twice
            }
            None => labels.iter().any(|(n, _)| n == lname),
        };
        if twice {
            return Err(format!("label {lname} appears twice"));
        }
        labels.push((lname.to_string(), value));
        s = s[end + 1..].trim_start();
        if let Some(r) = s.strip_prefix(',') {
            s = r;
        } else if !s.starts_with('}') {
            return Err(format!("expected ',' or '}}' after label {lname}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_node_exporter_writes() {
        let text = "# HELP node_load1 1m load average.\n# TYPE node_load1 gauge\nnode_load1 0.21\n\
            node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 12345.67\n\
            weird{path=\"C:\\\\x\",q=\"a\\\"b\",n=\"l1\\nl2\",} +Inf 1700000000000\n\
            nan_metric NaN\n";
        let (lines, types) = parse(text, Dialect::Text).unwrap();
        assert_eq!(types, vec![("node_load1".into(), "gauge".into())]);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[1].labels[1], ("mode".into(), "idle".into()));
        assert_eq!(
            lines[2].labels,
            vec![
                ("path".into(), "C:\\x".into()),
                ("q".into(), "a\"b".into()),
                ("n".into(), "l1\nl2".into())
            ]
        );
        assert_eq!(lines[2].value, f64::INFINITY);
        assert_eq!(lines[2].t_ms, Some(1_700_000_000_000));
        assert!(lines[3].value.is_nan());
    }

    #[test]
    fn openmetrics_seconds_exemplars_and_eof() {
        let text = "# TYPE a counter\na_total{x=\"1\"} 3 1700000000.5 # {trace_id=\"x\"} 1\n# EOF\nignored 1\n";
        let (lines, _) = parse(text, Dialect::OpenMetrics).unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].t_ms, Some(1_700_000_000_500));
    }

    /// A line of 100,000 labels: refused at the label limit, and without limits parsed in
    /// linear time (the duplicate check was quadratic: minutes of CPU on the agent's thread).
    #[test]
    fn a_very_wide_line_costs_no_more_than_its_limits() {
        let wide = format!(
            "wide{{{}}} 1\n",
            (0..100_000)
                .map(|i| format!("l{i}=\"v\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        let e = parse_limited(&wide, Dialect::Text, &Limits::DEFAULT)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("label_limit exceeded: more than 64 labels"),
            "{e}"
        );
        let started = std::time::Instant::now();
        let (lines, _) = parse(&wide, Dialect::Text).unwrap();
        assert_eq!(lines[0].labels.len(), 100_000);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        let dup = format!("{},l7=\"x\"}} 1\n", &wide[..wide.len() - 4]);
        assert!(
            parse(&dup, Dialect::Text)
                .unwrap_err()
                .to_string()
                .contains("appears twice")
        );
    }

    #[test]
    fn bad_lines_name_their_line_number() {
        for (text, want) in [
            ("ok 1\n9bad 1\n", "line 2: invalid metric name"),
            ("m{a=1} 2\n", "line 1: label a: value must be quoted"),
            ("m{a=\"1} 2\n", "line 1: label a: unterminated value"),
            ("m 1 2 3\n", "unexpected"),
            ("m abc\n", "invalid value"),
            ("m{a=\"1\",a=\"2\"} 1\n", "appears twice"),
            ("m\n", "has no value"),
        ] {
            let e = parse(text, Dialect::Text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
