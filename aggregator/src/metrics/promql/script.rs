//! Script tests for PromQL, in the style of Prometheus' own `promqltest`: a file loads series
//! into the in-memory storage and states what queries answer. The same files are checked
//! against Prometheus itself (through `promtool test rules`, in `tests/tests/promql_scripts.rs`),
//! so every expected value here is Prometheus' answer, not ours.
//!
//! ```text
//! # a comment
//! load 1m                                   series sampled every minute from t=0
//!   http_requests{job="api"} 0+10x10       0, 10, ..., 100   (a+bxN: N+1 values)
//!   temp{room="a"} 20 _ 22 stale 24        _ missing, stale a stale marker, _xN N missing
//! eval instant at 5m sum(http_requests)    the query at t=5m
//!   {} 50                                  expected elements (any order), or a bare number
//! eval_fail instant at 5m topk(x, y)       must fail
//! clear                                    empties the storage
//! ```
//! Values compare to 1e-9 (relative) and NaN equals NaN.

use std::sync::Arc;
use std::time::Duration;

use promql_parser::parser::Expr;
use telltale_common::config::Invalid;
use telltale_common::model::{Labels, STALE_NAN_BITS, Sample, SeriesSamples};

use super::{Engine, Value};
use crate::metrics::storage::memory::MemStorage;
use crate::metrics::storage::{AppendData, AppendRequest};

/// A series to load: its labels and values at `start + i * interval`.
#[derive(Debug, Clone)]
pub struct LoadSeries {
    /// The selector as written (`metric{a="b"}`).
    pub selector: String,
    /// The values notation as written.
    pub values: String,
    /// Labels.
    pub labels: Labels,
    /// `None` for a missing sample.
    pub points: Vec<Option<f64>>,
}

/// One command of a script.
#[derive(Debug, Clone)]
pub enum Command {
    /// `load INTERVAL` and its series.
    Load {
        /// Sampling interval (ms).
        interval: i64,
        /// The series.
        series: Vec<LoadSeries>,
    },
    /// `clear`.
    Clear,
    /// `eval instant at T EXPR` (or `eval_fail`) and its expected result.
    Eval {
        /// Line number, for messages.
        line: usize,
        /// The query.
        expr: String,
        /// Evaluation time (ms).
        at: i64,
        /// Whether the query must fail.
        fail: bool,
        /// Expected elements: labels and value (a scalar has empty labels and `scalar`).
        expect: Vec<(Labels, f64)>,
        /// Whether the result is a scalar.
        scalar: bool,
        /// The expected lines as written.
        raw: Vec<String>,
    },
}

/// A PromQL duration (`5m`, `6m30s`) or zero (`0`, `0s`) in ms.
fn duration_ms(s: &str) -> Result<i64, String> {
    if ["", "s", "ms", "m", "h"].contains(&s.trim_start_matches('0')) && s.starts_with('0') {
        return Ok(0);
    }
    promql_parser::util::parse_duration(s)
        .map(|d| d.as_millis() as i64)
        .map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// Expands a values notation (`0+10x3 _ stale 5 _x2`).
pub fn expand(values: &str) -> Result<Vec<Option<f64>>, Invalid> {
    let mut out = Vec::new();
    let num = |s: &str| -> Result<f64, String> {
        match s {
            "NaN" => Ok(f64::NAN),
            "Inf" | "+Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            _ => s.parse().map_err(|e| format!("bad value {s:?}: {e}")),
        }
    };
    for tok in values.split_whitespace() {
        if tok == "_" {
            out.push(None);
        } else if tok == "stale" {
            out.push(Some(f64::from_bits(STALE_NAN_BITS)));
        } else if let Some(n) = tok.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|e| format!("bad {tok:?}: {e}"))?;
            out.extend(std::iter::repeat_n(None, n));
        } else if let Some((ab, n)) = tok.split_once('x') {
            let n: i64 = n.parse().map_err(|e| format!("bad {tok:?}: {e}"))?;
            // `a+b` or `a-b`; `a` may itself be negative; `axN` is `a+0xN`.
            // A sign right after an exponent's `e` belongs to that number (`1e-5+1e-6x3`).
            let bytes = ab.as_bytes();
            let split = (1..bytes.len())
                .find(|&i| matches!(bytes[i], b'+' | b'-') && !matches!(bytes[i - 1], b'e' | b'E'));
            let (a, b) = match split {
                Some(split) => (num(&ab[..split])?, num(&ab[split..])?),
                None => (num(ab)?, 0.0),
            };
            // Summed step by step, as Prometheus' parser does: `a + b * i` differs in the
            // last bit for steps like 0.1.
            let mut v = a;
            for i in 0..=n {
                if i > 0 {
                    v += b;
                }
                out.push(Some(v));
            }
        } else {
            out.push(Some(num(tok)?));
        }
    }
    Ok(out)
}

/// The labels of `metric{a="b"}` or `{a="b"}` (equality matchers only).
pub fn series_labels(s: &str) -> Result<Labels, Invalid> {
    if s == "{}" {
        return Ok(Labels::default());
    }
    match Engine::parse(s).map_err(|e| format!("{s}: {e}"))? {
        Expr::VectorSelector(vs) => {
            let mut pairs: Vec<(String, String)> = Vec::new();
            if let Some(n) = &vs.name {
                pairs.push(("__name__".into(), n.clone()));
            }
            for m in &vs.matchers.matchers {
                if m.name != "__name__" || vs.name.is_none() {
                    pairs.push((m.name.clone(), m.value.clone()));
                }
            }
            Ok(Labels::from_pairs(pairs))
        }
        _ => Err(format!("{s}: not a series").into()),
    }
}

/// Splits `selector rest` where the selector may contain spaces inside its braces.
fn split_series(line: &str) -> (&str, &str) {
    let end = match (line.find('{'), line.find(char::is_whitespace)) {
        (Some(b), Some(w)) if b < w => line[b..].find('}').map_or(line.len(), |c| b + c + 1),
        (_, Some(w)) => w,
        _ => line.len(),
    };
    (&line[..end], line[end..].trim())
}

/// Parses a script.
pub fn parse(text: &str) -> Result<Vec<Command>, Invalid> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    let indented = |l: &str| l.starts_with(' ') || l.starts_with('\t');
    while i < lines.len() {
        let line = lines[i].trim_end();
        let n = i + 1;
        i += 1;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let err = |m: String| format!("line {n}: {m}");
        if let Some(iv) = line.strip_prefix("load ") {
            let interval = duration_ms(iv.trim()).map_err(err)?;
            let mut series = Vec::new();
            while i < lines.len() && indented(lines[i]) && !lines[i].trim().is_empty() {
                let (sel, values) = split_series(lines[i].trim());
                series.push(LoadSeries {
                    selector: sel.to_string(),
                    values: values.to_string(),
                    labels: series_labels(sel).map_err(|e| format!("line {}: {e}", i + 1))?,
                    points: expand(values).map_err(|e| format!("line {}: {e}", i + 1))?,
                });
                i += 1;
            }
            out.push(Command::Load { interval, series });
        } else if line == "clear" {
            out.push(Command::Clear);
        } else if let Some(rest) = line
            .strip_prefix("eval instant at ")
            .map(|r| (false, r))
            .or_else(|| {
                line.strip_prefix("eval_fail instant at ")
                    .map(|r| (true, r))
            })
        {
            let (fail, rest) = rest;
            let (t, expr) = rest
                .split_once(' ')
                .ok_or_else(|| err("expected: eval instant at T EXPR".into()))?;
            let at = duration_ms(t).map_err(err)?;
            let mut expect = Vec::new();
            let mut raw = Vec::new();
            let mut scalar = false;
            while i < lines.len() && indented(lines[i]) && !lines[i].trim().is_empty() {
                let l = lines[i].trim();
                raw.push(l.to_string());
                let (sel, v) = split_series(l);
                if v.is_empty() {
                    scalar = true;
                    let v = expand(sel).map_err(|e| format!("line {}: {e}", i + 1))?;
                    expect.push((
                        Labels::default(),
                        v.first().copied().flatten().unwrap_or(0.0),
                    ));
                } else {
                    let v = expand(v).map_err(|e| format!("line {}: {e}", i + 1))?;
                    let labels = series_labels(sel).map_err(|e| format!("line {}: {e}", i + 1))?;
                    expect.push((labels, v.first().copied().flatten().unwrap_or(0.0)));
                }
                i += 1;
            }
            out.push(Command::Eval {
                line: n,
                expr: expr.to_string(),
                at,
                fail,
                expect,
                scalar,
                raw,
            });
        } else {
            return Err(err(format!("unknown command {line:?}")).into());
        }
    }
    Ok(out)
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// Runs a script on the in-memory storage; returns every failed expectation.
pub fn run(text: &str) -> Result<Vec<String>, Invalid> {
    let mut store = Arc::new(MemStorage::new());
    let mut failures = Vec::new();
    for c in parse(text)? {
        match c {
            Command::Clear => store = Arc::new(MemStorage::new()),
            Command::Load { interval, series } => {
                let series = series
                    .into_iter()
                    .map(|s| SeriesSamples {
                        labels: s.labels,
                        samples: s
                            .points
                            .iter()
                            .enumerate()
                            .filter_map(|(i, v)| v.map(|v| Sample(i as i64 * interval, v)))
                            .collect(),
                    })
                    .collect();
                store.append_now(AppendRequest {
                    origin: None,
                    data: AppendData::Series(series),
                });
            }
            Command::Eval {
                line,
                expr,
                at,
                fail,
                expect,
                scalar,
                ..
            } => {
                let engine = Engine::new(store.clone(), Duration::from_secs(300), 50_000_000);
                let got = engine.instant(&expr, at);
                let mut problem = |m: String| failures.push(format!("line {line}: {expr}: {m}"));
                match (got, fail) {
                    (Err(_), true) => {}
                    (Ok(v), true) => problem(format!("expected an error, got {v:?}")),
                    (Err(e), false) => problem(format!("failed: {e}")),
                    (Ok(Value::Scalar(s)), false) => {
                        if !scalar || expect.len() != 1 || !same(s.1, expect[0].1) {
                            problem(format!("got scalar {}, want {expect:?}", s.1));
                        }
                    }
                    (Ok(Value::Vector(v)), false) => {
                        let mut want = expect.clone();
                        let mut extra = Vec::new();
                        for (l, s) in v {
                            match want.iter().position(|(wl, wv)| *wl == l && same(*wv, s.1)) {
                                Some(p) => {
                                    want.remove(p);
                                }
                                None => extra.push((l, s.1)),
                            }
                        }
                        if scalar || !want.is_empty() || !extra.is_empty() {
                            problem(format!("missing {want:?}, unexpected {extra:?}"));
                        }
                    }
                    (Ok(other), false) => problem(format!("unexpected result type {other:?}")),
                }
            }
        }
    }
    Ok(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notation_expands_like_promqltest() {
        assert_eq!(
            expand("0+10x3 _ -1-1x2 _x2 7").unwrap(),
            vec![
                Some(0.0),
                Some(10.0),
                Some(20.0),
                Some(30.0),
                None,
                Some(-1.0),
                Some(-2.0),
                Some(-3.0),
                None,
                None,
                Some(7.0)
            ]
        );
        assert!(expand("stale").unwrap()[0].is_some_and(|v| v.to_bits() == STALE_NAN_BITS));
        assert!(expand("1+x").is_err());
        // Exponents keep their sign; steps are summed one by one (0.1 + 0.1 + 0.1 is not
        // 0.1 * 3 in the last bit at every length).
        assert_eq!(
            expand("1e-5+1e-6x1 2E+3-1x1").unwrap(),
            vec![Some(1e-5), Some(1e-5 + 1e-6), Some(2e3), Some(1999.0)]
        );
        let summed = expand("0+0.1x30").unwrap();
        let mut v = 0.0;
        for (i, got) in summed.iter().enumerate() {
            if i > 0 {
                v += 0.1;
            }
            assert_eq!(*got, Some(v), "{i}");
        }
        assert!((0..=30).any(|i| summed[i] != Some(0.1 * i as f64)));
        assert_eq!(
            split_series(r#"m{a="x y", b="z"} 1 2"#),
            (r#"m{a="x y", b="z"}"#, "1 2")
        );
        assert!(parse("bogus").is_err());
    }

    /// Every script in `testdata/` passes on the in-memory engine.
    #[test]
    fn scripts_pass() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics/promql/testdata");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_none_or(|x| x != "test") {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let failures = run(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(
                failures.is_empty(),
                "{}:\n{}",
                p.display(),
                failures.join("\n")
            );
            n += 1;
        }
        assert!(n >= 3, "scripts found: {n}");
    }

    /// A wrong expectation is reported (the runner can fail).
    #[test]
    fn a_wrong_expectation_fails() {
        let f = run("load 1m\n  m 1+1x2\neval instant at 2m m\n  m 4\n").unwrap();
        assert_eq!(f.len(), 1, "{f:?}");
        let f = run("load 1m\n  m 1+1x2\neval_fail instant at 2m m\n").unwrap();
        assert_eq!(f.len(), 1, "{f:?}");
    }
}
