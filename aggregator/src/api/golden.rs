//! `/api/v1/golden-signals`: every host's saturation and every service's latency, traffic,
//! errors and saturation, read from the golden-signal recording rules' series
//! (config/rules/golden.yml, evaluated built in).

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::routing::get;
use serde_json::{Map, Value as Json, json};

use super::params::{Params, parse_time};
use super::{ApiError, St, success};
use crate::metrics::promql::{Engine, Value};

/// (series name, JSON key) of the service signals.
const SERVICE: [(&str, &str); 5] = [
    ("service:golden_requests:rate5m", "requestsPerSecond"),
    ("service:golden_errors:ratio_rate5m", "errorRatio"),
    ("service:golden_latency_seconds:p50_5m", "latencyP50Seconds"),
    ("service:golden_latency_seconds:p99_5m", "latencyP99Seconds"),
    ("service:golden_saturation:cpu_cores_rate5m", "cpuCores"),
];

fn view(engine: &Engine, t: i64) -> Json {
    let vector = |q: &str| match engine.instant(q, t) {
        Ok(Value::Vector(v)) => v,
        _ => Vec::new(),
    };
    let mut hosts: BTreeMap<String, Map<String, Json>> = BTreeMap::new();
    for (l, s) in vector("instance:golden_saturation:ratio") {
        let (Some(i), Some(r)) = (l.get("instance"), l.get("resource")) else {
            continue;
        };
        hosts
            .entry(i.to_string())
            .or_default()
            .insert(r.to_string(), json!(s.1));
    }
    let mut services: BTreeMap<String, BTreeMap<String, Map<String, Json>>> = BTreeMap::new();
    for (name, key) in SERVICE {
        for (l, s) in vector(name) {
            let Some(svc) = l.get("service") else {
                continue;
            };
            // CPU comes from the service's processes, the other signals from its requests:
            // file CPU under every source the service has.
            let src = l.get("signal_source").unwrap_or("").to_string();
            services
                .entry(svc.to_string())
                .or_default()
                .entry(src)
                .or_default()
                .insert(key.to_string(), json!(s.1));
        }
    }
    let hosts: Vec<Json> = hosts
        .into_iter()
        .map(|(instance, saturation)| json!({"instance": instance, "saturation": saturation}))
        .collect();
    let services: Vec<Json> = services
        .into_iter()
        .map(|(service, by_source)| {
            let cpu = by_source
                .get("process")
                .and_then(|m| m.get("cpuCores"))
                .cloned()
                .unwrap_or(Json::Null);
            let sources: Vec<Json> = by_source
                .into_iter()
                .filter(|(src, _)| src != "process")
                .map(|(src, mut m)| {
                    m.insert("source".into(), json!(src));
                    Json::Object(m)
                })
                .collect();
            json!({"service": service, "cpuCores": cpu, "sources": sources})
        })
        .collect();
    json!({"hosts": hosts, "services": services})
}

async fn golden(
    State(st): St,
    RawQuery(q): RawQuery,
) -> Result<axum::response::Response, ApiError> {
    let p = Params::parse(q.as_deref(), &[]);
    let t = match p.get("time") {
        Some(s) => parse_time(s)
            .map_err(|e| ApiError::bad_data(format!("invalid parameter \"time\": {e}")))?,
        None => telltale_common::model::now_ms(),
    };
    let engine = st.engine.clone();
    let v = tokio::task::spawn_blocking(move || view(&engine, t))
        .await
        .map_err(|e| ApiError::internal(format!("the golden-signal view stopped: {e}")))?;
    Ok(success(v))
}

/// The routes of this module.
pub fn routes(
    r: Router<std::sync::Arc<super::ApiState>>,
) -> Router<std::sync::Arc<super::ApiState>> {
    r.route("/api/v1/golden-signals", get(golden))
}
