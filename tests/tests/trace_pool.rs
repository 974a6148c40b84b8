//! Two aggregators sampling traces together (`[traces.pool]`): each trace's root span reaches
//! one agent (on aggregator A) and its child span another agent (on aggregator B), as when the
//! services of a trace run on hosts sharded over a pool. Tail sampling keeps only failed
//! traces (ratio 0); the failure is on the root span. Each failed trace must be whole — both
//! spans, both agents — on the aggregator that owns it (rendezvous hash of its id over the
//! members, as the aggregators compute it) and absent from the other; the fine traces are
//! nowhere. Without the pool the member holding only a child span would drop it (no error
//! there), so the owner's copy would be the root span alone.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use telltale_tests::*;

const TOKEN: &str = "pool-shared-token";

fn aggregator_config(dir: &Path, name: &str, members: &[String], this: &str) -> String {
    let p = dir.join(format!("{name}.toml"));
    let list: Vec<String> = members.iter().map(|m| format!("{m:?}")).collect();
    std::fs::write(
        &p,
        format!(
            "api_token = \"{TOKEN}\"\n[traces.sampling]\nratio = 0.0\ndecision_wait = \"5s\"\n\
             [traces.pool]\nmembers = [{}]\nthis = \"{this}\"\nbearer_token = \"{TOKEN}\"\n\
             batch_send_deadline = \"100ms\"\n",
            list.join(", ")
        ),
    )
    .unwrap();
    p.display().to_string()
}

fn agent_with_otlp(tls: &Path, dir: &Path, name: &str, quic: SocketAddr) -> (Proc, SocketAddr) {
    certs_issue(tls, name).unwrap();
    let otlp = free_port();
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[otlp]\nenabled = true\nhttp_listen = \"127.0.0.1:{otlp}\"\ngrpc_listen = \"127.0.0.1:{}\"\n",
            free_port()
        ),
    )
    .unwrap();
    let agent =
        start_agent_with_config(tls, name, quic, &dir.join(name), "1s", Some(&cfg)).unwrap();
    agent
        .wait_log("OTLP/gRPC receiver started", Duration::from_secs(20))
        .unwrap();
    (agent, ([127, 0, 0, 1], otlp).into())
}

/// One OTLP/JSON request with one span of `trace`.
fn span(trace: &str, span_id: &str, parent: Option<&str>, service: &str, code: u8) -> String {
    let now_ns = telltale_common::model::now_ms() * 1_000_000;
    let parent = parent
        .map(|p| format!(r#""parentSpanId":"{p}","#))
        .unwrap_or_default();
    format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"{service}"}}}}]}},
        "scopeSpans":[{{"spans":[{{"traceId":"{trace}","spanId":"{span_id}",{parent}"name":"op-{service}","kind":2,"startTimeUnixNano":"{now_ns}","endTimeUnixNano":"{}","status":{{"code":{code}}}}}]}}]}}]}}"#,
        now_ns + 5_000_000
    )
}

fn hex_id(s: &str) -> [u8; 16] {
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    id
}

#[test]
fn spans_of_a_trace_split_over_two_aggregators_are_sampled_whole_by_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    certs_init(&tls).unwrap();
    let (a_http, b_http) = (free_port(), free_port());
    let members = vec![
        format!("http://127.0.0.1:{a_http}"),
        format!("http://127.0.0.1:{b_http}"),
    ];
    let ca = aggregator_config(dir.path(), "a", &members, &members[0]);
    let cb = aggregator_config(dir.path(), "b", &members, &members[1]);
    let at = |p: u16| format!("127.0.0.1:{p}");
    let a = start_aggregator(
        &tls,
        &dir.path().join("agg-a"),
        &at(a_http),
        "127.0.0.1:0",
        &["--config", &ca],
    )
    .unwrap();
    let b = start_aggregator(
        &tls,
        &dir.path().join("agg-b"),
        &at(b_http),
        "127.0.0.1:0",
        &["--config", &cb],
    )
    .unwrap();
    let (_front, front_otlp) = agent_with_otlp(&tls, dir.path(), "front-host", a.quic);
    let (_back, back_otlp) = agent_with_otlp(&tls, dir.path(), "back-host", b.quic);

    // 16 traces: the root on front-host (A), the child on back-host (B); even ones fail.
    let traces: Vec<String> = (0..16u32)
        .map(|i| {
            format!(
                "5a1e{:08x}0000000000000000{i:04x}",
                i.wrapping_mul(2_654_435_761)
            )
        })
        .collect();
    for (i, t) in traces.iter().enumerate() {
        let code = if i % 2 == 0 { 2 } else { 0 };
        for (addr, body) in [
            (
                front_otlp,
                span(t, "00000000000000a1", None, "frontend", code),
            ),
            (
                back_otlp,
                span(
                    t,
                    "00000000000000b2",
                    Some("00000000000000a1"),
                    "backend",
                    0,
                ),
            ),
        ] {
            let (st, answer) =
                http_post(addr, "/v1/traces", "application/json", body.as_bytes()).unwrap();
            assert_eq!(st, 200, "{answer}");
        }
    }
    let aggs = [&a, &b];
    let owner = |t: &str| telltale_common::rendezvous::owner(&hex_id(t), &members).unwrap();
    let failed: Vec<&String> = traces.iter().step_by(2).collect();
    let owned: Vec<usize> = failed.iter().map(|t| owner(t)).collect();
    assert!(
        owned.contains(&0) && owned.contains(&1),
        "the test's failed traces should be owned by both members: {owned:?}"
    );
    // Each failed trace whole on its owner (decision wait 5 s, then the block of the head is
    // read: allow a while).
    for (t, &o) in failed.iter().zip(&owned) {
        let got = wait_for(Duration::from_secs(60), || {
            let (code, body) = http_get(aggs[o].http, &format!("/api/traces/{t}")).ok()?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let spans = v["data"][0]["spans"].as_array()?.len();
            (code == 200 && spans == 2).then_some(v)
        })
        .unwrap_or_else(|| {
            let (_, body) = http_get(aggs[o].http, &format!("/api/traces/{t}")).unwrap();
            panic!(
                "trace {t} not whole on its owner {}: {body}\nA:\n{}\nB:\n{}",
                members[o],
                a.proc.log(),
                b.proc.log()
            )
        });
        let instances: std::collections::BTreeSet<String> = got["data"][0]["processes"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|p| p["tags"].as_array().cloned().unwrap_or_default())
            .filter(|tag| tag["key"] == "instance")
            .filter_map(|tag| tag["value"].as_str().map(str::to_string))
            .collect();
        assert_eq!(
            instances,
            ["back-host".to_string(), "front-host".to_string()].into(),
            "{got}"
        );
        let (code, body) = http_get(aggs[1 - o].http, &format!("/api/traces/{t}")).unwrap();
        assert_eq!(
            code, 404,
            "trace {t} also on the member that does not own it: {body}"
        );
    }
    // The fine traces are dropped everywhere (their decisions are due by now).
    for t in traces.iter().skip(1).step_by(2) {
        for agg in aggs {
            let (code, body) = http_get(agg.http, &format!("/api/traces/{t}")).unwrap();
            assert_eq!(code, 404, "fine trace {t} kept: {body}");
        }
    }
    // Each member forwarded the spans of the other's traces.
    for agg in aggs {
        let sent = metric(agg.http, "telltale_aggregator_trace_pool_spans_sent_total").unwrap();
        let foreign = metric(agg.http, "telltale_aggregator_traces_spans_foreign_total").unwrap();
        assert!(
            sent > 0.0 && sent == foreign,
            "sent {sent}, foreign {foreign}"
        );
    }
    // The receiving endpoint needs the token, even from loopback.
    let (code, _) =
        http_post(a.http, "/api/v1/pool/spans", "application/msgpack", b"\x90").unwrap();
    assert_eq!(code, 401);
}
