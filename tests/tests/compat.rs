//! What release 0.1 wrote still opens and flows (files in `tests/data/release-0.1/`, recorded
//! with that release's binaries; see its README): an agent buffer full of unsent batches is
//! shipped by today's agent and stored by today's aggregator, and an alerting state keeps its
//! silence, incident, alert, pending notifications and remediation switch.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use telltale_common::names;
use telltale_tests::*;

fn recorded(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/release-0.1")
        .join(name)
}

/// Copies a recorded directory (git keeps no empty directories: sled's `blobs` is made).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("blobs")).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn an_agent_buffer_written_by_release_0_1_is_shipped_and_stored() {
    let (dir, tls) = scratch_with_ca().unwrap();
    certs_issue(&tls, "recorded-host").unwrap();
    // Retention long enough for the recorded samples, whatever day this runs, and an
    // out-of-order window as long: the agent sends its newest batch first, and the recorded
    // ones are older than the default hour behind it.
    let cfg = dir.path().join("aggregator.toml");
    std::fs::write(
        &cfg,
        "[storage]\nretention = \"36500d\"\nout_of_order_window = \"36500d\"\n",
    )
    .unwrap();
    let agg = start_aggregator(
        &tls,
        &dir.path().join("agg"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--config", cfg.to_str().unwrap()],
    )
    .unwrap();
    let data = dir.path().join("agent");
    copy_dir(&recorded("agent-buffer"), &data.join("buffer"));
    let started = telltale_common::model::now_ms();
    let agent = start_agent(&tls, "recorded-host", agg.quic, &data, "1s").unwrap();
    // The recorded batches carry their recording's timestamps, all before this test began.
    let old = wait_for(Duration::from_secs(60), || {
        let s = raw_samples(agg.http, "node_load1{instance=\"recorded-host\"}", "36500d").ok()?;
        let old: Vec<_> = s.into_iter().filter(|(t, _)| *t < started).collect();
        (old.len() >= 3).then_some(old)
    });
    assert!(
        old.is_some(),
        "the recorded batches never arrived:\n{}\n{}",
        agent.log(),
        agg.proc.log()
    );
    assert!(metric(agg.http, names::AGG_BATCHES).unwrap() >= 3.0);
}

#[test]
fn an_alerting_state_written_by_release_0_1_opens_whole() {
    let (dir, tls) = scratch_with_ca().unwrap();
    let data = dir.path().join("agg");
    copy_dir(&recorded("alerting"), &data.join("alerting"));
    let routes = recorded("routes.yml");
    let agg = start_aggregator(
        &tls,
        &data,
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--routes", routes.to_str().unwrap()],
    )
    .unwrap();
    let get = |path: &str| -> serde_json::Value {
        let (status, body) = http_get(agg.http, path).unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    };
    let silences = get("/api/v2/silences");
    assert!(
        silences
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["comment"] == "recorded silence" && s["status"]["state"] == "active"),
        "{silences}"
    );
    let incidents = get("/api/v1/incidents?state=all");
    let inc = &incidents["data"][0];
    assert_eq!(
        inc["alerts"][0]["labels"]["alertname"], "RecordedDown",
        "{incidents}"
    );
    assert!(inc["escalation"].is_object(), "{incidents}");
    let alerts = get("/api/v2/alerts");
    assert!(
        alerts
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["labels"]["alertname"] == "RecordedDown"),
        "{alerts}"
    );
    assert_eq!(get("/api/v1/remediation/status")["data"]["enabled"], false);
    // The deliveries the old release could not make were read back, both of them: still
    // queued (and retried) — or, once the recording is more than a day old, dropped as
    // undeliverable for a day and counted. The recording's age is the calendar's, not the
    // test's: asserting "still queued" alone started failing a day after it was made.
    agg.proc
        .wait_log(
            "notifications pending from before the restart pending=2",
            Duration::from_secs(10),
        )
        .unwrap();
    let counted = || {
        metric(agg.http, names::AGG_NOTIFICATION_QUEUE).unwrap_or(0.0)
            + metric(agg.http, names::AGG_NOTIFICATIONS_DROPPED).unwrap_or(0.0)
    };
    assert!(
        wait_for(Duration::from_secs(10), || (counted() >= 2.0).then_some(())).is_some(),
        "queued + dropped: {}\n{}",
        counted(),
        agg.proc.log()
    );
    assert_eq!(
        metric(agg.http, names::AGG_ALERTING_STATE_DAMAGED).unwrap(),
        0.0
    );
}
