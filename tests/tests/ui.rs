//! The web UI in a real browser: headless Chromium (Debian's chromium + chromium-driver)
//! against a running aggregator with a real agent. Every page loads without a console error;
//! each chart's series count and value range equal the API's answer for its query over the
//! same range; a query typed into the Explore box renders its chart; the incident page shows
//! its timeline; the Pipeline page draws the graph `/api/v1/pipeline` answers, and the Mermaid
//! text of that endpoint is parsed and rendered by the real Mermaid library from npm in the
//! same Chromium; silences are made and expired from the Alerts page. Screenshots go to
//! `target/tmp/ui-*.png`.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use telltale_tests::peers::{free_tcp_port, peer};
use telltale_tests::webdriver::{Browser, CHROMEDRIVER, ENTER};
use telltale_tests::{
    Aggregator, certs_init, certs_issue, enc, http_get, http_post, http_post_auth, loki_push,
    start_agent_with_config, start_aggregator, start_quick_aggregator, wait_for,
};

const TOKEN: &str = "s3cret";

fn artefacts() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let _ = std::fs::create_dir_all(&d);
    d
}

/// min and max of a matrix answer's values, and its series count.
fn api_range(agg: &Aggregator, query: &str, start: i64, end: i64, step: i64) -> (usize, f64, f64) {
    let q: String = [
        ("query", query.to_string()),
        ("start", (start / 1000).to_string()),
        ("end", (end / 1000).to_string()),
        ("step", (step / 1000).to_string()),
    ]
    .iter()
    .map(|(k, v)| format!("{k}={}", enc(v)))
    .collect::<Vec<_>>()
    .join("&");
    let (st, body) = http_get(agg.http, &format!("/api/v1/query_range?{q}")).expect("query");
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for s in &result {
        for p in s["values"].as_array().into_iter().flatten() {
            if let Some(x) = p[1].as_str().and_then(|x| x.parse::<f64>().ok())
                && x.is_finite()
            {
                lo = lo.min(x);
                hi = hi.max(x);
            }
        }
    }
    (result.len(), lo, hi)
}

/// Every chart the page published agrees with the API for its query and range.
fn charts_agree(browser: &Browser, agg: &Aggregator, want: usize) -> Vec<Value> {
    let charts = browser
        .wait_for(
            &format!(
                "return window.telltaleReady && window.telltaleCharts.length >= {want} ? window.telltaleCharts : null"
            ),
            Duration::from_secs(30),
        )
        .expect("charts drawn");
    let charts = charts.as_array().cloned().unwrap_or_default();
    for c in &charts {
        let (n, lo, hi) = api_range(
            agg,
            c["query"].as_str().unwrap_or(""),
            c["start"].as_i64().unwrap_or(0),
            c["end"].as_i64().unwrap_or(0),
            c["step"].as_i64().unwrap_or(15_000),
        );
        assert_eq!(c["series"].as_u64(), Some(n as u64), "{c}");
        // Equal to float noise (1e-9 relative): a sample collected just before the range's
        // end may be stored between the page's query and the test's.
        let close = |a: Option<f64>, b: f64| {
            a.is_some_and(|a| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-300))
        };
        if n > 0 && lo.is_finite() {
            assert!(close(c["min"].as_f64(), lo), "{c}: API min {lo}");
            assert!(close(c["max"].as_f64(), hi), "{c}: API max {hi}");
        }
    }
    charts
}

fn no_console_errors(browser: &Browser, page: &str) {
    let bad: Vec<(String, String)> = browser
        .console()
        .expect("console log")
        .into_iter()
        .filter(|(level, _)| level == "SEVERE")
        .collect();
    assert!(bad.is_empty(), "{page}: console errors {bad:?}");
}

#[test]
fn every_page_loads_and_charts_match_the_api() {
    let Some(driver) = peer(CHROMEDRIVER, "chromium-driver") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = dir.path().join("tls");
    certs_init(&tls).expect("certs");
    certs_issue(&tls, "web-1").expect("agent cert");
    let agg = start_quick_aggregator(&tls, dir.path(), TOKEN, &[]).expect("aggregator starts");
    // The agent takes OTLP too, for the trace pages.
    let (otlp, grpc) = (free_tcp_port(), free_tcp_port());
    let agent_cfg = dir.path().join("agent.toml");
    std::fs::write(
        &agent_cfg,
        format!(
            "[otlp]\nenabled = true\nhttp_listen = \"127.0.0.1:{otlp}\"\ngrpc_listen = \"127.0.0.1:{grpc}\"\n"
        ),
    )
    .expect("write");
    let agent = start_agent_with_config(
        &tls,
        "web-1",
        agg.quic,
        &dir.path().join("agent"),
        "1s",
        Some(&agent_cfg),
    )
    .expect("agent");
    agent
        .wait_log("OTLP/gRPC receiver started", Duration::from_secs(20))
        .expect("the OTLP receiver starts");
    // Enough data for rates, and an incident to show.
    wait_for(Duration::from_secs(60), || {
        let (_, b) = http_get(
            agg.http,
            "/api/v1/query?query=count(rate(node_cpu_seconds_total%5B1m%5D))",
        )
        .ok()?;
        b.contains("\"value\"").then_some(())
    })
    .expect("agent data");
    let alert = json!([{"labels": {"alertname": "DiskFull", "instance": "web-1", "severity": "critical"},
        "annotations": {"summary": "disk full"}}]);
    let (st, b) = http_post_auth(
        agg.http,
        "/api/v2/alerts",
        "application/json",
        alert.to_string().as_bytes(),
        Some(TOKEN),
    )
    .expect("post alert");
    assert_eq!(st, 200, "{b}");
    let incident = wait_for(Duration::from_secs(20), || {
        let (_, b) = http_get(agg.http, "/api/v1/incidents").ok()?;
        let v: Value = serde_json::from_str(&b).ok()?;
        v["data"][0]["id"].as_str().map(String::from)
    })
    .expect("an incident");

    // 30 log lines, a third of them errors.
    let now_ns = telltale_common::model::now_ms() * 1_000_000;
    let entries = (0..30i64)
        .map(|i| telltale_common::wire::LogEntry {
            t_ns: now_ns - (30 - i) * 1_000_000_000,
            line: if i % 3 == 0 {
                format!("level=error msg=\"disk {i} failed\"")
            } else {
                format!("level=info msg=\"request {i} served\"")
            },
            metadata: Vec::new(),
        })
        .collect();
    loki_push(
        agg.http,
        TOKEN,
        &[telltale_common::wire::LogStream {
            // The incident's host, so its page shows them too.
            labels: vec![
                ("job".into(), "uitest".into()),
                ("instance".into(), "web-1".into()),
            ],
            entries,
        }],
    )
    .expect("log push");

    // One trace of three spans, one of them failing.
    let trace_id = format!("{:032x}", now_ns as u128 ^ 0x5eed);
    let t0 = now_ns - 5_000_000_000;
    let span = |id: &str, parent: &str, name: &str, from_ms: i64, ms: i64, code: u8| {
        format!(
            r#"{{"traceId":"{trace_id}","spanId":"{id}","parentSpanId":"{parent}","name":"{name}","kind":2,"startTimeUnixNano":"{}","endTimeUnixNano":"{}","status":{{"code":{code}}}}}"#,
            t0 + from_ms * 1_000_000,
            t0 + (from_ms + ms) * 1_000_000
        )
    };
    let body = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"checkout"}}}}]}},"scopeSpans":[{{"spans":[{},{},{}]}}]}}]}}"#,
        span("00000000000000a1", "", "POST /checkout", 0, 100, 0),
        span(
            "00000000000000a2",
            "00000000000000a1",
            "SELECT cart",
            10,
            50,
            0
        ),
        span(
            "00000000000000a3",
            "00000000000000a1",
            "charge card",
            65,
            20,
            2
        ),
    );
    let (st, b) = http_post(
        std::net::SocketAddr::from(([127, 0, 0, 1], otlp)),
        "/v1/traces",
        "application/json",
        body.as_bytes(),
    )
    .expect("OTLP post");
    assert_eq!(st, 200, "{b}");
    wait_for(Duration::from_secs(60), || {
        let (_, b) = http_get(agg.http, &format!("/api/traces/{trace_id}")).ok()?;
        let v: Value = serde_json::from_str(&b).ok()?;
        (v["data"][0]["spans"].as_array()?.len() == 3).then_some(())
    })
    .expect("the trace is stored");

    let browser = Browser::start(&driver).expect("chromium starts");
    let base = format!("http://{}/", agg.http);
    let shot = |name: &str| {
        let _ = browser.screenshot(&artefacts().join(format!("ui-{name}.png")));
    };
    // Every page of the menu.
    for (page, must) in [
        ("", "web-1"),
        ("#/explore", "Run"),
        ("#/logs", "Run"),
        ("#/traces", "checkout"),
        ("#/dashboards", "Host"),
        ("#/alerts", "DiskFull"),
        ("#/slos", "SLOs"),
        ("#/remediations", "Remediation is"),
        ("#/reports", "Make one now"),
    ] {
        browser.goto(&format!("{base}{page}")).expect("load");
        browser
            .wait_for(
                "return window.telltaleReady === true",
                Duration::from_secs(30),
            )
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        let text = browser
            .eval("return document.body.innerText")
            .expect("text");
        let text = text.as_str().unwrap_or("");
        assert!(text.contains(must), "{page}: {must:?} missing in {text}");
        assert!(!text.contains("Cannot load this page"), "{page}: {text}");
        no_console_errors(&browser, page);
        shot(if page.is_empty() {
            "overview"
        } else {
            &page[2..]
        });
    }

    // The Overview lists each agent's sources as its hello named them.
    browser.goto(&base).expect("load");
    let sources = browser
        .wait_for(
            "const c = [...document.querySelectorAll('td')].find(td => td.textContent.startsWith('host, ')); return window.telltaleReady && c ? c.textContent : null",
            Duration::from_secs(30),
        )
        .expect("the agent's sources");
    assert!(
        sources.as_str().unwrap_or("").ends_with("traces"),
        "{sources}"
    );

    // The host dashboard: one chart per panel, each equal to the API's answer.
    browser
        .goto(&format!("{base}#/dashboard/host?host=web-1&range=15m"))
        .expect("load");
    let charts = charts_agree(&browser, &agg, 8);
    assert_eq!(charts.len(), 8);
    assert!(
        charts.iter().any(|c| c["series"].as_u64().unwrap_or(0) > 0),
        "the host has data: {charts:?}"
    );
    no_console_errors(&browser, "host dashboard");
    shot("host-dashboard");

    // Explore: a query typed into the box renders its chart.
    browser
        .goto(&format!("{base}#/explore?range=15m"))
        .expect("load");
    browser
        .wait_for(
            "return window.telltaleReady === true",
            Duration::from_secs(30),
        )
        .expect("ready");
    browser
        .eval("window.telltaleCharts = []; return 1")
        .expect("reset");
    browser
        .type_into(
            "#query",
            &format!("rate(node_network_receive_bytes_total[1m]){ENTER}"),
        )
        .expect("type");
    let charts = charts_agree(&browser, &agg, 1);
    assert_eq!(
        charts[0]["query"],
        "rate(node_network_receive_bytes_total[1m])"
    );
    assert!(charts[0]["series"].as_u64().unwrap_or(0) > 0, "{charts:?}");
    no_console_errors(&browser, "explore");
    shot("explore");

    // Logs: the lines the API answers, errors coloured, and a volume chart.
    browser
        .goto(&format!(
            "{base}#/logs?q={}&range=15m",
            enc("{job=\"uitest\"}")
        ))
        .expect("load");
    let n = browser
        .wait_for(
            "return window.telltaleReady && window.telltaleLogs ? window.telltaleLogs.lines : null",
            Duration::from_secs(30),
        )
        .expect("log lines");
    let (st, body) = http_get(
        agg.http,
        &format!(
            "/loki/api/v1/query_range?query={}&limit=500&since=1h",
            enc("{job=\"uitest\"}")
        ),
    )
    .expect("loki query");
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    let api_lines: usize = v["data"]["result"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|s| s["values"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0);
    assert_eq!(api_lines, 30);
    assert_eq!(n.as_u64(), Some(api_lines as u64));
    let errors = browser
        .eval("return document.querySelectorAll('.logline.level-error').length")
        .expect("count");
    assert_eq!(errors.as_u64(), Some(10));
    let volume = browser
        .eval("return window.telltaleCharts.find(c => c.id === 'log-volume')")
        .expect("volume");
    assert_eq!(volume["series"], 1, "{volume}");
    no_console_errors(&browser, "logs");
    shot("logs");

    // Traces: the service's list holds the trace; its waterfall has the three spans, one red.
    browser
        .goto(&format!("{base}#/traces?service=checkout"))
        .expect("load");
    browser
        .wait_for(
            "return window.telltaleReady && window.telltaleTraces ? window.telltaleTraces.traces : null",
            Duration::from_secs(30),
        )
        .expect("trace list");
    let text = browser
        .eval("return document.body.innerText")
        .expect("text");
    assert!(text.as_str().unwrap_or("").contains(&trace_id), "{text}");
    no_console_errors(&browser, "traces");
    browser
        .goto(&format!("{base}#/trace/{trace_id}"))
        .expect("load");
    let n = browser
        .wait_for(
            "return window.telltaleReady && window.telltaleTrace ? window.telltaleTrace.spans : null",
            Duration::from_secs(30),
        )
        .expect("waterfall");
    assert_eq!(n.as_u64(), Some(3));
    let rows = browser
        .eval("return [document.querySelectorAll('.span-row').length, document.querySelectorAll('.span-bar.span-error').length]")
        .expect("rows");
    assert_eq!(rows, json!([3, 1]));
    no_console_errors(&browser, "trace");
    shot("trace");

    // The incident page shows its timeline.
    browser
        .goto(&format!("{base}#/incident/{incident}"))
        .expect("load");
    let n = browser
        .wait_for(
            "const t = document.querySelectorAll('#timeline li'); return window.telltaleReady && t.length ? t.length : null",
            Duration::from_secs(30),
        )
        .expect("timeline");
    assert!(n.as_u64().unwrap_or(0) >= 1);
    let text = browser
        .eval("return document.body.innerText")
        .expect("text");
    assert!(text.as_str().unwrap_or("").contains("DiskFull"), "{text}");
    // ... and the root cause host's metrics around its start, each chart equal to the API's
    // answer, and the host's log lines of that window, errors coloured.
    let charts = charts_agree(&browser, &agg, 4);
    assert_eq!(charts.len(), 4, "{charts:?}");
    // The gauges (load, memory) have points; rates over 5m may not yet, a few seconds after
    // the agent's first sample (the API agrees either way, checked above).
    assert!(
        charts
            .iter()
            .any(|c| c["series"].as_u64().unwrap_or(0) >= 1),
        "the host has data: {charts:?}"
    );
    let logs = browser
        .wait_for(
            "return window.telltaleIncidentLogs === undefined ? null : [window.telltaleIncidentLogs, document.querySelectorAll('#incident-logs .level-error').length]",
            Duration::from_secs(30),
        )
        .expect("incident logs");
    assert_eq!(logs, json!([30, 10]), "the host's 30 lines, 10 errors");
    no_console_errors(&browser, "incident");
    shot("incident");
}

#[test]
fn the_ui_is_served_and_small() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = dir.path().join("tls");
    certs_init(&tls).expect("certs");
    let agg = start_aggregator(
        &tls,
        &dir.path().join("agg"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--read-token", "r"],
    )
    .expect("aggregator starts");
    let mut total = 0;
    for (path, ty) in [
        ("/", "text/html"),
        ("/ui/app.js", "javascript"),
        ("/ui/chart.js", "javascript"),
        ("/ui/pipeline.js", "javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        // The page and its assets hold no data: served without the read token.
        let (st, body) = http_get(agg.http, path).expect("GET");
        assert_eq!(st, 200, "{path}");
        assert!(!body.is_empty());
        total += body.len();
        let _ = ty;
    }
    // Uncompressed, well under the 300 KB gzipped budget.
    assert!(total < 300 * 1024, "{total} bytes");
    // The data still needs the token.
    let (st, _) = http_get(agg.http, "/api/v1/dashboards").expect("GET");
    assert_eq!(st, 401);
}

#[test]
fn a_dashboard_file_broken_after_start_is_named_and_the_built_ins_stay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = dir.path().join("tls");
    certs_init(&tls).expect("certs");
    let boards = dir.path().join("dashboards");
    std::fs::create_dir_all(&boards).expect("mkdir");
    std::fs::write(
        boards.join("mine.json"),
        r#"{"name": "mine", "title": "Mine", "panels": [{"title": "up", "expr": "up"}]}"#,
    )
    .expect("write");
    let boards_arg = boards.display().to_string();
    let agg = start_aggregator(
        &tls,
        &dir.path().join("agg"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--dashboards", &boards_arg],
    )
    .expect("aggregator starts");
    let names = |v: &Value| -> Vec<String> {
        v["data"]["dashboards"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (st, body) = http_get(agg.http, "/api/v1/dashboards").expect("GET");
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(names(&v), ["host", "service", "mine"]);
    // An edit breaks the file: named, and the built-in dashboards are still there.
    std::fs::write(boards.join("mine.json"), "{\"name\": ").expect("write");
    let (st, body) = http_get(agg.http, "/api/v1/dashboards").expect("GET");
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(names(&v), ["host", "service"]);
    assert!(
        v["data"]["errors"][0]
            .as_str()
            .is_some_and(|e| e.contains("mine.json")),
        "{v}"
    );
}

/// Mermaid's browser bundle from npm (`npm install -g mermaid`, done by `.ci/run`).
const MERMAID: &str = "/usr/lib/node_modules/mermaid/dist/mermaid.min.js";

/// Parses and renders `text` with the real Mermaid in the browser's current page (a file page
/// that loaded the bundle): `Ok(rendered node count)` or Mermaid's error.
fn mermaid_render(browser: &Browser, text: &str, id: &str) -> Result<u64, String> {
    let t = serde_json::to_string(text).expect("json string");
    browser
        .eval(&format!(
            "window.__mermaid = null; const t = {t};
             mermaid.parse(t)
               .then(() => mermaid.render('{id}', t))
               .then((r) => {{ const box = document.createElement('div');
                              box.innerHTML = r.svg;
                              document.getElementById('out').append(box);
                              window.__mermaid = {{ ok: box.querySelectorAll('g.node').length }}; }})
               .catch((e) => {{ window.__mermaid = {{ err: String(e && e.message || e) }}; }});
             return 1"
        ))
        .expect("start mermaid");
    let r = browser
        .wait_for("return window.__mermaid", Duration::from_secs(60))
        .expect("mermaid answers");
    match r["ok"].as_u64() {
        Some(n) => Ok(n),
        None => Err(r["err"].as_str().unwrap_or("?").to_string()),
    }
}

#[test]
fn the_pipeline_page_and_its_mermaid_are_right_and_silences_are_made_and_expired_in_the_ui() {
    let Some(driver) = peer(CHROMEDRIVER, "chromium-driver") else {
        return;
    };
    let Some(mermaid_js) = peer(MERMAID, "mermaid (npm install -g mermaid)") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = dir.path().join("tls");
    certs_init(&tls).expect("certs");
    certs_issue(&tls, "web-1").expect("agent cert");
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups: [{name: ui, rules: [{alert: LoadSeen, expr: 'node_load1 >= 0'}]}]\n",
    )
    .expect("write");
    let r = rules.display().to_string();
    let agg =
        start_quick_aggregator(&tls, dir.path(), TOKEN, &["--rules", &r]).expect("aggregator");
    let _agent = start_agent_with_config(
        &tls,
        "web-1",
        agg.quic,
        &dir.path().join("agent"),
        "1s",
        None,
    )
    .expect("agent");
    let graph = || -> Value {
        let (_, b) = http_get(agg.http, "/api/v1/pipeline?format=json").expect("GET");
        serde_json::from_str::<Value>(&b).expect("json")["data"].clone()
    };
    wait_for(Duration::from_secs(60), || {
        let g = graph();
        g["nodes"]
            .as_array()?
            .iter()
            .any(|n| n["id"] == "host" && n["alerting"][0] == "LoadSeen")
            .then_some(())
    })
    .expect("LoadSeen fires and marks the host collectors");

    let browser = Browser::start(&driver).expect("chromium starts");
    let base = format!("http://{}/", agg.http);
    let shot = |name: &str| {
        let _ = browser.screenshot(&artefacts().join(format!("ui-{name}.png")));
    };
    browser.goto(&format!("{base}#/pipeline")).expect("load");
    let drawn = browser
        .wait_for(
            "return window.telltaleReady && window.telltalePipeline ? window.telltalePipeline : null",
            Duration::from_secs(30),
        )
        .expect("pipeline drawn");
    let g = graph();
    let nodes = g["nodes"].as_array().expect("nodes").len() as u64;
    let edges = g["edges"].as_array().expect("edges").len() as u64;
    assert_eq!(drawn["nodes"].as_u64(), Some(nodes), "{drawn}");
    assert_eq!(drawn["drawnEdges"].as_u64(), Some(edges), "{drawn}");
    let dom = browser
        .eval(
            "return [document.querySelectorAll('#pipeline .pl-node').length,
                     document.querySelectorAll('#pipeline .pl-edge').length,
                     document.querySelectorAll('#pipeline .pl-edge.critical').length,
                     [...document.querySelectorAll('#pipeline .pl-node.alerting')].map(n => n.dataset.id)]",
        )
        .expect("dom");
    assert_eq!(dom[0].as_u64(), Some(nodes), "{dom}");
    assert_eq!(dom[1].as_u64(), Some(edges), "{dom}");
    assert_eq!(
        dom[2].as_u64(),
        Some(7),
        "the critical path's seven steps: {dom}"
    );
    assert_eq!(dom[3], json!(["host"]), "{dom}");
    no_console_errors(&browser, "pipeline");
    shot("pipeline");

    // The endpoint's Mermaid text, parsed and rendered by the real Mermaid: as many boxes as
    // the graph has nodes. A broken text is refused (the check can fail).
    let page = dir.path().join("mermaid.html");
    std::fs::write(
        &page,
        format!(
            "<!DOCTYPE html><html><body><div id=\"out\"></div><script src=\"file://{}\"></script></body></html>",
            mermaid_js.display()
        ),
    )
    .expect("write");
    browser
        .goto(&format!("file://{}", page.display()))
        .expect("load");
    browser
        .wait_for(
            "return typeof mermaid !== 'undefined'",
            Duration::from_secs(30),
        )
        .expect("mermaid loads");
    browser
        .eval("mermaid.initialize({startOnLoad: false, securityLevel: 'strict'}); return 1")
        .expect("init");
    for (query, id) in [
        ("", "mermaid-live"),
        ("?figures=false&view=all", "mermaid-all"),
    ] {
        let (st, text) = http_get(agg.http, &format!("/api/v1/pipeline{query}")).expect("GET");
        assert_eq!(st, 200, "{text}");
        let rendered = mermaid_render(&browser, &text, id)
            .unwrap_or_else(|e| panic!("Mermaid refuses /api/v1/pipeline{query}: {e}\n{text}"));
        let want = text
            .lines()
            .filter(|l| l.starts_with("        ") && l.contains("[\""))
            .count() as u64;
        assert_eq!(rendered, want, "{query}: {text}");
    }
    assert!(mermaid_render(&browser, "flowchart LR\n    a[\"x\"] ==>|\"y| b\n", "bad").is_err());
    shot("mermaid");

    // Silences: made from the Alerts page with the token, listed, then expired.
    browser.goto(&base).expect("load");
    browser
        .eval(&format!(
            "localStorage.setItem('telltale-token', '{TOKEN}'); return 1"
        ))
        .expect("token");
    browser.goto(&format!("{base}#/alerts")).expect("load");
    browser
        .wait_for(
            "return window.telltaleReady === true && document.querySelector('#silence-create')",
            Duration::from_secs(30),
        )
        .expect("alerts page");
    browser
        .eval(
            "document.querySelector('input[name=matchers]').value = 'alertname=LoadSeen, instance=~web-.*';
             document.querySelector('input[name=comment]').value = 'maintenance';
             document.querySelector('#silence-create').click(); return 1",
        )
        .expect("create");
    let silences = || -> Vec<Value> {
        let (_, b) = http_get(agg.http, "/api/v2/silences").expect("GET");
        serde_json::from_str::<Value>(&b)
            .expect("json")
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let id = wait_for(Duration::from_secs(20), || {
        silences()
            .into_iter()
            .find(|s| s["comment"] == "maintenance" && s["status"]["state"] == "active")
            .and_then(|s| s["id"].as_str().map(String::from))
    })
    .expect("the silence is made");
    let s = silences()
        .into_iter()
        .find(|s| s["id"] == id.as_str())
        .expect("listed");
    assert_eq!(s["createdBy"], "ui");
    assert_eq!(
        s["matchers"],
        json!([{"name": "alertname", "value": "LoadSeen", "isRegex": false, "isEqual": true},
               {"name": "instance", "value": "web-.*", "isRegex": true, "isEqual": true}])
    );
    browser
        .wait_for(
            &format!("return window.telltaleReady && document.querySelector('button.expire[data-id=\"{id}\"]')"),
            Duration::from_secs(30),
        )
        .expect("the new silence is listed with an expire button");
    shot("silences");
    browser
        .eval(&format!(
            "document.querySelector('button.expire[data-id=\"{id}\"]').click(); return 1"
        ))
        .expect("expire");
    wait_for(Duration::from_secs(20), || {
        silences()
            .into_iter()
            .any(|s| s["id"] == id.as_str() && s["status"]["state"] == "expired")
            .then_some(())
    })
    .expect("the silence is expired");
    no_console_errors(&browser, "alerts");

    // The global remediation switch, from the Remediations page with the token.
    let enabled = || -> bool {
        let (_, b) = http_get(agg.http, "/api/v1/remediation/status").expect("GET");
        serde_json::from_str::<Value>(&b).expect("json")["data"]["enabled"]
            .as_bool()
            .expect("enabled")
    };
    let before = enabled();
    browser
        .goto(&format!("{base}#/remediations"))
        .expect("load");
    browser
        .wait_for(
            "return window.telltaleReady === true && document.querySelector('#remediation-switch')",
            Duration::from_secs(30),
        )
        .expect("remediations page");
    browser
        .eval("document.querySelector('#remediation-switch').click(); return 1")
        .expect("switch");
    wait_for(Duration::from_secs(20), || {
        (enabled() != before).then_some(())
    })
    .expect("the switch flips remediation");
    no_console_errors(&browser, "remediations");
}
