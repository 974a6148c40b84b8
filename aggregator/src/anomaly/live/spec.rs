//! Detector files (YAML, beside rule files; `[anomaly] files`, `serve --detectors`, checked
//! by `telltale-aggregator anomaly check`):
//!
//! ```yaml
//! detectors:
//!   - name: host_cpu                      # becomes the `detector` label
//!     expr: sum by (instance) (rate(node_cpu_seconds_total{mode!="idle"}[1m]))
//!     method: context                     # context, knn, ewma, seasonal, changepoint,
//!                                         # ensemble, peer, forecast
//!     params: {bins: 7, order: 6}         # the method's parameters over its defaults
//!     interval: 10s                       # default 10s
//!     threshold: 0.75                     # telltale_anomaly is 1 at or above it (default:
//!                                         # the method's alarm, 0.99 for ranked methods)
//!     history: 6h                         # read back at start to rebuild the models
//!     group_by: [job]                     # peer only: who is compared with whom
//!     labels: {team: infra}               # added to the output series
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use promql_parser::parser::Expr;
use serde::Deserialize;

use crate::anomaly::calibrate::Frame;
use crate::anomaly::method::Method;
use crate::anomaly::params::{Kv, ParamsError, split};
use crate::metrics::promql::Engine;

/// A detector file that cannot be used: where, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct SpecError {
    /// The file.
    pub file: String,
    /// What is wrong (naming the detector).
    pub message: String,
}

/// How a detector scores its series.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A model per series, over time.
    Series(Method),
    /// Each series against the others of its group at the same instant (robust z-score from
    /// the group's median and MAD); no state.
    Peer {
        /// Labels that make a group (empty: one group).
        group_by: Vec<String>,
        /// Fewest series in a group for it to be scored (at least 3).
        min_peers: usize,
        /// Robust standard deviations that score 0.99.
        cut: f64,
    },
    /// Holt-Winters refitted at each evaluation from the history it reads; writes the
    /// forecast at the horizon and the time until the limit.
    Forecast(Forecast),
}

/// A forecast's settings (`method: forecast`).
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    /// The step the history is read at.
    pub step: Duration,
    /// The season (zero: none).
    pub season: Duration,
    /// How far ahead.
    pub horizon: Duration,
    /// The limit whose time of reaching is written (none: not written).
    pub limit: Option<f64>,
}

/// One detector, validated.
#[derive(Debug, Clone)]
pub struct Detector {
    /// Its name (the `detector` label of its output).
    pub name: String,
    /// The expression, as written.
    pub query: String,
    /// The expression, parsed.
    pub expr: Expr,
    /// How it scores.
    pub kind: Kind,
    /// Evaluation interval.
    pub interval: Duration,
    /// `telltale_anomaly` is 1 when the score is at least this.
    pub threshold: f64,
    /// How far back the models are rebuilt from stored history at start.
    pub history: Duration,
    /// Labels added to the output.
    pub labels: BTreeMap<String, String>,
    /// The file it came from.
    pub file: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    detectors: Vec<DetectorSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DetectorSpec {
    name: String,
    expr: String,
    method: String,
    #[serde(default)]
    params: BTreeMap<String, serde_json::Value>,
    interval: Option<String>,
    threshold: Option<f64>,
    history: Option<String>,
    #[serde(default)]
    group_by: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Reads and validates one detector file.
pub fn load(file: &Path) -> Result<Vec<Detector>, SpecError> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|e| SpecError {
        file: name.clone(),
        message: format!("cannot read: {e}"),
    })?;
    parse(&name, &text)
}

/// Reads every file; detector names must be unique across them.
pub fn load_all(files: &[std::path::PathBuf]) -> Result<Vec<Detector>, SpecError> {
    let mut out: Vec<Detector> = Vec::new();
    for f in files {
        for d in load(f)? {
            if let Some(o) = out.iter().find(|o| o.name == d.name) {
                return Err(SpecError {
                    file: d.file.clone(),
                    message: format!("detector {:?} is also defined in {}", d.name, o.file),
                });
            }
            out.push(d);
        }
    }
    Ok(out)
}

/// Validates a detector file's text.
pub fn parse(file: &str, text: &str) -> Result<Vec<Detector>, SpecError> {
    let err = |message: String| SpecError {
        file: file.to_string(),
        message,
    };
    let spec: FileSpec = serde_saphyr::from_str(text).map_err(|e| err(e.to_string()))?;
    let mut out: Vec<Detector> = Vec::new();
    for d in spec.detectors {
        let name = d.name.clone();
        let de = |m: String| err(format!("detector {name:?}: {m}"));
        if !valid_name(&d.name) {
            return Err(de("name must match [a-zA-Z_][a-zA-Z0-9_]*".into()));
        }
        if out.iter().any(|o| o.name == d.name) {
            return Err(de("defined twice".into()));
        }
        let expr = Engine::parse(&d.expr).map_err(|e| de(format!("expr: {e}")))?;
        let params: Vec<String> = d
            .params
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        let params = params.join(",");
        let interval_given = d.interval.clone();
        let kind = if d.method == "peer" {
            peer(&params, d.group_by.clone()).map_err(|e| de(e.to_string()))?
        } else if d.method == "forecast" {
            let every = match &interval_given {
                Some(s) => {
                    humantime::parse_duration(s).map_err(|e| de(format!("interval: {e}")))?
                }
                None => Duration::from_secs(10),
            };
            forecast(&params, every).map_err(|e| de(e.to_string()))?
        } else {
            if !d.group_by.is_empty() {
                return Err(de("group_by is for method peer only".into()));
            }
            Kind::Series(Method::parse(&d.method, &params).map_err(|e| de(e.to_string()))?)
        };
        let dur = |s: &Option<String>, key: &str, default: Duration| match s {
            None => Ok(default),
            Some(s) => humantime::parse_duration(s).map_err(|e| de(format!("{key}: {e}"))),
        };
        let interval = dur(&d.interval, "interval", Duration::from_secs(10))?;
        if interval < Duration::from_secs(1) {
            return Err(de("interval: must be at least 1s".into()));
        }
        let history = dur(&d.history, "history", default_history(&kind, interval))?;
        let threshold = d.threshold.unwrap_or(match &kind {
            Kind::Series(m) => m.alarm(),
            _ => 0.99,
        });
        if !(threshold > 0.0 && threshold <= 1.0) {
            return Err(de("threshold: must be in (0, 1]".into()));
        }
        for k in d.labels.keys() {
            if !valid_name(k) || k.starts_with("__") || k == "detector" {
                return Err(de(format!("label {k:?}: not a label name it may set")));
            }
        }
        out.push(Detector {
            name: d.name,
            query: d.expr,
            expr,
            kind,
            interval,
            threshold,
            history,
            labels: d.labels,
            file: file.to_string(),
        });
    }
    Ok(out)
}

fn forecast(params: &str, interval: Duration) -> Result<Kind, ParamsError> {
    let ms = |kv: &Kv| kv.millis().map(|m| Duration::from_millis(m as u64));
    let mut f = Forecast {
        step: interval,
        season: Duration::from_secs(86_400),
        horizon: Duration::from_secs(86_400),
        limit: None,
    };
    for kv in split(params)? {
        match kv.key {
            "step" => f.step = ms(&kv)?,
            "season" if kv.value == "0" || kv.value == "none" => f.season = Duration::ZERO,
            "season" => f.season = ms(&kv)?,
            "horizon" => f.horizon = ms(&kv)?,
            "limit" => f.limit = Some(kv.float()?),
            _ => return Err(Kv::unknown(&kv, "forecast")),
        }
    }
    if f.step < Duration::from_secs(1) || f.horizon < f.step {
        return Err(ParamsError(
            "parameters step and horizon: step at least 1s, horizon at least one step".into(),
        ));
    }
    if f.horizon.as_millis() / f.step.as_millis() > 100_000 {
        return Err(ParamsError(
            "parameter horizon: at most 100 000 steps".into(),
        ));
    }
    Ok(Kind::Forecast(f))
}

fn peer(params: &str, group_by: Vec<String>) -> Result<Kind, ParamsError> {
    let mut min_peers = 3;
    let mut cut = 3.5;
    for kv in split(params)? {
        match kv.key {
            "min_peers" => min_peers = kv.int()?.max(3),
            "cut" => {
                cut = kv.float()?;
                if cut <= 0.0 {
                    return Err(ParamsError("parameter cut: must be above 0".into()));
                }
            }
            _ => return Err(Kv::unknown(&kv, "peer")),
        }
    }
    Ok(Kind::Peer {
        group_by,
        min_peers,
        cut,
    })
}

/// Enough history for a model to be what it was before a restart: the points its memory and
/// calibration hold (seven periods for a seasonal profile), at most 7 days.
fn default_history(kind: &Kind, interval: Duration) -> Duration {
    let frame_points = |f: &Frame| f.calibration + f.warmup;
    let points = match kind {
        Kind::Series(Method::Knn(p)) => (p.memory + p.window).max(frame_points(&p.frame)),
        Kind::Series(Method::Seasonal(p)) => {
            let periods = Duration::from_millis(p.period_ms as u64 * 7);
            return periods.min(Duration::from_secs(7 * 86_400));
        }
        Kind::Series(Method::Ensemble(e)) => {
            let mut most = frame_points(&e.frame);
            for m in &e.members {
                let h = default_history(&Kind::Series(m.clone()), interval);
                most = most.max((h.as_millis() / interval.as_millis().max(1)) as usize);
            }
            most
        }
        Kind::Series(Method::Ewma(p)) => frame_points(&p.frame),
        Kind::Series(Method::Changepoint(p)) => frame_points(&p.frame),
        Kind::Series(Method::Context(p)) => p.relearn.max(frame_points(&p.frame)),
        Kind::Peer { .. } => 0,
        // Four seasons (or four horizons without one) to fit from, at most 7 days.
        Kind::Forecast(f) => {
            let span = if f.season.is_zero() {
                f.horizon
            } else {
                f.season
            };
            return (span * 4).min(Duration::from_secs(7 * 86_400));
        }
    };
    (interval * points as u32).min(Duration::from_secs(7 * 86_400))
}

fn valid_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_parses_with_defaults_and_errors_name_the_detector() {
        let ds = parse(
            "d.yml",
            r#"
detectors:
  - name: cpu
    expr: sum by (instance) (rate(node_cpu_seconds_total{mode!="idle"}[1m]))
    method: knn
    params: {window: 8, memory: 600}
    labels: {team: infra}
  - name: fleet_load
    expr: node_load1
    method: peer
    group_by: [job]
    params: {min_peers: 4, cut: 3}
    interval: 30s
    threshold: 0.995
    history: 1h
"#,
        )
        .expect("parses");
        assert_eq!(ds.len(), 2);
        assert_eq!(ds[0].interval, Duration::from_secs(10));
        assert_eq!(ds[0].threshold, 0.99);
        // kNN: memory + window points of history.
        assert_eq!(ds[0].history, Duration::from_secs(6080));
        assert!(
            matches!(&ds[0].kind, Kind::Series(Method::Knn(p)) if p.window == 8 && p.memory == 600)
        );
        assert!(
            matches!(&ds[1].kind, Kind::Peer { group_by, min_peers: 4, cut } if group_by == &["job"] && *cut == 3.0)
        );
        assert_eq!(ds[1].history, Duration::from_secs(3600));
        let f = parse(
            "f.yml",
            "detectors:\n  - name: fs\n    expr: node_filesystem_avail_bytes\n    method: forecast\n    interval: 5m\n    params: {horizon: 2d, limit: 0}\n",
        )
        .expect("forecast");
        assert_eq!(
            f[0].kind,
            Kind::Forecast(Forecast {
                step: Duration::from_secs(300),
                season: Duration::from_secs(86_400),
                horizon: Duration::from_secs(2 * 86_400),
                limit: Some(0.0),
            })
        );
        assert_eq!(f[0].history, Duration::from_secs(4 * 86_400));
        let bad = |text: &str| parse("d.yml", text).unwrap_err().to_string();
        let one = |extra: &str| {
            format!("detectors:\n  - name: x\n    expr: up\n    method: ewma\n{extra}")
        };
        assert!(bad(&one("    params: {alpha: 3}\n")).contains("detector \"x\": parameter alpha"));
        assert!(bad("detectors:\n  - name: f\n    expr: up\n    method: forecast\n    params: {horizon: 1s, step: 1m}\n").contains("horizon at least one step"));
        assert!(
            bad("detectors:\n  - name: p\n    expr: up\n    method: peer\n    params: {hold: 3}\n")
                .contains("unknown parameter \"hold\" for method peer")
        );
        assert!(bad(&one("    interval: 10ms\n")).contains("at least 1s"));
        assert!(bad(&one("    threshold: 1.5\n")).contains("threshold"));
        assert!(bad(&one("    group_by: [job]\n")).contains("peer only"));
        assert!(bad(&one("    labels: {detector: y}\n")).contains("label \"detector\""));
        assert!(bad(&one("    colour: red\n")).contains("colour"));
        assert!(
            bad("detectors:\n  - name: x\n    expr: 'rate(up'\n    method: knn\n").contains("expr")
        );
        assert!(
            bad("detectors:\n  - name: 1x\n    expr: up\n    method: knn\n")
                .contains("name must match")
        );
        assert!(
            bad("detectors:\n  - name: x\n    expr: up\n    method: magic\n")
                .contains("unknown method")
        );
        assert!(
            bad(&format!(
                "{}  - name: x\n    expr: up\n    method: knn\n",
                one("")
            ))
            .contains("defined twice")
        );
    }
}
