//! The PromQL script tests (`aggregator/src/metrics/promql/testdata/*.test`, run on the
//! in-memory engine by the aggregator's unit tests) are checked against Prometheus itself:
//! every script becomes a `promtool test rules` file — its series as `input_series`, its
//! instant evaluations as `promql_expr_test` — so an expected value in a script is
//! Prometheus' answer, not a number we wrote down. (`eval_fail` lines are checked on our side
//! only: promtool cannot expect an error.)

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command as Process;

use telltale_aggregator::metrics::promql::script::{Command, parse};
use telltale_common::model::STALE_NAN_BITS;
use telltale_tests::peers::peer;

const PROMTOOL: &str = "/usr/bin/promtool";

/// A YAML single-quoted string.
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn value(v: Option<f64>) -> String {
    match v {
        None => "_".into(),
        Some(x) if x.to_bits() == STALE_NAN_BITS => "stale".into(),
        Some(x) => format!("{x}"),
    }
}

/// The promtool test file for a script: one test group per `load` (after a `clear`, the
/// series loaded so far are dropped, as in the script).
fn promtool_file(script: &str) -> String {
    let mut out = String::from("rule_files: []\nevaluation_interval: 1m\ntests:\n");
    let mut group = String::new();
    let mut evals = String::new();
    let flush = |group: &mut String, evals: &mut String, out: &mut String| {
        if !group.is_empty() && !evals.is_empty() {
            out.push_str(group);
            out.push_str("    promql_expr_test:\n");
            out.push_str(evals);
        }
        evals.clear();
    };
    for c in parse(script).expect("script parses") {
        match c {
            Command::Clear => {
                flush(&mut group, &mut evals, &mut out);
                group.clear();
            }
            Command::Load { interval, series } => {
                assert!(group.is_empty(), "one load per group (use clear)");
                let _ = writeln!(group, "  - interval: {interval}ms\n    input_series:");
                for s in series {
                    let values: Vec<String> = s.points.iter().map(|v| value(*v)).collect();
                    let _ = writeln!(
                        group,
                        "      - series: {}\n        values: {}",
                        quoted(&s.selector),
                        quoted(&values.join(" "))
                    );
                }
            }
            Command::Eval {
                expr,
                at,
                fail,
                raw,
                scalar,
                expect,
                ..
            } => {
                if fail {
                    continue;
                }
                let _ = writeln!(
                    evals,
                    "      - expr: {}\n        eval_time: {at}ms\n        exp_samples:{}",
                    quoted(&expr),
                    if expect.is_empty() { " []" } else { "" }
                );
                for line in raw {
                    let (labels, v) = if scalar {
                        ("{}".to_string(), line)
                    } else {
                        let v = line.rsplit(' ').next().unwrap_or("").to_string();
                        (line[..line.len() - v.len()].trim().to_string(), v)
                    };
                    let _ = writeln!(
                        evals,
                        "          - labels: {}\n            value: {v}",
                        quoted(&labels)
                    );
                }
            }
        }
    }
    flush(&mut group, &mut evals, &mut out);
    out
}

#[test]
fn scripts_agree_with_prometheus() {
    let Some(promtool) = peer(PROMTOOL, "prometheus") else {
        return;
    };
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../aggregator/src/metrics/promql/testdata");
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "test") {
            continue;
        }
        let yaml = promtool_file(&std::fs::read_to_string(&p).unwrap());
        let file = tmp
            .path()
            .join(p.file_name().unwrap())
            .with_extension("yml");
        std::fs::write(&file, &yaml).unwrap();
        let out = Process::new(&promtool)
            .arg("test")
            .arg("rules")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} disagrees with Prometheus:\n{}{}\n--- generated file ---\n{yaml}",
            p.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 3, "scripts checked: {checked}");
}

#[test]
fn the_generated_file_carries_series_and_expectations() {
    let y = promtool_file(
        "load 1m\n  m{a=\"x\"} 1 _ stale\neval instant at 1m m\n  m{a=\"x\"} 1\neval instant at 0s time()\n  0\n",
    );
    assert!(y.contains("values: '1 _ stale'"), "{y}");
    assert!(y.contains("eval_time: 60000ms"), "{y}");
    assert!(y.contains("labels: 'm{a=\"x\"}'"), "{y}");
    assert!(y.contains("labels: '{}'\n            value: 0"), "{y}");
}
