//! OpenSLO documents: `openslo/v1` (`kind: SLO` with an inline `indicator` or an
//! `indicatorRef` to a `kind: SLI` document of the same file, whose `ratioMetric` has `good`
//! or `bad` and `total` Prometheus queries) and `openslo/v1alpha` (`ratioMetrics` per
//! objective, as Sloth reads it). Each objective is one SLO; the time window is the first
//! rolling one.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use telltale_common::config::Invalid;

use super::{Alerting, Query, Sli, Slo, check_labels, check_name, check_objective};
use crate::alert::prom_duration;

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

/// The SLOs of one `kind: SLO` document.
pub(super) fn slos(
    file: &Path,
    version: &str,
    d: &Value,
    slis: &BTreeMap<String, Value>,
) -> Result<Vec<Slo>, Invalid> {
    let name = str_at(d, "/metadata/name").ok_or("an SLO document has no metadata.name")?;
    let at = |m: String| format!("SLO {name:?}: {m}");
    check_name("metadata.name", name).map_err(at)?;
    let service =
        str_at(d, "/spec/service").ok_or_else(|| at("spec.service is required".into()))?;
    check_name("spec.service", service).map_err(at)?;
    let method = str_at(d, "/spec/budgetingMethod").unwrap_or("Occurrences");
    if method != "Occurrences" {
        return Err(at(format!(
            "budgetingMethod {method:?}: only Occurrences (a ratio of good to total events) \
             is supported"
        ))
        .into());
    }
    let period = window(version, d).map_err(at)?;
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    if let Some(Value::Object(m)) = d.pointer("/metadata/labels") {
        for (k, v) in m {
            // OpenSLO v1 labels may be lists of values; a label keeps them joined.
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Array(a) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            labels.insert(k.clone(), v);
        }
    }
    check_labels(&labels).map_err(|e| at(format!("metadata.labels: {e}")))?;
    let objectives = d
        .pointer("/spec/objectives")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| at("spec.objectives: at least one objective".into()))?;
    let indicator = if version == "openslo/v1" {
        Some(indicator(d, slis).map_err(at)?)
    } else {
        None
    };
    let mut out = Vec::new();
    for (i, o) in objectives.iter().enumerate() {
        let objective = match (
            o.get("target").and_then(Value::as_f64),
            o.get("targetPercent").and_then(Value::as_f64),
        ) {
            (Some(t), None) => t * 100.0,
            (None, Some(p)) => p,
            _ => {
                return Err(at(format!(
                    "objectives[{i}]: exactly one of target (0..1) and targetPercent"
                ))
                .into());
            }
        };
        check_objective(objective).map_err(|e| at(format!("objectives[{i}]: {e}")))?;
        let sli = match &indicator {
            Some(s) => s.clone(),
            None => ratio(o.get("ratioMetrics"), "source")
                .map_err(|e| at(format!("objectives[{i}].ratioMetrics: {e}")))?,
        };
        // Sloth names v1alpha objectives by index; a v1 SLO of one objective keeps its name.
        let slo_name = if version == "openslo/v1" && objectives.len() == 1 {
            name.to_string()
        } else {
            format!("{name}-{i}")
        };
        let slo = Slo {
            id: format!("{service}-{slo_name}"),
            service: service.to_string(),
            name: slo_name,
            description: str_at(d, "/spec/description").unwrap_or("").to_string(),
            objective,
            period,
            labels: labels.clone(),
            sli,
            alerting: Some(Alerting::standard()),
            spec: if version == "openslo/v1" {
                "openslo/v1"
            } else {
                "openslo/v1alpha"
            },
            file: file.to_path_buf(),
        };
        slo.check_queries().map_err(at)?;
        out.push(slo);
    }
    Ok(out)
}

/// The SLO's window: v1 `timeWindow[0].duration` (rolling), v1alpha `timeWindows[0]`
/// (`count` and `unit`); 30 days when absent.
fn window(version: &str, d: &Value) -> Result<Duration, String> {
    if version == "openslo/v1" {
        let Some(w) = d.pointer("/spec/timeWindow/0") else {
            return Ok(super::spec::SLOTH_PERIOD);
        };
        if w.get("isRolling").and_then(Value::as_bool) == Some(false) || w.get("calendar").is_some()
        {
            return Err(
                "timeWindow: calendar-aligned windows are not supported, only rolling \
                        ones"
                    .into(),
            );
        }
        let s = w
            .get("duration")
            .and_then(Value::as_str)
            .ok_or("timeWindow[0].duration is required")?;
        let d = prom_duration(s).map_err(|e| format!("timeWindow[0].duration: {e}"))?;
        return check_period(d);
    }
    let Some(w) = d.pointer("/spec/timeWindows/0") else {
        return Ok(super::spec::SLOTH_PERIOD);
    };
    let count = w
        .get("count")
        .and_then(Value::as_u64)
        .ok_or("timeWindows[0].count is required")?;
    let unit = match w.get("unit").and_then(Value::as_str) {
        Some("Day" | "day" | "d") => 86_400,
        Some("Week" | "week" | "w") => 7 * 86_400,
        Some("Hour" | "hour" | "h") => 3600,
        other => return Err(format!("timeWindows[0].unit {other:?}: Hour, Day or Week")),
    };
    check_period(Duration::from_secs(count.saturating_mul(unit)))
}

fn check_period(d: Duration) -> Result<Duration, String> {
    // The longest multi-window alert window is 3 days: a shorter SLO period makes no sense.
    if d < Duration::from_secs(3 * 86_400) || d > Duration::from_secs(400 * 86_400) {
        return Err(format!(
            "time window {}: from 3 days to 400 days",
            humantime::format_duration(d)
        ));
    }
    Ok(d)
}

/// A v1 SLO's indicator: inline, or the `kind: SLI` document it names.
fn indicator(d: &Value, slis: &BTreeMap<String, Value>) -> Result<Sli, String> {
    let spec = if let Some(i) = d.pointer("/spec/indicator") {
        i.get("spec").ok_or("spec.indicator.spec is required")?
    } else if let Some(r) = str_at(d, "/spec/indicatorRef") {
        slis.get(r).ok_or_else(|| {
            format!("indicatorRef {r:?}: no SLI document of that name in the file")
        })?
    } else {
        return Err("spec.indicator or spec.indicatorRef is required".into());
    };
    if spec.get("thresholdMetric").is_some() {
        return Err(
            "thresholdMetric SLIs (time slices) are not supported: use a ratioMetric".into(),
        );
    }
    ratio(spec.get("ratioMetric"), "metricSource").map_err(|e| format!("ratioMetric: {e}"))
}

/// `good` or `bad`, and `total`, from a ratio metric; `source` is the key holding the
/// query (`metricSource` in v1, the metric itself in v1alpha).
fn ratio(m: Option<&Value>, source: &str) -> Result<Sli, String> {
    let m = m.ok_or("a ratio metric is required")?;
    let counter = m.get("counter").and_then(Value::as_bool).unwrap_or(false);
    let query = |key: &str| -> Result<Option<Query>, String> {
        let Some(q) = m.get(key) else {
            return Ok(None);
        };
        let (kind, text) = if source == "metricSource" {
            let s = q
                .get(source)
                .ok_or(format!("{key}.metricSource is required"))?;
            (
                str_at(s, "/type"),
                str_at(s, "/spec/query").or_else(|| str_at(s, "/spec/promql")),
            )
        } else {
            (str_at(q, "/source"), str_at(q, "/query"))
        };
        if let Some(k) = kind
            && !k.eq_ignore_ascii_case("prometheus")
        {
            return Err(format!(
                "{key}: source {k:?}; only Prometheus queries are read"
            ));
        }
        let text = text.ok_or(format!("{key}: no query"))?;
        Ok(Some(Query {
            text: text.to_string(),
            counter,
        }))
    };
    let total = query("total")?.ok_or("total is required")?;
    match (query("good")?, query("bad")?) {
        (Some(good), None) => Ok(Sli::Good { good, total }),
        (None, Some(bad)) => Ok(Sli::Events { error: bad, total }),
        _ => Err("exactly one of good and bad".into()),
    }
}
