//! Random rule files checked against Prometheus' own rule engine (`promtool test rules`):
//! alerting and recording rules with `for`, templated labels and annotations (every
//! formatting function over values of every magnitude, queries, `$externalLabels`), input
//! series with gaps, stale markers, NaN, ±Inf and counter resets, evaluation intervals that
//! do and do not divide the series' interval, and alert checks between ticks and after the
//! series end. Telltale's `rules test` machinery observes every check
//! ([`telltale_aggregator::rules::unittest::observe`]); those observations become the
//! expectations of the file, and promtool must pass it. A failure is a place where the alert
//! timeline, an alert's labels or annotations, `ALERTS`/`ALERTS_FOR_STATE` or a recorded
//! series differ from Prometheus 2.42.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use telltale_aggregator::rules::unittest::{Observed, observe};

use crate::compliance::Rng;
use crate::hostile::Pick;

/// One test group: its input and what it checks.
struct Group {
    interval_s: u64,
    series: Vec<(String, String)>,
    alerts: Vec<(u64, String)>,
    exprs: Vec<(u64, String)>,
    external: Vec<(String, String)>,
}

/// A generated rule file and the test groups that exercise it.
pub struct Case {
    /// The rule file (YAML).
    pub rules: String,
    /// `group_eval_order` (promtool's order is Go's map order without it).
    order: Vec<String>,
    every_s: u64,
    groups: Vec<Group>,
}

/// What one file's run found.
#[derive(Default)]
pub struct Outcome {
    /// Alert checks compared.
    pub alert_checks: usize,
    /// Of those, checks where at least one alert was firing.
    pub firing_checks: usize,
    /// Expression checks compared.
    pub expr_checks: usize,
    /// Expression checks left out (an error or NaN in Telltale's answer: promtool cannot
    /// expect either).
    pub expr_skipped: usize,
    /// promtool's report where it disagreed, with the file.
    pub disagreement: Option<String>,
}

/// A YAML single-quoted string.
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn duration(s: u64) -> String {
    format!("{s}s")
}

/// A number as a literal: plain, exponent or integer spelling.
fn number(r: &mut Rng, v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 && r.chance(0.5) {
        format!("{}", v as i64)
    } else if r.chance(0.3) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// A value of the file's magnitude, with sometimes an odd one.
fn magnitude(r: &mut Rng) -> f64 {
    *r.pick(&[
        1.0, 1.0, 1.0, 0.01, 1e-6, 1e-9, 1000.0, 1e6, 1e9, 1e12, 1e20, 1e21, 1e24, 0.5,
    ])
}

/// Constants for the formatting functions: every magnitude, signs, integers, odd ones.
fn constant(r: &mut Rng) -> String {
    let v: f64 = match r.below(8) {
        0 => 0.0,
        1 => (r.below(2000) as f64) - 1000.0,
        2 => r.uniform() * 10f64.powi(r.below(40) as i32 - 20),
        3 => -(r.uniform() * 10f64.powi(r.below(30) as i32 - 15)),
        4 => *r.pick(&[
            1.0, 999.0, 1000.0, 1023.0, 1024.0, 1e3, 999_999.0, 1e6, 60.0, 3600.0, 86400.0, 0.001,
            0.000_001, 1e-9, 59.999, 0.5, 1.5e9, 1.7e9,
        ]),
        5 => (r.below(100_000) as f64) / 1000.0,
        6 => (r.below(1_000_000_000) as f64) * 10.0,
        _ => r.uniform() * 100.0,
    };
    // A template literal: integers are ints to Go, the rest float64.
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:e}")
    }
}

const VERBS: &[&str] = &[
    "%.2f", "%f", "%g", "%e", "%v", "%.0f", "%5.1f", "%+.3e", "%.3g", "%G", "%E", "%8.2f|",
    "%-8.2f|", "%.1f%%", "%s", "%d", "%x", "%.10g", "%07.2f", "% .2f",
];

/// An annotation or label template.
fn template(r: &mut Rng, for_label: bool) -> String {
    let value = if r.chance(0.2) { ".Value" } else { "$value" };
    let f = *r.pick(&[
        "humanize",
        "humanize1024",
        "humanizePercentage",
        "humanizeDuration",
        "humanizeTimestamp",
    ]);
    let simple = [
        format!("{{{{ {value} }}}}"),
        format!("{{{{ {value} | {f} }}}}"),
        format!("{{{{ {f} {} }}}}", constant(r)),
        format!("{{{{ printf {:?} {value} }}}}", r.pick(VERBS)),
        format!("{{{{ {value} | printf {:?} }}}}", r.pick(VERBS)),
        "{{ $labels.instance }}".to_string(),
        "{{ $labels.instance | stripPort }}".to_string(),
        "{{ .Labels.job | toUpper }}".to_string(),
        "{{ $labels.job | title }}".to_string(),
        "{{ reReplaceAll \"h([0-9])\" \"host-$1\" $labels.instance }}".to_string(),
        "{{ $externalLabels.region }}/{{ $externalURL }}".to_string(),
        format!(
            "{{{{ if gt {value} {} }}}}high{{{{ else }}}}low{{{{ end }}}}",
            number_float(r)
        ),
        "{{ range $k, $v := $labels }}{{ $k }}={{ $v }},{{ end }}".to_string(),
        // An int literal against $value (a float64) is Go's "incompatible types" error.
        format!(
            "{{{{ if {} {value} {} }}}}y{{{{ end }}}}",
            r.pick(&["gt", "lt", "eq", "ne", "le", "ge"]),
            r.below(100)
        ),
        format!(
            "{{{{ printf \"%d|%v|%5.2f\" {} 1e3 {} }}}}",
            r.below(50),
            constant(r)
        ),
    ];
    let queries = [
        // max, not sum: a float sum of three series depends on their order, which promtool
        // draws from a Go map.
        format!(
            "{{{{ with query \"max(m_a)\" }}}}{{{{ . | first | value | {f} }}}}{{{{ end }}}}"
        ),
        // Sorted by a label that tells every series apart: promtool loads input series in Go
        // map order, so a query's order among equal values changes from run to run there.
        "{{ range query \"sort_desc(m_a)\" | sortByLabel \"instance\" }}{{ .Labels.instance }}={{ .Value }};{{ end }}"
            .to_string(),
        "{{ len (query \"m_a > 0\") }} of {{ len (query \"m_a\") }}".to_string(),
        format!(
            "{{{{ query \"scalar(max(m_a))\" | first | value | printf {:?} }}}}",
            r.pick(VERBS)
        ),
        // One element per name and state, so the order is the sort's (a query's own order is
        // the TSDB head's creation order in promtool).
        "{{ range query \"count by (alertname, alertstate) (ALERTS)\" | sortByLabel \"alertstate\" | sortByLabel \"alertname\" }}{{ .Labels.alertname }}:{{ .Labels.alertstate }} {{ end }}"
            .to_string(),
    ];
    if for_label {
        // Labels that change with the value make a new alert every time.
        let cut = number_float(r);
        return r
            .pick(&[
                "{{ $labels.job }}-x".to_string(),
                format!("{{{{ if gt $value {cut} }}}}high{{{{ else }}}}low{{{{ end }}}}"),
                "{{ $value }}".to_string(),
                "static".to_string(),
                "{{ $labels.instance | stripPort }}".to_string(),
            ])
            .clone();
    }
    if r.chance(0.25) {
        r.pick(&queries).clone()
    } else {
        let a = r.pick(&simple).clone();
        if r.chance(0.3) {
            format!("{a} and {}", r.pick(&simple))
        } else {
            a
        }
    }
}

/// A float literal for a comparison with `$value` (Go's `gt` compares float64 with float64
/// only).
fn number_float(r: &mut Rng) -> String {
    format!("{:.1}", r.uniform() * 100.0)
}

/// A rule file: alerting rules over `m_a`, `m_b`, `c_total` and a recorded series.
fn rules(r: &mut Rng, scale: f64) -> (String, Vec<String>, Vec<String>, usize) {
    let t = |r: &mut Rng| {
        let v = (10.0 + r.below(80) as f64) * scale;
        number(r, v)
    };
    let mut alerts = Vec::new();
    let mut records = Vec::new();
    let mut out = String::from("groups:\n");
    let groups = 1 + r.below(2);
    let mut n = 0;
    for g in 0..groups {
        let _ = writeln!(out, "  - name: g{g}\n    rules:");
        if g == 0 && r.chance(0.6) {
            let rec = "job:m_a:sum".to_string();
            let expr = r
                .pick(&[
                    "sum by (job) (m_a)",
                    "max by (job) (m_a)",
                    "sum by (job) (rate(c_total[2m]))",
                ])
                .to_string();
            let _ = writeln!(
                out,
                "      - record: {rec}\n        expr: {}",
                quoted(&expr)
            );
            if r.chance(0.3) {
                let _ = writeln!(out, "        labels:\n          recorded: 'yes'");
            }
            records.push(rec);
        }
        for _ in 0..(1 + r.below(4)) {
            let name = format!("A{n}");
            n += 1;
            let expr = match r.below(16) {
                0 | 1 => format!("m_a > {}", t(r)),
                2 => format!("m_a < {}", t(r)),
                3 => "m_a != 0".to_string(),
                4 => format!("rate(c_total[2m]) > {}", number(r, scale / 10.0)),
                5 => format!("increase(c_total[3m]) > {}", t(r)),
                6 => format!("sum by (job) (m_a) > {}", t(r)),
                7 => format!("count(m_a > {}) > 1", t(r)),
                8 => "absent(m_b)".to_string(),
                9 => "absent_over_time(m_b[2m])".to_string(),
                10 => format!("max_over_time(m_a[2m]) > {}", t(r)),
                11 => format!("job:m_a:sum > {}", t(r)),
                12 => format!("m_a > {} and on (instance) m_b < {}", t(r), t(r)),
                13 => format!("m_a > bool {}", t(r)),
                14 => format!(
                    "label_replace(m_a, \"host\", \"$1\", \"instance\", \"(.*):.*\") > {}",
                    t(r)
                ),
                _ => format!("changes(m_a[3m]) > {}", r.below(3)),
            };
            let _ = writeln!(
                out,
                "      - alert: {name}\n        expr: {}",
                quoted(&expr)
            );
            let hold = *r.pick(&[0, 0, 15, 30, 60, 90, 120, 300]);
            if hold > 0 || r.chance(0.2) {
                let _ = writeln!(out, "        for: {}", duration(hold));
            }
            if r.chance(0.7) {
                let _ = writeln!(out, "        labels:\n          severity: page");
                if r.chance(0.4) {
                    let _ = writeln!(out, "          tier: {}", quoted(&template(r, true)));
                }
            }
            if r.chance(0.9) {
                let _ = writeln!(out, "        annotations:");
                for k in 0..(1 + r.below(3)) {
                    let _ = writeln!(out, "          a{k}: {}", quoted(&template(r, false)));
                }
            }
            alerts.push(name);
        }
    }
    (out, alerts, records, groups)
}

/// One series' values in the expanding notation.
fn values(r: &mut Rng, len: usize, scale: f64, counter: bool) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut v = (r.below(100) as f64) * scale;
    let mut i = 0;
    while i < len {
        if r.chance(0.05) {
            out.push("_".into());
            i += 1;
            continue;
        }
        if r.chance(0.03) {
            let k = 1 + r.below(4);
            out.push(format!("_x{k}"));
            i += k;
            continue;
        }
        if r.chance(0.03) {
            out.push("stale".into());
            i += 1;
            continue;
        }
        if !counter && r.chance(0.02) {
            out.push(r.pick(&["NaN", "Inf", "-Inf"]).to_string());
            i += 1;
            continue;
        }
        if r.chance(0.1) {
            // A run in the expanding notation.
            let k = 1 + r.below(5);
            let step = if counter {
                (r.below(20) as f64) * scale / 4.0
            } else {
                (r.below(21) as f64 - 10.0) * scale / 10.0
            };
            let sign = if step < 0.0 || (step == 0.0 && r.chance(0.5)) {
                "-"
            } else {
                "+"
            };
            out.push(format!(
                "{}{sign}{}x{k}",
                number(r, v),
                number(r, step.abs())
            ));
            v += step * k as f64;
            i += k + 1;
            continue;
        }
        if counter {
            if r.chance(0.05) {
                v = 0.0;
            } else {
                v += (r.below(30) as f64) * scale / 3.0;
            }
        } else {
            v = (v + (r.below(41) as f64 - 20.0) * scale).clamp(-10.0 * scale, 110.0 * scale);
        }
        out.push(number(r, v));
        i += 1;
    }
    out.join(" ")
}

impl Case {
    /// A random case: one rule file and 1–4 test groups over it.
    pub fn random(r: &mut Rng) -> Case {
        let scale = magnitude(r);
        let (rules, alerts, records, ngroups) = rules(r, scale);
        let mut order: Vec<String> = (0..ngroups).map(|g| format!("g{g}")).collect();
        if r.chance(0.5) {
            order.reverse();
        }
        let every_s = *r.pick(&[15, 30, 60, 60, 120]);
        let mut groups = Vec::new();
        for _ in 0..(1 + r.below(4)) {
            let interval_s = *r.pick(&[15, 30, 60, 60, 90]);
            let len = 5 + r.below(30);
            let mut series = Vec::new();
            let hosts = 1 + r.below(3);
            for h in 1..=hosts {
                let job = if h == 3 { "db" } else { "node" };
                series.push((
                    format!("m_a{{instance=\"h{h}:9100\",job=\"{job}\"}}"),
                    values(r, len, scale, false),
                ));
                if r.chance(0.6) {
                    let n = r.below(len + 1);
                    series.push((
                        format!("m_b{{instance=\"h{h}:9100\",job=\"{job}\"}}"),
                        values(r, n, scale, false),
                    ));
                }
                if r.chance(0.6) {
                    series.push((
                        format!("c_total{{instance=\"h{h}:9100\",job=\"{job}\"}}"),
                        values(r, len, scale, true),
                    ));
                }
            }
            let end = (len as u64 + 8) * interval_s;
            let time = |r: &mut Rng| (r.below((end / 5) as usize) as u64) * 5;
            let mut checks = Vec::new();
            for a in &alerts {
                for _ in 0..(1 + r.below(4)) {
                    checks.push((time(r), a.clone()));
                }
            }
            let mut exprs = Vec::new();
            for _ in 0..r.below(4) {
                let e = r
                    .pick(&[
                        "ALERTS",
                        "ALERTS_FOR_STATE",
                        "ALERTS{alertstate=\"pending\"}",
                        "count by (alertname) (ALERTS)",
                    ])
                    .to_string();
                exprs.push((time(r), e));
            }
            for rec in &records {
                exprs.push((time(r), rec.clone()));
            }
            let mut external = Vec::new();
            if r.chance(0.5) {
                external.push(("region".to_string(), "eu-1".to_string()));
            }
            groups.push(Group {
                interval_s,
                series,
                alerts: checks,
                exprs,
                external,
            });
        }
        Case {
            rules,
            order,
            every_s,
            groups,
        }
    }

    /// One alert whose annotations are `templates`, over two series that fire it, checked
    /// at two times: for comparing how templates render.
    pub fn annotations(templates: &[String]) -> Case {
        let mut rules = String::from(
            "groups:\n  - name: g0\n    rules:\n      - alert: T\n        expr: 'm_a > 0'\n        annotations:\n",
        );
        for (i, t) in templates.iter().enumerate() {
            let _ = writeln!(
                rules,
                "          a{i}: {}",
                serde_json::to_string(t).unwrap_or_default()
            );
        }
        let series = vec![
            (
                "m_a{instance=\"h1:9100\",job=\"node\"}".to_string(),
                "1 2.5 1234567 0.001".to_string(),
            ),
            (
                "m_a{instance=\"db-1.example.com:5432\",job=\"db\"}".to_string(),
                "3 -4 1e21 NaN".to_string(),
            ),
            (
                "up{instance=\"h1:9100\",job=\"node\"}".to_string(),
                "1 1 0 1".to_string(),
            ),
        ];
        Case {
            rules,
            order: vec!["g0".into()],
            every_s: 60,
            groups: vec![Group {
                interval_s: 60,
                series,
                alerts: vec![(60, "T".into()), (120, "T".into()), (180, "T".into())],
                exprs: Vec::new(),
                external: vec![("region".into(), "eu-1".into())],
            }],
        }
    }

    /// The test file; with `seen`, the observations as its expectations.
    fn test_file(&self, seen: Option<&[Observed]>, skipped: &mut usize) -> String {
        let mut out = format!(
            "rule_files: [rules.yml]\nevaluation_interval: {}\ngroup_eval_order: [{}]\ntests:\n",
            duration(self.every_s),
            self.order.join(", ")
        );
        for (gi, g) in self.groups.iter().enumerate() {
            let obs = seen.and_then(|s| s.get(gi));
            let _ = writeln!(out, "  - interval: {}", duration(g.interval_s));
            if !g.external.is_empty() {
                let _ = writeln!(out, "    external_labels:");
                for (k, v) in &g.external {
                    let _ = writeln!(out, "      {k}: {}", quoted(v));
                }
                let _ = writeln!(out, "    external_url: 'http://tt.example:9090/x'");
            }
            let _ = writeln!(out, "    input_series:");
            for (s, v) in &g.series {
                let _ = writeln!(
                    out,
                    "      - series: {}\n        values: {}",
                    quoted(s),
                    quoted(v)
                );
            }
            let _ = writeln!(out, "    alert_rule_test:");
            for (i, (at, name)) in g.alerts.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "      - eval_time: {}\n        alertname: {name}",
                    duration(*at)
                );
                let got = obs.map(|o| o.alerts[i].as_slice()).unwrap_or_default();
                if got.is_empty() {
                    let _ = writeln!(out, "        exp_alerts: []");
                    continue;
                }
                let _ = writeln!(out, "        exp_alerts:");
                for (labels, annotations) in got {
                    // JSON strings are YAML double-quoted scalars: newlines survive.
                    let map = |m: &BTreeMap<String, String>| {
                        let parts: Vec<String> = m
                            .iter()
                            .map(|(k, v)| {
                                format!("{k}: {}", serde_json::to_string(v).unwrap_or_default())
                            })
                            .collect();
                        format!("{{{}}}", parts.join(", "))
                    };
                    let _ = writeln!(
                        out,
                        "          - exp_labels: {}\n            exp_annotations: {}",
                        map(labels),
                        map(annotations)
                    );
                }
            }
            let mut exprs = String::new();
            for (i, (at, expr)) in g.exprs.iter().enumerate() {
                let got = match obs.map(|o| &o.exprs[i]) {
                    Some(Ok(v)) if v.iter().all(|(_, x)| !x.is_nan()) => v.as_slice(),
                    Some(_) => {
                        *skipped += 1;
                        continue;
                    }
                    None => &[],
                };
                let _ = writeln!(
                    exprs,
                    "      - expr: {}\n        eval_time: {}\n        exp_samples:{}",
                    quoted(expr),
                    duration(*at),
                    if got.is_empty() { " []" } else { "" }
                );
                for (labels, v) in got {
                    let parts: Vec<String> = labels
                        .iter()
                        .filter(|(k, _)| *k != "__name__")
                        .map(|(k, v)| format!("{k}={v:?}"))
                        .collect();
                    let name = labels.get("__name__").cloned().unwrap_or_default();
                    let value = if v.is_infinite() {
                        if *v > 0.0 { ".inf" } else { "-.inf" }.to_string()
                    } else {
                        format!("{v:?}")
                    };
                    let _ = writeln!(
                        exprs,
                        "          - labels: {}\n            value: {value}",
                        quoted(&format!("{name}{{{}}}", parts.join(", ")))
                    );
                }
            }
            if !exprs.is_empty() {
                let _ = writeln!(out, "    promql_expr_test:\n{exprs}");
            }
        }
        out
    }

    /// Observes the case on Telltale in `dir`, writes the expectations and runs promtool.
    pub fn check(&self, dir: &Path, promtool: &Path) -> Result<Outcome, String> {
        std::fs::write(dir.join("rules.yml"), &self.rules).map_err(|e| e.to_string())?;
        let draft = dir.join("draft.yml");
        let mut ignored = 0;
        std::fs::write(&draft, self.test_file(None, &mut ignored)).map_err(|e| e.to_string())?;
        let seen = observe(&draft).map_err(|e| format!("telltale: {}", e.0))?;
        let mut o = Outcome::default();
        let text = self.test_file(Some(&seen), &mut o.expr_skipped);
        for s in &seen {
            o.alert_checks += s.alerts.len();
            o.firing_checks += s.alerts.iter().filter(|a| !a.is_empty()).count();
            o.expr_checks += s.exprs.len();
        }
        o.expr_checks -= o.expr_skipped;
        let file = dir.join("test.yml");
        std::fs::write(&file, &text).map_err(|e| e.to_string())?;
        let out = Command::new(promtool)
            .args(["test", "rules"])
            .arg(&file)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            o.disagreement = Some(format!(
                "{}{}\n--- rules.yml ---\n{}\n--- test.yml ---\n{text}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.rules
            ));
        }
        Ok(o)
    }
}

/// Words templates are made of: actions and their keywords, operands of every kind Go's
/// lexer knows (strings raw and quoted, char constants, numbers in every base and form),
/// fields and variables, functions, and pieces that break the syntax.
const SOUP: &[&str] = &[
    "{{",
    "{{",
    "{{",
    "}}",
    "}}",
    "}}",
    "{{- ",
    " -}}",
    " ",
    " ",
    " ",
    "$value",
    "$labels",
    "$labels.instance",
    ".Labels",
    ".Labels.job",
    ".Value",
    "$x",
    "$x := ",
    "$x = ",
    " | ",
    "(",
    ")",
    "if ",
    "else ",
    "end",
    "range ",
    "with ",
    "define \"d\"",
    "template \"d\"",
    "block \"b\" .",
    "\"s\"",
    "`raw`",
    "'c'",
    "1",
    "1.5",
    "-2",
    "0x1F",
    "0b101",
    "0o17",
    "1_000",
    ".5",
    "1e3",
    "+1",
    "true",
    "nil",
    "humanize ",
    "printf \"%v\" ",
    "eq ",
    "gt ",
    "and ",
    "len ",
    "index ",
    ", ",
    "break",
    "continue",
    ".",
    "$",
    "/* c */",
    "\n",
    "x",
    "toUpper ",
    "query \"up\"",
    "first",
    "$externalLabels",
    "$externalURL",
    "else if ",
    "else with ",
    "1i",
    "0x1p-2",
    "..",
    ".Labels.x.y",
    "$x.Value",
    "not ",
    "or ",
    "$i, $e := ",
    ":=",
    "=",
];

/// Valid templates of every construct Go's parser knows, to mutate.
const VALID: &[&str] = &[
    "{{ if gt $value 1.0 }}a{{ else if lt $value 0.0 }}b{{ else }}c{{ end }}",
    "{{ range $i, $e := query \"up\" }}{{ $i }}={{ $e.Value }}{{ else }}none{{ end }}",
    "{{ with $labels.instance }}{{ . }}{{ else }}-{{ end }}",
    "{{ define \"d\" }}<{{ . }}>{{ end }}{{ template \"d\" $value }}",
    "{{ block \"b\" . }}x{{ end }}",
    "{{/* a comment */}}",
    "{{- /* trimmed */ -}}",
    "{{- $value -}}",
    "{{ printf \"%v %v %v %v %v %v %v\" 0x1F 0o17 0b101 1_000 0x1p-2 'c' 1e3 }}",
    "{{ printf \"%v\" '\\n' }}",
    "{{ (query \"up\" | first).Labels.job }}",
    "{{ $x := 1 }}{{ $x = 2 }}{{ $x }}",
    "{{ index $labels \"job\" }}",
    "{{ and 1 0 }}{{ or 0 \"\" }}{{ not true }}",
    "{{ printf \"%s\" (toUpper \"x\") }}",
    "{{ range query \"up\" }}{{ if eq .Value 1.0 }}{{ break }}{{ end }}{{ continue }}{{ end }}",
    "{{ $labels.instance | stripPort | toUpper }}",
    "{{ len $labels | printf \"%d\" }}",
    "{{ `raw {{ text` }}",
    "{{ \"quoted \\\" }}\" }}",
    "{{ eq $labels.job \"a\" \"b\" }}",
    "{{ 1i }}",
    "{{ -2 }} {{ +3 }} {{ .5 }}",
    "{{ $ }}{{ $.Value }}{{ .Labels }}",
    "{{ with $x := 3 }}{{ $x }}{{ end }}",
    "{{ print 1 2 \"a\" 3 }}{{ println $value \"x\" }}",
    "{{ html \"<a href='x'>&</a>\" }}{{ js \"it's <b>\" }}{{ urlquery \"a b&c\" }}",
    "{{ slice \"abcdef\" 1 3 }}{{ slice (query \"up\") 0 1 | len }}",
    "{{ toTime 1.5e9 }}{{ stripDomain \"db-1.example.com:9100\" }}",
];

/// A valid template, mutated once half of the time (a character dropped or doubled, a word
/// inserted): texts on both sides of the line Go's parser draws.
pub fn template_near_valid(r: &mut Rng) -> String {
    let mut t: Vec<char> = VALID[r.below(VALID.len())].chars().collect();
    if r.chance(0.3) {
        t.extend(template(r, false).chars());
    }
    if r.chance(0.5) && !t.is_empty() {
        let k = r.below(t.len());
        match r.below(3) {
            0 => {
                t.remove(k);
            }
            1 => t.insert(k, t[k]),
            _ => {
                let w: Vec<char> = SOUP[r.below(SOUP.len())].chars().collect();
                for (n, c) in w.into_iter().enumerate() {
                    t.insert(k + n, c);
                }
            }
        }
    }
    t.into_iter().collect()
}

/// A random piece of template text: actions of one to six words, text between them, and
/// now and then a stray word outside an action.
pub fn template_soup(r: &mut Rng) -> String {
    let mut out = String::new();
    for _ in 0..(1 + r.below(4)) {
        if r.chance(0.3) {
            out.push_str(["x", " ", "\n", "}}", "{{"][r.below(5)]);
        }
        out.push_str(if r.chance(0.2) { "{{- " } else { "{{ " });
        for _ in 0..(1 + r.below(6)) {
            out.push_str(SOUP[r.below(SOUP.len())]);
            if r.chance(0.7) {
                out.push(' ');
            }
        }
        out.push_str(if r.chance(0.2) { " -}}" } else { " }}" });
    }
    out
}

/// Whether promtool's `check rules` accepts each of `files` (its report, file by file).
pub fn promtool_accepts(
    promtool: &Path,
    files: &[std::path::PathBuf],
) -> Result<Vec<bool>, String> {
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .args(files)
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut verdicts = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        if l.starts_with("Checking ") {
            verdicts.push(lines.peek().is_some_and(|n| n.contains("SUCCESS")));
        }
    }
    if verdicts.len() != files.len() {
        return Err(format!(
            "promtool reported {} of {} files:\n{text}",
            verdicts.len(),
            files.len()
        ));
    }
    Ok(verdicts)
}
