//! Traces end to end: applications instrumented with the OpenTelemetry SDK send spans to the
//! agent's OTLP receiver, and the RED metrics computed from them are queryable on the
//! aggregator; hostile requests get OTLP's error answers and the receiver serves on.

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
    assert_eq!(v["partialSuccess"]["rejectedSpans"], "0");
    assert!(
        v["partialSuccess"]["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("does not ship spans yet")),
        "{v}"
    );
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

reader = PeriodicExportingMetricReader(
    OTLPMetricExporter(endpoint="http://{http}/v1/metrics"), export_interval_millis=60_000)
mp = MeterProvider(resource=Resource.create({{"service.name": "shop"}}), metric_readers=[reader])
m = mp.get_meter("shop")
orders = m.create_counter("orders")
for i in range(5):
    orders.add(2, {{"region": "eu" if i < 3 else "us"}})
h = m.create_histogram("checkout.duration", unit="s")
for v in (0.2, 0.3, 7.0):
    h.record(v)
m.create_observable_gauge("queue.size", callbacks=[lambda o: [Observation(12)]])
assert mp.force_flush(10_000)
mp.shutdown()
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
    eventually(
        &agg,
        "telltale_agent_otlp_metric_points_rejected_total",
        0.0,
    );
}
