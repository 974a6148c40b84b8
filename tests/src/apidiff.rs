//! The query API's parameters, answered side by side by Prometheus 2.42 and Telltale: times
//! as Unix seconds and RFC 3339, steps as seconds and durations, missing, empty, inverted,
//! overflowing and unparsable values, result types a range query refuses, and the metadata
//! endpoints' `match[]`, `start` and `end`. Each answer is compared on its HTTP status, its
//! `status` and `errorType`, its error text (Grafana shows it as it comes) and, on success,
//! its data.
//!
//! Left out, and listed in the README: a parse error's text (Prometheus prefixes the position,
//! `1:12: parse error: `; Telltale's parser does not give one), `time=NaN`/`Inf` (Prometheus
//! reads them as a wrapped int64 time, Telltale refuses them), label values with `start`
//! after `end` (Prometheus answers as if unbounded, Telltale with nothing).

use serde_json::Value;

use crate::enc;
use crate::fuzz::Pair;

/// Request paths over data ending at `end_ms`.
pub fn requests(end_ms: i64) -> Vec<String> {
    let e = end_ms as f64 / 1000.0;
    let s = e - 600.0;
    let rfc = |t: f64| {
        let secs = t.floor() as u64;
        let st = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        humantime::format_rfc3339(st).to_string()
    };
    let (re, rs) = (rfc(e), rfc(s));
    let q = |query: &str, rest: &str| format!("/api/v1/query?query={}{rest}", enc(query));
    let r = |query: &str, rest: &str| format!("/api/v1/query_range?query={}{rest}", enc(query));
    let sel = enc("node_load1");
    let mut out = vec![
        q("node_load1", &format!("&time={re}")),
        q("node_load1", &format!("&time={rs}")),
        q("node_load1", &format!("&time={e:.3}")),
        q("node_load1", "&time=abc"),
        q("node_load1", "&time=2026-13-01T00:00:00Z"),
        q("node_load1", "&time=1e20"),
        q("node_load1", "&time=-1e20"),
        q("node_load1", &format!("&time={e}&timeout=abc")),
        q("node_load1[5m]", &format!("&time={e}")),
        q("\"text\"", &format!("&time={e}")),
        q("node_load1[5m:1m]", &format!("&time={e}")),
        q("sum by (job) (node_load1)", &format!("&time={e}")),
        r("node_load1", &format!("&start={s}&end={e}&step=15")),
        r("node_load1", &format!("&start={s}&end={e}&step=15s")),
        r("node_load1", &format!("&start={s}&end={e}&step=1m30s")),
        r("node_load1", &format!("&start={rs}&end={re}&step=60")),
        r("node_load1", &format!("&start={s}&end={e}&step=0")),
        r("node_load1", &format!("&start={s}&end={e}&step=-15")),
        r("node_load1", &format!("&start={s}&end={e}&step=abc")),
        r("node_load1", &format!("&start={s}&end={e}&step=1e10")),
        r("node_load1", &format!("&start={s}&end={e}&step=-1e10")),
        r("node_load1", &format!("&start={s}&end={e}")),
        r("node_load1", &format!("&end={e}&step=60")),
        r("node_load1", &format!("&start={s}&step=60")),
        r("node_load1", &format!("&start=abc&end={e}&step=60")),
        r("node_load1", &format!("&start={s}&end=abc&step=60")),
        r("node_load1", &format!("&start={e}&end={s}&step=15")),
        r(
            "node_load1",
            &format!("&start={}&end={e}&step=1", e - 11_000.0),
        ),
        r(
            "node_load1",
            &format!("&start={}&end={e}&step=1", e - 11_001.0),
        ),
        r("node_load1[5m]", &format!("&start={s}&end={e}&step=60")),
        r("\"text\"", &format!("&start={s}&end={e}&step=60")),
        r("1", &format!("&start={s}&end={e}&step=60")),
        format!("/api/v1/series?match[]={sel}&start={s}&end={e}"),
        format!("/api/v1/series?start={s}&end={e}"),
        format!(
            "/api/v1/series?match[]={}&start={s}&end={e}",
            enc("{job=~\".*\"}")
        ),
        format!("/api/v1/series?match[]={sel}&start=abc"),
        format!("/api/v1/series?match[]={sel}&end=abc"),
        format!("/api/v1/labels?start={s}&end={e}"),
        format!("/api/v1/labels?match[]={sel}&start={s}&end={e}"),
        format!("/api/v1/labels?start=abc"),
        "/api/v1/label/job/values".into(),
        format!("/api/v1/label/job/values?match[]={sel}&start={s}&end={e}"),
        "/api/v1/label/__name__/values".into(),
        "/api/v1/label/job/values?start=abc".into(),
        format!("/api/v1/series?match[]={sel}"),
        format!(
            "/api/v1/series?match[]={sel}&match[]={}&start={s}&end={e}",
            enc("http_requests_total{job=\"api\"}")
        ),
        format!("/api/v1/series?match[]={sel}&start={rs}&end={re}"),
        "/api/v1/labels".into(),
        format!(
            "/api/v1/labels?match[]={sel}&match[]={}",
            enc("{__name__=~\"http.*\"}")
        ),
        format!("/api/v1/label/instance/values?match[]={sel}&start={rs}"),
        format!("/api/v1/label/nonexistent/values?start={s}&end={e}"),
        format!("/api/v1/query_exemplars?query={sel}&start={s}&end={e}"),
        format!("/api/v1/query_exemplars?query={sel}"),
        q(
            "node_load1",
            &format!("&time={}", rfc(e).replace('Z', "+00:00")),
        ),
        q("node_load1", &format!("&time={e}&lookback_delta=1m")),
        r(
            "node_load1",
            &format!("&start={s}&end={e}&step=60&timeout=5s"),
        ),
        "/api/v1/label/job/values?end=abc".into(),
        // Half milliseconds: Prometheus rounds the fraction apart and truncates nanoseconds.
        q("time()", &format!("&time={}.0005", e as i64)),
        q("time()", &format!("&time={}.0015", e as i64)),
        q("time()", &format!("&time={}.0235", e as i64)),
        r(
            "time()",
            &format!("&start={}.0005&end={e}&step=15.5", s as i64),
        ),
        r("time()", &format!("&start={s}&end={e}&step=0.0015")),
    ];
    out.dedup();
    out
}

/// What is compared of one answer.
fn essence(status: u16, body: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::String(body.into()));
    let mut e = serde_json::json!({
        "http": status,
        "status": v["status"],
        "errorType": v["errorType"],
        "error": v["error"],
    });
    if v["status"] == "success" {
        e["data"] = v["data"].clone();
    }
    e
}

/// Runs every request on both; each difference as `(path, what differs)`.
pub fn compare(pair: &Pair) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for path in requests(pair.end) {
        let (pc, pb) = crate::http_get(pair.prometheus_addr, &path)?;
        let (tc, tb) = crate::http_get(pair.telltale.http, &path)?;
        let (a, b) = (essence(pc, &pb), essence(tc, &tb));
        if a != b {
            let what: Vec<String> = ["http", "status", "errorType", "error", "data"]
                .iter()
                .filter(|k| a[**k] != b[**k])
                .map(|k| {
                    let cut = |v: &Value| v.to_string().chars().take(160).collect::<String>();
                    format!("{k}: {} vs {}", cut(&a[*k]), cut(&b[*k]))
                })
                .collect();
            out.push((path, what.join("; ")));
        }
    }
    Ok(out)
}
