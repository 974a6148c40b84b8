//! End-to-end tests of the core pipeline: the real `telltale-agent` and `telltale-aggregator`
//! binaries over real QUIC on loopback, certificates from `certs init`, real sled and log files.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use telltale_common::codec;
use telltale_tests::*;

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    scratch_with_ca().unwrap()
}

#[test]
fn agent_cpu_metrics_are_queryable_within_three_intervals() {
    let (dir, tls) = setup();
    certs_issue(&tls, "web-1").unwrap();
    let agg = start_fresh_aggregator(&tls, dir.path()).unwrap();
    let started = Instant::now();
    let _agent = start_agent(&tls, "web-1", agg.quic, &dir.path().join("agent"), "2s").unwrap();
    let found = wait_for(Duration::from_secs(6), || {
        let r = query(
            agg.http,
            "node_cpu_seconds_total{instance=\"web-1\",mode=\"idle\"}",
        )
        .ok()?;
        (!r.is_empty()).then_some(r)
    });
    let r = found.unwrap_or_else(|| {
        panic!(
            "no CPU metrics within 3 intervals; aggregator log:\n{}",
            agg.proc.log()
        )
    });
    assert!(started.elapsed() <= Duration::from_secs(7));
    assert_eq!(r[0]["metric"]["job"], "telltale-agent");
    assert!(r[0]["metric"]["cpu"].is_string());
    // up is derived from the connection, the agents endpoint lists the agent.
    let up = query(agg.http, "up{instance=\"web-1\"}").unwrap();
    assert_eq!(up[0]["value"][1], "1");
    let (status, body) = http_get(agg.http, "/api/v1/agents").unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"][0]["name"], "web-1");
    assert_eq!(v["data"][0]["connected"], true);
    assert!(
        v["data"][0]["last_sequence"]
            .as_u64()
            .is_some_and(|s| s >= 1)
    );
    assert!(v["data"][0]["last_batch_ms"].as_i64().is_some());
    for path in [
        "/-/healthy",
        "/-/ready",
        "/api/v1/status/buildinfo",
        "/metrics",
    ] {
        assert_eq!(http_get(agg.http, path).unwrap().0, 200, "{path}");
    }
    assert_eq!(http_get(agg.http, "/api/v1/nope").unwrap().0, 404);
    // The agent ships its own state beside the host's.
    for own in [
        "telltale_agent_buffer_batches",
        "telltale_agent_shipped_batches_total",
        "telltale_agent_ack_latency_seconds_count",
        "telltale_agent_collect_duration_seconds_bucket",
        "telltale_agent_source_samples_total",
    ] {
        assert!(
            !query(agg.http, &format!("{own}{{instance=\"web-1\"}}"))
                .unwrap()
                .is_empty(),
            "{own}"
        );
    }
    let (status, body) = http_get(agg.http, "/api/v1/query?query=rate(").unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad_data"), "{body}");
}

#[test]
fn an_agent_from_another_ca_is_refused_and_nothing_of_it_is_stored() {
    let (dir, tls) = setup();
    let other = dir.path().join("other-ca");
    certs_init(&other).unwrap();
    // Same name as a legitimate agent would have: the certificate, not the name, decides.
    certs_issue(&other, "intruder").unwrap();
    certs_issue(&tls, "good").unwrap();
    let agg = start_fresh_aggregator(&tls, dir.path()).unwrap();
    // The intruder trusts our CA for the server (so it gets as far as the handshake) but
    // presents a client certificate from its own CA.
    std::fs::copy(tls.join("ca.crt"), other.join("ca.crt")).unwrap();
    let intruder = start_agent(
        &other,
        "intruder",
        agg.quic,
        &dir.path().join("intruder"),
        "500ms",
    )
    .unwrap();
    let _good = start_agent(&tls, "good", agg.quic, &dir.path().join("good"), "500ms").unwrap();
    agg.proc
        .wait_log("QUIC/TLS handshake refused", Duration::from_secs(10))
        .unwrap();
    intruder
        .wait_log("refused", Duration::from_secs(10))
        .unwrap();
    wait_for(Duration::from_secs(10), || {
        (!query(agg.http, "node_time_seconds{instance=\"good\"}")
            .ok()?
            .is_empty())
        .then_some(())
    })
    .expect("the legitimate agent is served");
    assert!(
        query(agg.http, "{instance=\"intruder\"}")
            .unwrap()
            .is_empty()
    );
    let (_, series) = http_get(
        agg.http,
        "/api/v1/series?match[]=%7Binstance%3D%22intruder%22%7D",
    )
    .unwrap();
    assert!(series.contains("\"data\":[]"), "{series}");
    assert!(metric(agg.http, "telltale_aggregator_handshake_errors_total").unwrap() >= 1.0);
}

/// Samples of `node_time_seconds` for `instance`, asserting none is stored twice.
fn time_samples(agg: &Aggregator, instance: &str) -> Vec<i64> {
    let s = raw_samples(
        agg.http,
        &format!("node_time_seconds{{instance=\"{instance}\"}}"),
        "10m",
    )
    .unwrap();
    for (t, v) in &s {
        assert!(
            ((*t as f64) / 1000.0 - v).abs() < 1e-6,
            "node_time_seconds is its own timestamp"
        );
    }
    s.into_iter().map(|(t, _)| t).collect()
}

#[test]
fn an_aggregator_killed_for_30s_loses_no_interval_and_stores_none_twice() {
    let (dir, tls) = setup();
    certs_issue(&tls, "steady").unwrap();
    let data = dir.path().join("agg");
    let mut agg = start_aggregator(&tls, &data, "127.0.0.1:0", "127.0.0.1:0", &[]).unwrap();
    let agent = start_agent(&tls, "steady", agg.quic, &dir.path().join("agent"), "1s").unwrap();
    wait_for(Duration::from_secs(10), || {
        (time_samples(&agg, "steady").len() >= 3).then_some(())
    })
    .expect("samples before the outage");
    let (http, quic) = (agg.http.to_string(), agg.quic.to_string());
    agg.proc.kill();
    let killed_at = telltale_common::model::now_ms();
    std::thread::sleep(Duration::from_secs(30));
    let agg = start_aggregator(&tls, &data, &http, &quic, &[]).unwrap();
    let restarted_at = telltale_common::model::now_ms();
    // Wait until the backlog has drained: samples exist from before the kill to after restart
    // and no gap wider than 1.5 intervals remains.
    let gaps = |ts: &[i64]| ts.windows(2).filter(|w| w[1] - w[0] > 1500).count();
    let ts = wait_for(Duration::from_secs(60), || {
        let ts = time_samples(&agg, "steady");
        let covered = ts.first().is_some_and(|&f| f < killed_at - 2000)
            && ts.last().is_some_and(|&l| l > restarted_at + 2000);
        (covered && gaps(&ts) == 0).then_some(ts)
    })
    .unwrap_or_else(|| {
        let ts = time_samples(&agg, "steady");
        panic!(
            "outage not filled: {} samples, gaps {:?}\nagent log:\n{}",
            ts.len(),
            ts.windows(2)
                .filter(|w| w[1] - w[0] > 1500)
                .collect::<Vec<_>>(),
            agent.log()
        )
    });
    let outage: Vec<_> = ts
        .iter()
        .filter(|&&t| t > killed_at && t < restarted_at)
        .collect();
    assert!(
        outage.len() >= 28,
        "only {} samples inside the 30 s outage",
        outage.len()
    );
    // A batch stored twice would replace samples with equal timestamps: none did, neither
    // while replaying the log at restart nor during the backlog drain.
    assert_eq!(
        metric(agg.http, "telltale_aggregator_samples_overwritten_total").unwrap(),
        0.0
    );
    assert!(metric(agg.http, "telltale_aggregator_batches_total").unwrap() >= 28.0);
}

#[test]
fn a_killed_agent_delivers_what_was_not_acknowledged_after_restart() {
    let (dir, tls) = setup();
    certs_issue(&tls, "flaky").unwrap();
    let data = dir.path().join("agent");
    // Reserve ports, then stop: the agent buffers while nothing listens.
    let agg = start_fresh_aggregator(&tls, dir.path()).unwrap();
    let (http, quic) = (agg.http.to_string(), agg.quic.to_string());
    let quic_addr = agg.quic;
    drop(agg);
    let first_start = telltale_common::model::now_ms();
    let mut agent = start_agent(&tls, "flaky", quic_addr, &data, "500ms").unwrap();
    std::thread::sleep(Duration::from_secs(4));
    agent.kill();
    let killed_at = telltale_common::model::now_ms();
    let agg = start_aggregator(&tls, &dir.path().join("agg"), &http, &quic, &[]).unwrap();
    let _agent = start_agent(&tls, "flaky", quic_addr, &data, "500ms").unwrap();
    let before_kill = wait_for(Duration::from_secs(20), || {
        let ts = time_samples(&agg, "flaky");
        let n = ts
            .iter()
            .filter(|&&t| t >= first_start && t <= killed_at)
            .count();
        (n >= 6).then_some(n)
    });
    assert!(
        before_kill.is_some(),
        "samples buffered before the kill never arrived: {:?}",
        time_samples(&agg, "flaky")
    );
}

/// Opens an authenticated connection as agent `name`, says hello, and returns the stream.
async fn rogue(
    tls: &std::path::Path,
    name: &str,
    addr: std::net::SocketAddr,
) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
    let (_ep, conn, send, recv) = rogue_agent(tls, name, addr, 1).await.unwrap();
    (conn, send, recv)
}

#[test]
fn oversized_and_garbage_frames_close_only_that_connection() {
    let (dir, tls) = setup();
    for n in ["bystander", "big", "garbage"] {
        certs_issue(&tls, n).unwrap();
    }
    let agg = start_fresh_aggregator(&tls, dir.path()).unwrap();
    let _agent = start_agent(
        &tls,
        "bystander",
        agg.quic,
        &dir.path().join("agent"),
        "500ms",
    )
    .unwrap();
    wait_for(Duration::from_secs(10), || {
        (!time_samples(&agg, "bystander").is_empty()).then_some(())
    })
    .expect("bystander served");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // A header announcing 1 GiB: refused before the payload is read or allocated.
        let (conn, mut send, _recv) = rogue(&tls, "big", agg.quic).await;
        let mut header = Vec::new();
        header.extend_from_slice(&(1u32 << 30).to_be_bytes());
        header.push(codec::FRAME_VERSION);
        header.extend_from_slice(&0u32.to_be_bytes());
        send.write_all(&header).await.unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed())
            .await
            .unwrap();
        assert!(
            reason.to_string().contains("exceeds the maximum"),
            "{reason}"
        );

        // Bytes that are not a frame at all.
        let (conn, mut send, _recv) = rogue(&tls, "garbage", agg.quic).await;
        send.write_all(b"\x00\x00\x00\x10\x01garbage-garbage-garbage!")
            .await
            .unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed())
            .await
            .unwrap();
        assert!(reason.to_string().contains("checksum"), "{reason}");
    });
    agg.proc
        .wait_log(
            "closing agent connection: bad frame",
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(
        metric(agg.http, "telltale_aggregator_frame_errors_total").unwrap(),
        2.0
    );
    // The other agent keeps being served.
    let last = *time_samples(&agg, "bystander").last().unwrap();
    wait_for(Duration::from_secs(10), || {
        (*time_samples(&agg, "bystander").last()? > last + 1000).then_some(())
    })
    .expect("bystander keeps flowing after the bad connections");
    assert!(
        query(agg.http, "{instance=~\"big|garbage\", __name__!=\"up\"}")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn remote_write_needs_the_token_and_refuses_malformed_bodies() {
    use telltale_common::model::{Labels, Sample, SeriesSamples};
    let (dir, tls) = setup();
    let agg = start_aggregator(
        &tls,
        &dir.path().join("agg"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--api-token", "s3cret"],
    )
    .unwrap();
    let now = telltale_common::model::now_ms();
    let body = telltale_aggregator::api::remote_write::encode(&[SeriesSamples {
        labels: Labels::from_pairs([("__name__", "pushed"), ("job", "prom")]),
        samples: vec![Sample(now - 1000, 1.0), Sample(now, 2.0)],
    }]);
    let ct = "application/x-protobuf";
    let (status, resp) = http_post_auth(agg.http, "/api/v1/write", ct, &body, None).unwrap();
    assert_eq!(status, 401, "{resp}");
    assert!(resp.contains("unauthorized"), "{resp}");
    let (status, _) = http_post_auth(agg.http, "/api/v1/write", ct, &body, Some("wrong")).unwrap();
    assert_eq!(status, 401);
    let (status, resp) =
        http_post_auth(agg.http, "/api/v1/write", ct, b"garbage", Some("s3cret")).unwrap();
    assert_eq!(status, 400, "{resp}");
    assert!(resp.contains("bad_data"), "{resp}");
    assert!(query(agg.http, "pushed").unwrap().is_empty());
    let (status, resp) =
        http_post_auth(agg.http, "/api/v1/write", ct, &body, Some("s3cret")).unwrap();
    assert_eq!(status, 204, "{resp}");
    // Durable before the response: the samples answer queries at once.
    let r = query(agg.http, "pushed").unwrap();
    assert_eq!(r[0]["value"][1], "2");
}
