//! The web UI: its page and assets, compiled into the binary (`aggregator/ui/`: hand-written
//! HTML, CSS and JavaScript, no third-party code, nothing fetched from elsewhere), and the
//! dashboards it draws — the built-in host and service dashboards (`config/dashboards/`) and
//! the JSON files of `[ui] dashboards` / `serve --dashboards DIR`, read on every request so an
//! edited file shows at the next load.

use std::path::Path;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::json;
use telltale_common::config::Invalid;

use super::{ApiState, St, success};

const INDEX: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const CHART_JS: &str = include_str!("../../ui/chart.js");
const PIPELINE_JS: &str = include_str!("../../ui/pipeline.js");
const APP_CSS: &str = include_str!("../../ui/app.css");
/// The built-in dashboards.
pub const BUILT_IN: [&str; 2] = [
    include_str!("../../../config/dashboards/host.json"),
    include_str!("../../../config/dashboards/service.json"),
];

/// A dashboard variable: a picker over the values of `label` among the series of `query`,
/// written `$name` in the panels' expressions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    /// Its name (`$name` in expressions).
    pub name: String,
    /// The label whose values it offers.
    pub label: String,
    /// The series those values come from (a selector).
    pub query: String,
}

/// A panel: a chart of one PromQL expression.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Panel {
    /// Its title.
    pub title: String,
    /// The expression (`$var` replaced by the variable's value).
    pub expr: String,
    /// `%` (ratios shown ×100), `bytes`, `s` or none.
    #[serde(default)]
    pub unit: Option<String>,
    /// Stacked areas instead of lines.
    #[serde(default)]
    pub stacked: bool,
}

/// A dashboard.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dashboard {
    /// Its name in URLs (`#/dashboard/NAME`).
    pub name: String,
    /// Its title.
    pub title: String,
    /// Pickers.
    #[serde(default)]
    pub variables: Vec<Variable>,
    /// Charts.
    pub panels: Vec<Panel>,
    /// The file it came from (none: built in).
    #[serde(default, skip_deserializing)]
    pub file: Option<String>,
}

/// Parses and checks one dashboard: its expressions parse with variables filled in.
pub fn parse_dashboard(text: &str, file: Option<&Path>) -> Result<Dashboard, Invalid> {
    let at = file.map_or("(built-in)".to_string(), |f| f.display().to_string());
    let mut d: Dashboard = serde_json::from_str(text).map_err(|e| Invalid(format!("{at}: {e}")))?;
    if d.name.is_empty()
        || !d
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
    {
        return Err(Invalid(format!(
            "{at}: name {:?}: letters, digits, - and _",
            d.name
        )));
    }
    for p in &d.panels {
        let mut q = p.expr.clone();
        for v in &d.variables {
            q = q.replace(&format!("${}", v.name), "x");
        }
        crate::metrics::promql::Engine::parse(&q)
            .map_err(|e| Invalid(format!("{at}: panel {:?}: {e}", p.title)))?;
    }
    for v in &d.variables {
        crate::metrics::promql::Engine::parse(&v.query)
            .map_err(|e| Invalid(format!("{at}: variable {:?}: {e}", v.name)))?;
    }
    d.file = file.map(|f| f.display().to_string());
    Ok(d)
}

/// The built-in dashboards and those of `dir` (`*.json`, by file name); a name twice or a
/// bad file is an error naming it.
pub fn load_dashboards(dir: Option<&Path>) -> Result<Vec<Dashboard>, Invalid> {
    let mut out = Vec::new();
    for text in BUILT_IN {
        out.push(parse_dashboard(text, None)?);
    }
    if let Some(dir) = dir {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Invalid(format!("dashboards {}: {e}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f)
                .map_err(|e| Invalid(format!("{}: {e}", f.display())))?;
            let d = parse_dashboard(&text, Some(&f))?;
            // A file may replace a built-in dashboard of the same name; two files may not
            // share one.
            if let Some(i) = out.iter().position(|o| o.name == d.name) {
                if out[i].file.is_some() {
                    return Err(Invalid(format!(
                        "{}: dashboard {:?} is also in {}",
                        f.display(),
                        d.name,
                        out[i].file.as_deref().unwrap_or("")
                    )));
                }
                out[i] = d;
            } else {
                out.push(d);
            }
        }
    }
    Ok(out)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The dashboards; a file broken after start (an edit) is named in `errors` and the built-in
/// dashboards are still served, so one bad file does not take every dashboard away.
async fn dashboards(State(st): St) -> Result<Response, super::ApiError> {
    let dir = st.dashboards.clone();
    let (list, errors) =
        tokio::task::spawn_blocking(move || match load_dashboards(dir.as_deref()) {
            Ok(l) => Ok((l, Vec::new())),
            Err(e) => load_dashboards(None).map(|l| (l, vec![e.0])),
        })
        .await
        .map_err(|e| super::ApiError::internal(e.to_string()))?
        .map_err(|e| super::ApiError::internal(e.0))?;
    Ok(success(json!({ "dashboards": list, "errors": errors })))
}

/// The routes of this module.
pub fn routes(r: Router<std::sync::Arc<ApiState>>) -> Router<std::sync::Arc<ApiState>> {
    r.route(
        "/",
        get(|| async { asset("text/html; charset=utf-8", INDEX) }),
    )
    .route(
        "/ui/app.js",
        get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
    )
    .route(
        "/ui/chart.js",
        get(|| async { asset("text/javascript; charset=utf-8", CHART_JS) }),
    )
    .route(
        "/ui/pipeline.js",
        get(|| async { asset("text/javascript; charset=utf-8", PIPELINE_JS) }),
    )
    .route(
        "/ui/app.css",
        get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
    )
    .route("/api/v1/dashboards", get(dashboards))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_dashboards_load_and_bad_ones_are_named() {
        let d = load_dashboards(None).expect("built-ins");
        assert_eq!(
            d.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
            ["host", "service"]
        );
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("mine.json"),
            r#"{"name": "host", "title": "My host", "panels": [{"title": "up", "expr": "up"}]}"#,
        )
        .expect("write");
        let d = load_dashboards(Some(dir.path())).expect("loads");
        assert_eq!(
            d[0].title, "My host",
            "a file replaces the built-in of its name"
        );
        std::fs::write(
            dir.path().join("two.json"),
            r#"{"name": "host", "title": "x", "panels": []}"#,
        )
        .expect("write");
        let e = load_dashboards(Some(dir.path())).expect_err("twice").0;
        assert!(e.contains("two.json") && e.contains("also in"), "{e}");
        std::fs::remove_file(dir.path().join("two.json")).expect("rm");
        std::fs::write(
            dir.path().join("bad.json"),
            r#"{"name": "b", "title": "x", "panels": [{"title": "p", "expr": "rate(x[5m]"}]}"#,
        )
        .expect("write");
        let e = load_dashboards(Some(dir.path())).expect_err("bad expr").0;
        assert!(e.contains("bad.json") && e.contains("panel \"p\""), "{e}");
    }

    #[test]
    fn the_grafana_host_dashboard_asks_what_the_built_in_one_asks() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/grafana/telltale-host.json");
        let g: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
        let ours = parse_dashboard(BUILT_IN[0], None).expect("host");
        let theirs: Vec<(String, String)> = g["panels"]
            .as_array()
            .expect("panels")
            .iter()
            .map(|p| {
                (
                    p["title"].as_str().unwrap_or("").to_string(),
                    p["targets"][0]["expr"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let want: Vec<(String, String)> = ours
            .panels
            .iter()
            .map(|p| (p.title.clone(), p.expr.replace("$host", "$instance")))
            .collect();
        assert_eq!(theirs, want);
        assert_eq!(
            g["templating"]["list"][1]["definition"],
            "label_values(node_cpu_seconds_total, instance)"
        );
    }
}
