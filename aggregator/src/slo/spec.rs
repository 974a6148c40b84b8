//! SLO files as users write them: Sloth's `prometheus/v1` and OpenSLO (`openslo/v1`, and the
//! `openslo/v1alpha` Sloth reads), one or several YAML documents per file, read into
//! [`Slo`]s. Every problem names the file, the SLO and the key.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::{
    AlertSpec, Alerting, Query, Sli, Slo, SloError, check_labels, check_name, check_objective,
};

/// Sloth's default SLO period (its `--default-slo-period`); Sloth files carry none.
pub const SLOTH_PERIOD: Duration = Duration::from_secs(30 * 86_400);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlothFile {
    #[serde(rename = "version")]
    _version: String,
    service: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    slos: Vec<SlothSlo>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlothSlo {
    name: String,
    objective: f64,
    #[serde(default)]
    description: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    sli: SlothSli,
    #[serde(default)]
    alerting: Option<SlothAlerting>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlothSli {
    #[serde(default)]
    events: Option<SlothEvents>,
    #[serde(default)]
    raw: Option<SlothRaw>,
    #[serde(default)]
    plugin: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlothEvents {
    error_query: String,
    total_query: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlothRaw {
    error_ratio_query: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SlothAlerting {
    #[serde(default)]
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    page_alert: SlothAlert,
    #[serde(default)]
    ticket_alert: SlothAlert,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SlothAlert {
    #[serde(default)]
    disable: bool,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// Reads every SLO of a file's text.
pub fn parse(file: &Path, text: &str) -> Result<Vec<Slo>, SloError> {
    let err = |m: String| SloError {
        file: file.display().to_string(),
        message: m,
    };
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| err(e.to_string()))?;
    let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    if docs.is_empty() {
        return Err(err("no SLO document".into()));
    }
    // OpenSLO SLIs a document of the same file may refer to (`indicatorRef`).
    let mut slis = BTreeMap::new();
    for d in &docs {
        if d.get("kind").and_then(Value::as_str) == Some("SLI") {
            let name = d
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .ok_or_else(|| err("an SLI document has no metadata.name".into()))?;
            slis.insert(
                name.to_string(),
                d.get("spec").cloned().unwrap_or(Value::Null),
            );
        }
    }
    let mut out = Vec::new();
    for d in &docs {
        if let Some(v) = d.get("version").and_then(Value::as_str) {
            if v != "prometheus/v1" {
                return Err(err(format!(
                    "version {v:?}: Sloth files are \"prometheus/v1\""
                )));
            }
            let f: SlothFile = serde_json::from_value(d.clone()).map_err(|e| err(e.to_string()))?;
            out.extend(sloth(file, f).map_err(err)?);
            continue;
        }
        match (
            d.get("apiVersion").and_then(Value::as_str),
            d.get("kind").and_then(Value::as_str),
        ) {
            (Some(v @ ("openslo/v1" | "openslo/v1alpha")), Some("SLO")) => {
                out.extend(super::openslo::slos(file, v, d, &slis).map_err(|e| err(e.0))?);
            }
            (Some("openslo/v1" | "openslo/v1alpha"), Some("SLI" | "Service")) => {}
            (Some(v @ ("openslo/v1" | "openslo/v1alpha")), Some(k)) => {
                return Err(err(format!(
                    "{v} kind {k:?} is not read (SLO, SLI and Service are)"
                )));
            }
            _ => {
                return Err(err(
                    "neither a Sloth file (version: prometheus/v1) nor an OpenSLO document \
                     (apiVersion: openslo/v1, kind: SLO)"
                        .into(),
                ));
            }
        }
    }
    let mut ids = std::collections::HashSet::new();
    for s in &out {
        if !ids.insert(s.id.clone()) {
            return Err(err(format!("SLO {:?} is defined twice", s.id)));
        }
    }
    Ok(out)
}

fn sloth(file: &Path, f: SlothFile) -> Result<Vec<Slo>, String> {
    check_name("service", &f.service)?;
    check_labels(&f.labels).map_err(|e| format!("labels: {e}"))?;
    let mut out = Vec::new();
    for s in f.slos {
        let slo_name = s.name.clone();
        let at = |m: String| format!("SLO {slo_name:?}: {m}");
        check_name("name", &s.name).map_err(at)?;
        check_objective(s.objective).map_err(at)?;
        check_labels(&s.labels).map_err(|e| at(format!("labels: {e}")))?;
        let sli = match (s.sli.events, s.sli.raw, s.sli.plugin) {
            (Some(e), None, None) => Sli::Events {
                error: Query::windowed(e.error_query),
                total: Query::windowed(e.total_query),
            },
            (None, Some(r), None) => Sli::Raw {
                error_ratio: Query::windowed(r.error_ratio_query),
            },
            (None, None, Some(_)) => {
                return Err(at(
                    "sli.plugin: Sloth's SLI plugins are Go code and are not run; write the \
                     SLI as sli.events or sli.raw"
                        .into(),
                ));
            }
            _ => {
                return Err(at(
                    "sli: exactly one of events (error_query, total_query) and raw \
                     (error_ratio_query)"
                        .into(),
                ));
            }
        };
        let alerting = s.alerting.unwrap_or_default();
        let spec = |a: SlothAlert| {
            (!a.disable).then_some(AlertSpec {
                labels: a.labels,
                annotations: a.annotations,
            })
        };
        let (page, ticket) = (spec(alerting.page_alert), spec(alerting.ticket_alert));
        let alerting = if page.is_none() && ticket.is_none() {
            None
        } else {
            if alerting.name.is_empty() {
                return Err(at(
                    "alerting.name is required unless both page_alert and ticket_alert are \
                     disabled"
                        .into(),
                ));
            }
            if !telltale_common::model::valid_metric_name(&alerting.name) {
                return Err(at(format!(
                    "alerting.name {:?} is not a valid alert name",
                    alerting.name
                )));
            }
            for (k, l) in [("alerting.labels", &alerting.labels)]
                .into_iter()
                .chain(page.iter().map(|p| ("page_alert.labels", &p.labels)))
                .chain(ticket.iter().map(|p| ("ticket_alert.labels", &p.labels)))
            {
                check_labels(l).map_err(|e| at(format!("{k}: {e}")))?;
            }
            Some(Alerting {
                name: alerting.name,
                labels: alerting.labels,
                annotations: alerting.annotations,
                page,
                ticket,
            })
        };
        let mut labels = f.labels.clone();
        labels.extend(s.labels);
        let slo = Slo {
            id: format!("{}-{}", f.service, s.name),
            service: f.service.clone(),
            name: s.name,
            description: s.description,
            objective: s.objective,
            period: SLOTH_PERIOD,
            labels,
            sli,
            alerting,
            spec: "prometheus/v1",
            file: file.to_path_buf(),
        };
        slo.check_queries().map_err(at)?;
        out.push(slo);
    }
    Ok(out)
}
