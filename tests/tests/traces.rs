//! Traces end to end: applications instrumented with the OpenTelemetry SDK send spans to the
//! agent's OTLP receiver; the RED metrics computed from them are queryable on the aggregator,
//! and the spans reach its trace store, searched through Jaeger's API; hostile requests get
//! OTLP's error answers and the receiver serves on.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use telltale_tests::*;

/// The OpenTelemetry Python SDK and its OTLP/HTTP exporter, or a printed reason (a failure
/// in CI, which installs them).
fn have_otel_sdk() -> bool {
    let have = std::process::Command::new("python3")
        .args([
            "-c",
            "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        assert!(
            std::env::var_os("CI").is_none(),
            "the OpenTelemetry SDK is not installed: .ci/run installs it"
        );
        eprintln!(
            "skipped: python3 -m pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http"
        );
    }
    have
}

/// Runs a Python script (an application using the SDK); fails on its failure or when the
/// SDK says an export failed; returns what it printed.
fn run_python(script: &str) -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .output()
        .expect("python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("Failed to export"), "{stderr}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// An agent with the OTLP receiver on free ports; returns it and the OTLP/HTTP and
/// OTLP/gRPC addresses.
fn otlp_agent(
    dir: &std::path::Path,
    tls: &std::path::Path,
    agg: &Aggregator,
    name: &str,
) -> (Proc, SocketAddr, SocketAddr) {
    certs_issue(tls, name).expect("certificate");
    let (port, grpc) = (free_port(), free_port());
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[otlp]\nenabled = true\nhttp_listen = \"127.0.0.1:{port}\"\ngrpc_listen = \"127.0.0.1:{grpc}\"\n"
        ),
    )
    .expect("config");
    let agent = start_agent_with_config(tls, name, agg.quic, &dir.join(name), "1s", Some(&cfg))
        .expect("agent");
    agent
        .wait_log("OTLP/gRPC receiver started", Duration::from_secs(20))
        .expect("the receiver starts");
    let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    (agent, at(port), at(grpc))
}

/// One value of an instant query (its only series), or `None` while there is none.
/// An aggregator on free loopback ports, data in `dir/agg`, configured by `toml`.
fn configured_aggregator(dir: &std::path::Path, tls: &std::path::Path, toml: &str) -> Aggregator {
    let cfg = dir.join("aggregator.toml");
    std::fs::write(&cfg, toml).expect("config");
    start_aggregator(
        tls,
        &dir.join("agg"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--config", cfg.to_str().expect("utf-8")],
    )
    .expect("aggregator")
}

fn one(agg: &Aggregator, q: &str) -> Option<f64> {
    let r = query(agg.http, q).ok()?;
    r.first()?["value"][1].as_str()?.parse().ok()
}

/// Waits until the query's single value is `want` (the agent sends every second).
fn eventually(agg: &Aggregator, q: &str, want: f64) {
    let got = wait_for(Duration::from_secs(20), || {
        one(agg, q).filter(|v| (v - want).abs() < 1e-9)
    });
    assert!(got.is_some(), "{q}: want {want}, last {:?}", one(agg, q));
}

/// Three services (frontend calls cart and payments; every fifth payment fails) traced with
/// the OpenTelemetry Python SDK: the RED metrics on the aggregator are exactly what the
/// spans say — calls, errors, buckets, sums — over protobuf and gzip-compressed protobuf.
#[test]
fn an_instrumented_app_gets_red_metrics_from_its_spans() {
    if !have_otel_sdk() {
        return;
    }
    let (dir, tls) = scratch_with_ca().expect("scratch");
    let agg = start_fresh_aggregator(&tls, dir.path()).expect("aggregator");
    let (_agent, addr, _) = otlp_agent(dir.path(), &tls, &agg, "otel-1");
    let script = format!(
        r#"
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
import time

def provider(name, compression):
    p = TracerProvider(resource=Resource.create({{"service.name": name}}))
    p.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
        endpoint="http://{addr}/v1/traces", compression=compression)))
    return p

providers = {{
    "frontend": provider("frontend", Compression.NoCompression),
    "cart": provider("cart", Compression.NoCompression),
    "payments": provider("payments", Compression.Gzip),
}}
tr = {{n: p.get_tracer("shop") for n, p in providers.items()}}
t0 = time.time_ns()
for i in range(40):
    base = t0 + i * 1_000_000_000
    root = tr["frontend"].start_span("GET /checkout", kind=SpanKind.SERVER, start_time=base)
    ctx = trace.set_span_in_context(root)
    c = tr["cart"].start_span("cart.get", context=ctx, kind=SpanKind.SERVER, start_time=base + 1_000_000)
    c.end(end_time=base + 4_000_000)
    p = tr["payments"].start_span("charge", context=ctx, kind=SpanKind.SERVER, start_time=base + 5_000_000)
    if i % 5 == 0:
        p.set_status(Status(StatusCode.ERROR, "card declined"))
    p.end(end_time=base + 105_000_000)
    root.end(end_time=base + 300_000_000)
for p in providers.values():
    assert p.force_flush(10_000)
    p.shutdown()
"#
    );
    run_python(&script);
    let calls = |labels: &str| format!("traces_spanmetrics_calls_total{{{labels}}}");
    eventually(
        &agg,
        &calls(
            r#"service="frontend", span_name="GET /checkout", span_kind="SPAN_KIND_SERVER", status_code="STATUS_CODE_UNSET""#,
        ),
        40.0,
    );
    eventually(&agg, &calls(r#"service="cart""#), 40.0);
    eventually(
        &agg,
        &calls(r#"service="payments", status_code="STATUS_CODE_ERROR""#),
        8.0,
    );
    eventually(
        &agg,
        &calls(r#"service="payments", status_code="STATUS_CODE_UNSET""#),
        32.0,
    );
    let bucket = |service: &str, le: &str| {
        format!(r#"sum(traces_spanmetrics_latency_bucket{{service="{service}", le="{le}"}})"#)
    };
    // cart: 3 ms; payments: 100 ms; frontend: 300 ms.
    eventually(&agg, &bucket("cart", "0.002"), 0.0);
    eventually(&agg, &bucket("cart", "0.004"), 40.0);
    eventually(&agg, &bucket("payments", "0.064"), 0.0);
    eventually(&agg, &bucket("payments", "0.128"), 40.0);
    eventually(&agg, &bucket("frontend", "0.256"), 0.0);
    eventually(&agg, &bucket("frontend", "+Inf"), 40.0);
    eventually(
        &agg,
        r#"traces_spanmetrics_latency_sum{service="frontend"}"#,
        12.0,
    );
    eventually(
        &agg,
        r#"sum(traces_spanmetrics_latency_count{service="payments"})"#,
        40.0,
    );
    // The error ratio a RED dashboard draws, and a quantile from the histogram.
    eventually(
        &agg,
        r#"sum(traces_spanmetrics_calls_total{service="payments", status_code="STATUS_CODE_ERROR"}) / sum(traces_spanmetrics_calls_total{service="payments"})"#,
        0.2,
    );
    let p50 = one(
        &agg,
        r#"histogram_quantile(0.5, sum by (le) (traces_spanmetrics_latency_bucket{service="frontend"}))"#,
    )
    .expect("a quantile");
    assert!((0.256..=0.512).contains(&p50), "{p50}");
    eventually(&agg, "telltale_agent_otlp_spans_total", 120.0);
    eventually(&agg, "telltale_agent_otlp_spans_rejected_total", 0.0);
}

/// The SDK's OTLP/gRPC exporter (grpcio), plain and gzip, reaches the same RED metrics; a
/// malformed message and an unknown method get gRPC's status codes with a message.
#[test]
fn the_grpc_exporter_reaches_the_agent_too() {
    if !have_otel_sdk() {
        return;
    }
    let (dir, tls) = scratch_with_ca().expect("scratch");
    let agg = start_fresh_aggregator(&tls, dir.path()).expect("aggregator");
    let (_agent, _, grpc) = otlp_agent(dir.path(), &tls, &agg, "otel-3");
    let script = format!(
        r#"
import grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

def provider(name, compression):
    p = TracerProvider(resource=Resource.create({{"service.name": name}}))
    p.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
        endpoint="http://{grpc}", insecure=True, compression=compression)))
    return p

inventory = provider("inventory", grpc.Compression.NoCompression)
search = provider("search", grpc.Compression.Gzip)
for i in range(20):
    s = inventory.get_tracer("t").start_span("reserve", kind=SpanKind.CLIENT)
    if i % 5 == 0:
        s.set_status(Status(StatusCode.ERROR))
    s.end()
for i in range(10):
    search.get_tracer("t").start_span("query").end()
for p in (inventory, search):
    assert p.force_flush(10_000)
    p.shutdown()

channel = grpc.insecure_channel("{grpc}")
for method, body in [
    ("/opentelemetry.proto.collector.trace.v1.TraceService/Export", b"\x0a\xff\xff\xff"),
    ("/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export", b""),
]:
    try:
        channel.unary_unary(method)(body, timeout=10)
        print("ACCEPTED", method)
    except grpc.RpcError as e:
        print("REFUSED", e.code().name, e.details())
"#
    );
    let stdout = run_python(&script);
    assert!(
        stdout.contains("REFUSED INVALID_ARGUMENT malformed OTLP protobuf body"),
        "{stdout}"
    );
    assert!(stdout.contains("REFUSED UNIMPLEMENTED"), "{stdout}");
    eventually(
        &agg,
        r#"traces_spanmetrics_calls_total{service="inventory", span_kind="SPAN_KIND_CLIENT", status_code="STATUS_CODE_ERROR"}"#,
        4.0,
    );
    eventually(
        &agg,
        r#"traces_spanmetrics_calls_total{service="inventory", status_code="STATUS_CODE_UNSET"}"#,
        16.0,
    );
    eventually(
        &agg,
        r#"traces_spanmetrics_calls_total{service="search", span_kind="SPAN_KIND_INTERNAL"}"#,
        10.0,
    );
    eventually(&agg, "telltale_agent_otlp_requests_refused_total", 2.0);
}

/// A POST as an HTTP/1.0 client sends it; returns the status, the headers and the body.
fn post(addr: SocketAddr, path: &str, headers: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let _ = write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status");
    (status, head, raw[end + 4..].to_vec())
}

/// OTLP/JSON (as a collector or curl sends it) is accepted; malformed bodies, unknown
/// content types and encodings, oversized bodies and bad spans get OTLP's answers with a
/// message saying what is wrong, and the receiver goes on serving.
#[test]
fn otlp_json_and_hostile_requests_get_the_protocols_answers() {
    let (dir, tls) = scratch_with_ca().expect("scratch");
    let agg = start_fresh_aggregator(&tls, dir.path()).expect("aggregator");
    let (_agent, addr, _) = otlp_agent(dir.path(), &tls, &agg, "otel-2");
    let json = |trace_id: &str| {
        format!(
            r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"api"}}}}]}},
            "scopeSpans":[{{"spans":[{{"traceId":"{trace_id}","spanId":"00f067aa0ba902b7",
            "name":"GET /users","kind":2,"startTimeUnixNano":"1700000000000000000",
            "endTimeUnixNano":"1700000000020000000","status":{{"code":2}}}}]}}]}}]}}"#
        )
    };
    let ct_json = "Content-Type: application/json\r\n";
    let (status, head, body) = post(
        addr,
        "/v1/traces",
        ct_json,
        json("4bf92f3577b34da6a3ce929d0e0e4736").as_bytes(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(head.contains("application/json"), "{head}");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON answer");
    assert_eq!(
        v,
        serde_json::json!({}),
        "every span accepted: no partial success"
    );
    // The span travelled to the aggregator's trace store.
    let stored = wait_for(Duration::from_secs(20), || {
        let (code, body) =
            http_get(agg.http, "/api/traces/4bf92f3577b34da6a3ce929d0e0e4736").ok()?;
        (code == 200).then_some(body)
    })
    .expect("the JSON span is stored");
    let v: serde_json::Value = serde_json::from_str(&stored).expect("Jaeger JSON");
    assert_eq!(
        v["data"][0]["spans"][0]["operationName"], "GET /users",
        "{v}"
    );
    // OTLP/JSON metrics (curl-style pushes, the JS exporters) become series too.
    let metrics = r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}}]},
      "scopeMetrics":[{"metrics":[{"name":"jobs.done","sum":{"aggregationTemporality":2,"isMonotonic":true,
      "dataPoints":[{"attributes":[{"key":"queue","value":{"stringValue":"mail"}}],"timeUnixNano":"NOW","asInt":"41"}]}}]}]}]}"#
        .replace(
            "NOW",
            &(telltale_common::model::now_ms() as u64 * 1_000_000).to_string(),
        );
    let (status, _, body) = post(addr, "/v1/metrics", ct_json, metrics.as_bytes());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    eventually(&agg, r#"jobs_done_total{job="api", queue="mail"}"#, 41.0);
    // A span with a bad trace id is rejected alone, and the answer says which and why.
    let (status, _, body) = post(addr, "/v1/traces", ct_json, json("4bf92f").as_bytes());
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON answer");
    assert_eq!(v["partialSuccess"]["rejectedSpans"], "1", "{v}");
    assert!(
        v["partialSuccess"]["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("trace id of 3 bytes")),
        "{v}"
    );
    // Malformed protobuf: 400 with a google.rpc.Status naming the problem.
    let (status, head, body) = post(
        addr,
        "/v1/traces",
        "Content-Type: application/x-protobuf\r\n",
        &[0x0a, 0xff, 0xff, 0xff, 0x0f, 1, 2],
    );
    assert_eq!(status, 400);
    assert!(head.contains("application/x-protobuf"), "{head}");
    assert!(
        String::from_utf8_lossy(&body).contains("malformed OTLP protobuf body"),
        "{body:?}"
    );
    let (status, _, body) = post(addr, "/v1/traces", ct_json, b"{\"resourceSpans\": [");
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("malformed OTLP JSON body"));
    let (status, _, _) = post(addr, "/v1/traces", "Content-Type: text/plain\r\n", b"hi");
    assert_eq!(status, 415);
    let (status, _, body) = post(
        addr,
        "/v1/traces",
        "Content-Type: application/json\r\nContent-Encoding: br\r\n",
        b"{}",
    );
    assert_eq!(status, 415);
    assert!(String::from_utf8_lossy(&body).contains("Content-Encoding"));
    // Not gzip although it says so.
    let (status, _, _) = post(
        addr,
        "/v1/traces",
        "Content-Type: application/json\r\nContent-Encoding: gzip\r\n",
        b"not gzip at all",
    );
    assert_eq!(status, 400);
    // A gzip bomb: 17 MiB of zeros in a few KiB.
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    bomb.write_all(&vec![0u8; 17 << 20]).expect("gzip");
    let bomb = bomb.finish().expect("gzip");
    let (status, _, _) = post(
        addr,
        "/v1/traces",
        "Content-Type: application/x-protobuf\r\nContent-Encoding: gzip\r\n",
        &bomb,
    );
    assert_eq!(status, 413);
    let (status, _, _) = post(addr, "/v1/profiles", ct_json, b"{}");
    assert_eq!(status, 404);
    // Still serving, and the good spans were counted.
    let (status, _, _) = post(
        addr,
        "/v1/traces",
        ct_json,
        json("4bf92f3577b34da6a3ce929d0e0e4737").as_bytes(),
    );
    assert_eq!(status, 200);
    eventually(
        &agg,
        r#"traces_spanmetrics_calls_total{service="api", status_code="STATUS_CODE_ERROR"}"#,
        2.0,
    );
    eventually(&agg, "telltale_agent_otlp_spans_rejected_total", 1.0);
    eventually(&agg, "telltale_agent_otlp_requests_refused_total", 7.0);
}

/// Lines of a LogQL selector over the last ten minutes (the Loki API, as Grafana asks).
fn log_lines(agg: &Aggregator, q: &str) -> Vec<String> {
    let now = telltale_common::model::now_ms() * 1_000_000;
    let (status, body) = http_get(
        agg.http,
        &format!(
            "/loki/api/v1/query_range?direction=forward&limit=1000&start={}&end={}&query={}",
            now - 600_000_000_000,
            now + 60_000_000_000,
            enc(q)
        ),
    )
    .expect("query");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let mut lines: Vec<String> = v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
        .filter_map(|x| x[1].as_str().map(str::to_string))
        .collect();
    lines.sort();
    lines
}

/// Python's `logging` through the OpenTelemetry SDK's LoggingHandler and OTLP log exporters
/// (HTTP, and gRPC from a second service): the records are stored as log lines with their
/// service and level, queryable like any other log source's.
#[test]
fn sdk_logs_reach_the_log_store() {
    if !have_otel_sdk() {
        return;
    }
    let (dir, tls) = scratch_with_ca().expect("scratch");
    let agg = start_fresh_aggregator(&tls, dir.path()).expect("aggregator");
    let (_agent, http, grpc) = otlp_agent(dir.path(), &tls, &agg, "otel-4");
    let script = format!(
        r#"
import logging
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs

def logger(service, exporter):
    lp = LoggerProvider(resource=Resource.create({{"service.name": service}}))
    lp.add_log_record_processor(BatchLogRecordProcessor(exporter))
    log = logging.getLogger(service)
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=lp))
    return lp, log

trace.set_tracer_provider(TracerProvider())
billing_lp, billing = logger("billing", HttpLogs(endpoint="http://{http}/v1/logs"))
mail_lp, mail = logger("mailer", GrpcLogs(endpoint="http://{grpc}", insecure=True))
with trace.get_tracer("t").start_as_current_span("charge"):
    for i in range(10):
        (billing.error if i % 5 == 0 else billing.info)("charge %d done", i)
for i in range(3):
    mail.warning("mail %d queued", i)
for lp in (billing_lp, mail_lp):
    assert lp.force_flush(10_000)
    lp.shutdown()
"#
    );
    run_python(&script);
    let all = wait_for(Duration::from_secs(20), || {
        let l = log_lines(&agg, r#"{source="otlp", service_name="billing"}"#);
        (l.len() >= 10).then_some(l)
    })
    .unwrap_or_else(|| log_lines(&agg, r#"{source="otlp"}"#));
    let want: Vec<String> = {
        let mut w: Vec<String> = (0..10).map(|i| format!("charge {i} done")).collect();
        w.sort();
        w
    };
    assert_eq!(all, want);
    assert_eq!(
        log_lines(&agg, r#"{service_name="billing", level="error"}"#),
        vec!["charge 0 done".to_string(), "charge 5 done".to_string()]
    );
    let mail = wait_for(Duration::from_secs(20), || {
        let l = log_lines(&agg, r#"{service_name="mailer", level="warn"}"#);
        (l.len() >= 3).then_some(l)
    });
    assert_eq!(
        mail,
        Some(vec![
            "mail 0 queued".to_string(),
            "mail 1 queued".to_string(),
            "mail 2 queued".to_string()
        ])
    );
}

/// The SDK's metrics (a counter, a histogram in seconds, an observable gauge) over OTLP/HTTP
/// become Prometheus series on the aggregator, named as OpenTelemetry's Prometheus rules say.
#[test]
fn sdk_metrics_become_prometheus_series() {
    if !have_otel_sdk() {
        return;
    }
    let (dir, tls) = scratch_with_ca().expect("scratch");
    let agg = start_fresh_aggregator(&tls, dir.path()).expect("aggregator");
    let (_agent, http, _) = otlp_agent(dir.path(), &tls, &agg, "otel-5");
    let script = format!(
        r#"
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import Observation

from opentelemetry.sdk.metrics.view import View, ExponentialBucketHistogramAggregation

reader = PeriodicExportingMetricReader(
    OTLPMetricExporter(endpoint="http://{http}/v1/metrics"), export_interval_millis=60_000)
exp = View(instrument_name="payload.size", aggregation=ExponentialBucketHistogramAggregation())
mp = MeterProvider(resource=Resource.create({{"service.name": "shop"}}), metric_readers=[reader], views=[exp])
m = mp.get_meter("shop")
orders = m.create_counter("orders")
for i in range(5):
    orders.add(2, {{"region": "eu" if i < 3 else "us"}})
h = m.create_histogram("checkout.duration", unit="s")
for v in (0.2, 0.3, 7.0):
    h.record(v)
m.create_observable_gauge("queue.size", callbacks=[lambda o: [Observation(12)]])
size = m.create_histogram("payload.size", unit="By")
for v in (3, 5, 100):
    size.record(v)
assert mp.force_flush(10_000)
mp.shutdown()

# Delta temporality (what some SDKs and backends prefer): each export carries only what
# changed since the last one; the agent keeps the running totals.
from opentelemetry.sdk.metrics import Counter, Histogram
from opentelemetry.sdk.metrics.export import AggregationTemporality
delta = {{Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA}}
dreader = PeriodicExportingMetricReader(
    OTLPMetricExporter(endpoint="http://{http}/v1/metrics", preferred_temporality=delta),
    export_interval_millis=60_000)
dmp = MeterProvider(resource=Resource.create({{"service.name": "billing"}}), metric_readers=[dreader])
dm = dmp.get_meter("billing")
invoices = dm.create_counter("invoices")
took = dm.create_histogram("invoice.duration", unit="s")
for batch in range(3):
    for _ in range(batch + 1):
        invoices.add(5)
        took.record(0.5)
    assert dmp.force_flush(10_000)
dmp.shutdown()
"#
    );
    run_python(&script);
    eventually(&agg, r#"orders_total{job="shop", region="eu"}"#, 6.0);
    eventually(&agg, r#"orders_total{job="shop", region="us"}"#, 4.0);
    eventually(
        &agg,
        r#"checkout_duration_seconds_bucket{job="shop", le="5"}"#,
        2.0,
    );
    eventually(
        &agg,
        r#"checkout_duration_seconds_bucket{job="shop", le="+Inf"}"#,
        3.0,
    );
    eventually(&agg, r#"checkout_duration_seconds_sum{job="shop"}"#, 7.5);
    eventually(&agg, r#"queue_size{job="shop"}"#, 12.0);
    // An exponential histogram: `le` buckets from its scale, count and sum as recorded.
    eventually(&agg, r#"payload_size_bytes_count{job="shop"}"#, 3.0);
    eventually(&agg, r#"payload_size_bytes_sum{job="shop"}"#, 108.0);
    eventually(
        &agg,
        r#"payload_size_bytes_bucket{job="shop", le="+Inf"}"#,
        3.0,
    );
    // The median from those buckets lands next to 5, whatever scale the SDK chose.
    eventually(
        &agg,
        r#"count((histogram_quantile(0.5, payload_size_bytes_bucket{job="shop"}) > 4.5) < 5.5)"#,
        1.0,
    );
    // Three delta exports of 5, 10 and 15: the cumulative series the queries expect.
    eventually(&agg, r#"invoices_total{job="billing"}"#, 30.0);
    eventually(
        &agg,
        r#"invoice_duration_seconds_bucket{job="billing", le="+Inf"}"#,
        6.0,
    );
    eventually(&agg, r#"invoice_duration_seconds_sum{job="billing"}"#, 3.0);
    eventually(
        &agg,
        "telltale_agent_otlp_metric_points_rejected_total",
        0.0,
    );
}

/// Percent-encodes a query parameter.
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Jaeger API answer's `data`, or `None` while it is not 200.
fn jaeger(agg: &Aggregator, path: &str) -> Option<serde_json::Value> {
    let (code, body) = http_get(agg.http, path).ok()?;
    if code != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(v["data"].clone())
}

/// Trace ids of a Jaeger search answer, sorted.
fn ids(data: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = data
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["traceID"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A shop of three services on three hosts (an agent each): frontend calls cart and
/// payments. The aggregator samples with ratio 0, so only failed and slow traces are kept —
/// each whole, its spans gathered from the three agents — and Grafana's Jaeger requests
/// find them: services, operations, search by tags and duration, a trace by id (Jaeger and
/// OTLP JSON), dependencies; a dropped trace is a 404.
#[test]
fn traces_across_three_hosts_are_sampled_whole_and_found_through_the_jaeger_api() {
    if !have_otel_sdk() {
        return;
    }
    let (dir, tls) = scratch_with_ca().expect("scratch");
    let agg = configured_aggregator(
        dir.path(),
        &tls,
        "[traces]\ngraph_interval = \"1s\"\n[traces.sampling]\nratio = 0.0\ndecision_wait = \"2s\"\nslow_threshold = \"1s\"\n",
    );
    let hosts: Vec<(Proc, SocketAddr, SocketAddr)> = ["host-a", "host-b", "host-c"]
        .iter()
        .map(|h| otlp_agent(dir.path(), &tls, &agg, h))
        .collect();
    let (a, b, c) = (hosts[0].1, hosts[1].1, hosts[2].1);
    let script = format!(
        r#"
import json, time
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
import logging

lp = LoggerProvider(resource=Resource.create({{"service.name": "payments"}}))
lp.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint="http://{c}/v1/logs")))
plog = logging.getLogger("payments")
plog.setLevel(logging.INFO)
plog.propagate = False
plog.addHandler(LoggingHandler(level=logging.INFO, logger_provider=lp))

def provider(name, addr):
    p = TracerProvider(resource=Resource.create({{"service.name": name}}))
    p.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint="http://" + addr + "/v1/traces")))
    return p

providers = {{"frontend": provider("frontend", "{a}"), "cart": provider("cart", "{b}"), "payments": provider("payments", "{c}")}}
tr = {{n: p.get_tracer("shop") for n, p in providers.items()}}
out = {{"error": [], "slow": [], "plain": [], "long": []}}
for i in range(30):
    base = time.time_ns()
    root = tr["frontend"].start_span("GET /checkout", kind=SpanKind.SERVER, start_time=base)
    root.set_attribute("http.route", "/checkout")
    ctx = trace.set_span_in_context(root)
    cs = tr["cart"].start_span("cart.get", context=ctx, kind=SpanKind.SERVER, start_time=base + 1_000_000)
    cs.end(end_time=base + 4_000_000)
    ps = tr["payments"].start_span("charge", context=ctx, kind=SpanKind.SERVER, start_time=base + 5_000_000)
    failed = i % 5 == 0
    with trace.use_span(ps, end_on_exit=False):
        if failed:
            plog.error("card declined for order %d", i)
        else:
            plog.info("charged order %d", i)
    if failed:
        ps.set_status(Status(StatusCode.ERROR, "card declined"))
    ps.end(end_time=base + 105_000_000)
    slow = i % 7 == 0
    root.end(end_time=base + (1_200_000_000 if slow else 300_000_000))
    tid = format(root.get_span_context().trace_id, "032x")
    out["error" if failed else "slow" if slow else "plain"].append(tid)
    if slow:
        out["long"].append(tid)
for p in providers.values():
    assert p.force_flush(10_000)
    p.shutdown()
assert lp.force_flush(10_000)
lp.shutdown()
print(json.dumps(out))
"#
    );
    let printed = run_python(&script);
    let classes: serde_json::Value = serde_json::from_str(printed.trim()).expect("ids");
    let class = |k: &str| -> Vec<String> {
        let mut v: Vec<String> = classes[k]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect();
        v.sort();
        v
    };
    let (errors, slow, plain) = (class("error"), class("slow"), class("plain"));
    assert_eq!((errors.len(), slow.len(), plain.len()), (6, 4, 20));
    let mut kept: Vec<String> = errors.iter().chain(&slow).cloned().collect();
    kept.sort();
    // Every decision made (the wait is 2 s): 10 traces kept, 20 dropped.
    let decided = wait_for(Duration::from_secs(30), || {
        let (_, m) = http_get(agg.http, "/metrics").ok()?;
        m.contains("telltale_aggregator_traces_decisions_total{reason=\"dropped\"} 20")
            .then_some(m)
    });
    assert!(decided.is_some(), "{:?}", http_get(agg.http, "/metrics"));
    let (_, m) = http_get(agg.http, "/metrics").expect("metrics");
    assert!(
        m.contains("telltale_aggregator_traces_decisions_total{reason=\"error\"} 6"),
        "{m}"
    );
    assert!(
        m.contains("telltale_aggregator_traces_decisions_total{reason=\"slow\"} 4"),
        "{m}"
    );
    assert_eq!(
        jaeger(&agg, "/api/services").expect("services"),
        serde_json::json!(["cart", "frontend", "payments"])
    );
    assert_eq!(
        jaeger(&agg, "/api/services/payments/operations").expect("operations"),
        serde_json::json!(["charge"])
    );
    let ops = jaeger(&agg, "/api/operations?service=frontend&spanKind=server").expect("ops");
    assert_eq!(
        ops,
        serde_json::json!([{"name": "GET /checkout", "spanKind": "server"}])
    );
    // Grafana's search: µs times, a lookback, tags as JSON, Go durations.
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros();
    let range = format!(
        "start={}&end={}&lookback=custom",
        now_us - 3_600_000_000,
        now_us
    );
    let all = jaeger(
        &agg,
        &format!("/api/traces?service=frontend&{range}&limit=100"),
    )
    .expect("all");
    assert_eq!(ids(&all), kept);
    for t in all.as_array().expect("traces") {
        let spans = t["spans"].as_array().expect("spans");
        assert_eq!(spans.len(), 3, "whole: {t}");
        // Each service's process names the host (agent) its span came through.
        let instances: std::collections::BTreeSet<String> = t["processes"]
            .as_object()
            .expect("processes")
            .values()
            .flat_map(|p| p["tags"].as_array().cloned().unwrap_or_default())
            .filter(|tag| tag["key"] == "instance")
            .filter_map(|tag| tag["value"].as_str().map(str::to_string))
            .collect();
        assert_eq!(instances.len(), 3, "{t}");
    }
    let failed = jaeger(
        &agg,
        &format!(
            "/api/traces?service=payments&{range}&limit=100&tags=%7B%22error%22%3A%22true%22%7D"
        ),
    )
    .expect("errors");
    assert_eq!(ids(&failed), errors);
    let long = jaeger(
        &agg,
        &format!("/api/traces?service=frontend&operation=GET%20%2Fcheckout&minDuration=1.1s&{range}&limit=100"),
    )
    .expect("slow");
    // Slow ones, the failed trace 0 (also slow) among them.
    assert_eq!(ids(&long), class("long"));
    assert_eq!(class("long").len(), 5);
    let tagged = jaeger(
        &agg,
        &format!("/api/traces?service=frontend&tag=http.route:/checkout&maxDuration=500ms&{range}&limit=2"),
    )
    .expect("tagged");
    assert_eq!(
        tagged.as_array().map(Vec::len),
        Some(2),
        "limit 2 of the fast kept traces"
    );
    // By id: Jaeger's JSON, OTLP JSON, and 404 for a dropped trace.
    let by_id = jaeger(&agg, &format!("/api/traces/{}", errors[0])).expect("by id");
    let spans = by_id[0]["spans"].as_array().expect("spans");
    let charge = spans
        .iter()
        .find(|s| s["operationName"] == "charge")
        .expect("charge");
    assert!(
        charge["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .any(|t| t["key"] == "error" && t["value"] == true)
    );
    assert_eq!(charge["references"][0]["refType"], "CHILD_OF");
    assert_eq!(charge["duration"], 100_000);
    let (code, body) = http_get(agg.http, &format!("/api/v1/traces/{}", errors[0])).expect("otlp");
    assert_eq!(code, 200, "{body}");
    let otlp: serde_json::Value = serde_json::from_str(&body).expect("OTLP JSON");
    assert_eq!(
        otlp["resourceSpans"].as_array().map(Vec::len),
        Some(3),
        "{otlp}"
    );
    let (code, body) = http_get(agg.http, &format!("/api/traces/{}", plain[0])).expect("dropped");
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("trace not found"), "{body}");
    let (code, body) = http_get(agg.http, "/api/traces?limit=5").expect("no service");
    assert_eq!(code, 400);
    assert!(body.contains("'service' is required"), "{body}");
    let (code, _) = http_get(agg.http, "/api/traces?service=x&minDuration=fast").expect("bad");
    assert_eq!(code, 400);
    // Exemplars on the RED histogram (from every span, before sampling): Grafana's request
    // for a quantile panel finds trace ids of the app's traces on the payments buckets.
    let all_ids: std::collections::BTreeSet<String> = [&errors, &slow, &plain]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let q = "histogram_quantile(0.9, sum by (le) (rate(traces_spanmetrics_latency_bucket{service=\"payments\"}[5m])))";
    let path = format!(
        "/api/v1/query_exemplars?query={}&start={}&end={}",
        pct(q),
        now_us / 1_000_000 - 3600,
        now_us / 1_000_000 + 60
    );
    let found = wait_for(Duration::from_secs(20), || {
        let (code, body) = http_get(agg.http, &path).ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (code == 200 && v["data"].as_array().is_some_and(|a| !a.is_empty())).then_some(v)
    })
    .expect("exemplars");
    for series in found["data"].as_array().expect("series") {
        assert_eq!(series["seriesLabels"]["service"], "payments", "{series}");
        assert_eq!(
            series["seriesLabels"]["__name__"],
            "traces_spanmetrics_latency_bucket"
        );
        for e in series["exemplars"].as_array().expect("exemplars") {
            let id = e["labels"]["trace_id"].as_str().expect("trace_id");
            assert!(all_ids.contains(id), "{id} is one of the app's traces");
            assert!(
                (e["value"]
                    .as_str()
                    .expect("value")
                    .parse::<f64>()
                    .expect("number")
                    - 0.1)
                    .abs()
                    < 1e-6
            );
        }
    }
    // From the trace to its logs: the payments line logged inside the failed span carries
    // its trace id; the trace's hosts' other lines in its time span come along unmarked.
    let (code, body) =
        http_get(agg.http, &format!("/api/v1/traces/{}/logs", errors[1])).expect("trace logs");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let lines = v["data"]["lines"].as_array().expect("lines");
    let own: Vec<&serde_json::Value> = lines.iter().filter(|l| l["trace"] == true).collect();
    assert_eq!(own.len(), 1, "{body}");
    let own_line = own[0]["line"].as_str().expect("line").to_string();
    assert!(
        own_line.starts_with("card declined for order "),
        "{own_line}"
    );
    assert_eq!(own[0]["labels"]["level"], "error");
    assert_eq!(own[0]["metadata"]["trace_id"], errors[1].as_str());
    assert!(
        lines
            .iter()
            .all(|l| l["trace"] == true || l["metadata"]["trace_id"] != errors[1].as_str()),
        "{body}"
    );
    // The same through LogQL: structured metadata filter like labels.
    let logql = format!("{{service_name=\"payments\"}} | trace_id=\"{}\"", errors[1]);
    let (code, body) = http_get(
        agg.http,
        &format!(
            "/loki/api/v1/query_range?query={}&start={}&end={}&limit=100",
            pct(&logql),
            now_us / 1_000_000 - 3600,
            now_us / 1_000_000 + 60
        ),
    )
    .expect("logql");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let streams = v["data"]["result"].as_array().expect("streams");
    let texts: Vec<String> = streams
        .iter()
        .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p[1].as_str().map(str::to_string))
        .collect();
    assert_eq!(texts, vec![own_line], "{body}");
    // The service graph from every span (before sampling): 30 calls from frontend to each
    // of cart and payments, 6 of them failed; as Jaeger's dependencies and as Tempo's
    // service graph series.
    let deps = jaeger(&agg, "/api/dependencies?lookback=86400000").expect("dependencies");
    let mut edges: Vec<(String, String, u64, u64)> = deps
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            (
                e["parent"].as_str().unwrap_or("").to_string(),
                e["child"].as_str().unwrap_or("").to_string(),
                e["callCount"].as_u64().unwrap_or(0),
                e["errorCount"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    edges.sort();
    assert_eq!(
        edges,
        vec![
            ("frontend".to_string(), "cart".to_string(), 30, 0),
            ("frontend".to_string(), "payments".to_string(), 30, 6)
        ]
    );
    eventually(
        &agg,
        r#"traces_service_graph_request_total{client="frontend", server="payments"}"#,
        30.0,
    );
    eventually(
        &agg,
        r#"traces_service_graph_request_failed_total{client="frontend", server="payments"}"#,
        6.0,
    );
    // payments' charge takes 100 ms: in the 0.1 s bucket (le is inclusive); cart's 3 ms too.
    eventually(
        &agg,
        r#"sum(traces_service_graph_request_server_seconds_bucket{le="0.1"})"#,
        60.0,
    );
    let sum = one(
        &agg,
        r#"traces_service_graph_request_server_seconds_sum{server="payments"}"#,
    )
    .expect("sum");
    assert!((sum - 3.0).abs() < 1e-6, "{sum}");
}

/// SIGKILL of the aggregator while agents ship spans: every span the agent accepted is in
/// the trace store after the aggregator restarts (the agent's buffer holds what was not
/// acknowledged; what was acknowledged was in the trace WAL).
#[test]
fn an_aggregator_killed_during_span_ingest_loses_no_acknowledged_span() {
    let (dir, tls) = scratch_with_ca().expect("scratch");
    let data = dir.path().join("agg");
    let mut agg =
        start_aggregator(&tls, &data, "127.0.0.1:0", "127.0.0.1:0", &[]).expect("aggregator");
    let (_agent, addr, _) = otlp_agent(dir.path(), &tls, &agg, "otel-kill");
    let (http, quic) = (agg.http.to_string(), agg.quic.to_string());
    // 600 traces of 5 spans in 60 OTLP/JSON requests; the aggregator is killed after the
    // 20th and started again after the 40th.
    let span = |t: usize, s: usize| {
        format!(
            r#"{{"traceId":"{:032x}","spanId":"{:016x}","name":"op{s}","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000020000000"}}"#,
            0xfeed_0000_u64 as usize + t,
            s + 1
        )
    };
    let mut killed = false;
    for r in 0..60 {
        let spans: Vec<String> = (r * 10..r * 10 + 10)
            .flat_map(|t| (0..5).map(move |s| (t, s)))
            .map(|(t, s)| span(t, s))
            .collect();
        let body = format!(
            r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"ingest"}}}}]}},"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
            spans.join(",")
        );
        let (status, _, answer) = post(
            addr,
            "/v1/traces",
            "Content-Type: application/json\r\n",
            body.as_bytes(),
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        if r == 20 {
            agg.proc.kill();
            killed = true;
        }
        if r == 40 {
            agg = start_aggregator(&tls, &data, &http, &quic, &[]).expect("restart");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(killed);
    let missing = |agg: &Aggregator| -> Vec<usize> {
        (0..600)
            .filter(|t| {
                let path = format!("/api/traces/{:032x}", 0xfeed_0000_u64 as usize + t);
                jaeger(agg, &path).and_then(|d| d[0]["spans"].as_array().map(Vec::len)) != Some(5)
            })
            .collect()
    };
    let done = wait_for(Duration::from_secs(60), || {
        missing(&agg).is_empty().then_some(())
    });
    assert!(
        done.is_some(),
        "traces missing or partial: {:?}",
        missing(&agg)
    );
}

/// Traces whose spans straddle an agent's restart (SIGKILL between a trace's first spans
/// and its failing last one) are decided whole: the failed ones are stored with every span,
/// the plain ones (ratio 0) not at all — no trace is stored in part.
#[test]
fn traces_straddling_an_agent_restart_are_kept_or_dropped_whole() {
    let (dir, tls) = scratch_with_ca().expect("scratch");
    let agg = configured_aggregator(
        dir.path(),
        &tls,
        "[traces.sampling]\nratio = 0.0\ndecision_wait = \"8s\"\n",
    );
    let name = "otel-restart";
    let (mut agent, addr, _) = otlp_agent(dir.path(), &tls, &agg, name);
    let send = |addr: SocketAddr, spans: &[(usize, usize, bool)]| {
        let list: Vec<String> = spans
            .iter()
            .map(|&(t, s, failed)| {
                let parent = if s == 0 {
                    String::new()
                } else {
                    format!(r#","parentSpanId":"{:016x}""#, 1)
                };
                let status = if failed { r#","status":{"code":2}"# } else { "" };
                format!(
                    r#"{{"traceId":"{:032x}","spanId":"{:016x}"{parent},"name":"op{s}","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000020000000"{status}}}"#,
                    0xabc0_0000_usize + t,
                    s + 1
                )
            })
            .collect();
        let body = format!(
            r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"svc"}}}}]}},"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
            list.join(",")
        );
        let (status, _, answer) = post(
            addr,
            "/v1/traces",
            "Content-Type: application/json\r\n",
            body.as_bytes(),
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    };
    // Ten traces: the first two spans of each before the kill...
    let first: Vec<(usize, usize, bool)> = (0..10)
        .flat_map(|t| [(t, 0, false), (t, 1, false)])
        .collect();
    send(addr, &first);
    agent.kill();
    let agent_cfg = dir.path().join(format!("{name}.toml"));
    let _agent = start_agent_with_config(
        &tls,
        name,
        agg.quic,
        &dir.path().join(name),
        "1s",
        Some(&agent_cfg),
    )
    .expect("agent restarts");
    _agent
        .wait_log("OTLP/gRPC receiver started", Duration::from_secs(20))
        .expect("the receiver starts again");
    // ...the last after it; in the even traces it failed.
    let last: Vec<(usize, usize, bool)> = (0..10).map(|t| (t, 2, t % 2 == 0)).collect();
    send(addr, &last);
    let decided = wait_for(Duration::from_secs(40), || {
        let (_, m) = http_get(agg.http, "/metrics").ok()?;
        (m.contains("telltale_aggregator_traces_decisions_total{reason=\"error\"} 5")
            && m.contains("telltale_aggregator_traces_decisions_total{reason=\"dropped\"} 5"))
        .then_some(())
    });
    assert!(
        decided.is_some(),
        "{:?}",
        http_get(agg.http, "/metrics").map(|m| m.1)
    );
    for t in 0..10 {
        let path = format!("/api/traces/{:032x}", 0xabc0_0000_usize + t);
        let (code, body) = http_get(agg.http, &path).expect("get");
        if t % 2 == 0 {
            assert_eq!(code, 200, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            assert_eq!(
                v["data"][0]["spans"].as_array().map(Vec::len),
                Some(3),
                "{body}"
            );
        } else {
            assert_eq!(code, 404, "trace {t} is dropped whole: {body}");
        }
    }
}
