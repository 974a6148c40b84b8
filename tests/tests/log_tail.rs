//! Live tailing end to end on the real aggregator: a WebSocket on `/loki/api/v1/tail` as
//! Grafana's live mode and `logcli --tail` open it — the recent history first, then lines as
//! they are pushed, filtered by the query's selector and pipeline — and its limits.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::Value;
use telltale_common::wire::{LogEntry, LogStream};
use telltale_tests::websocket::{Opened, WebSocket};
use telltale_tests::*;

const TOKEN: &str = "s3cret";
const NS: i64 = 1_000_000_000;

fn push(agg: &Aggregator, job: &str, lines: &[(i64, &str)]) {
    let stream = LogStream {
        labels: vec![("job".into(), job.into())],
        entries: lines
            .iter()
            .map(|(t_ns, line)| LogEntry {
                t_ns: *t_ns,
                line: (*line).into(),
                metadata: Vec::new(),
            })
            .collect(),
    };
    loki_push(agg.http, TOKEN, &[stream]).unwrap();
}

fn open(agg: &Aggregator, query: &str, extra: &str) -> Opened {
    WebSocket::connect(
        agg.http,
        &format!("/loki/api/v1/tail?query={}{extra}", enc(query)),
    )
    .unwrap()
}

/// `(labels, [lines])` of a tail message.
fn entries(msg: &str) -> Vec<(String, Vec<String>)> {
    let v: Value = serde_json::from_str(msg).unwrap();
    v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let labels = s["stream"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
                .collect::<Vec<_>>()
                .join(",");
            let lines = s["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| {
                    assert!(x[0].as_str().unwrap().parse::<i64>().is_ok(), "ns string");
                    x[1].as_str().unwrap().to_string()
                })
                .collect();
            (labels, lines)
        })
        .collect()
}

#[test]
fn a_tail_sends_the_recent_lines_then_new_ones_as_they_are_stored() {
    let (dir, tls) = scratch_with_ca().unwrap();
    let data = dir.path().join("agg");
    let agg = start_aggregator(
        &tls,
        &data,
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--api-token", TOKEN],
    )
    .unwrap();
    let now = telltale_common::model::now_ms() * 1_000_000;
    push(
        &agg,
        "app",
        &[
            (now - 600 * NS, "level=info msg=a"),
            (now - 599 * NS, "level=error msg=b"),
            (now - 598 * NS, "level=error msg=c"),
            (now - 597 * NS, "level=info msg=d"),
        ],
    );
    let query = r#"{job="app"} | logfmt | level="error" | line_format "{{.msg}}!""#;
    let Opened::Socket(mut ws) = open(&agg, query, "&limit=1") else {
        panic!("refused")
    };
    // The history: the newest matching line (limit 1), through the pipeline.
    let first = ws.read_text(Duration::from_secs(10)).unwrap().unwrap();
    let got = entries(&first);
    assert_eq!(got.len(), 1, "{first}");
    assert_eq!(got[0].1, ["c!"]);
    assert!(
        got[0].0.contains("job=app") && got[0].0.contains("level=error"),
        "{first}"
    );
    // Live lines: another stream's and non-matching ones are not sent.
    push(&agg, "web", &[(now, "level=error msg=other-job")]);
    push(
        &agg,
        "app",
        &[
            (now + 1, "level=info msg=e"),
            (now + 2, "level=error msg=f"),
        ],
    );
    let next = ws.read_text(Duration::from_secs(10)).unwrap().unwrap();
    assert_eq!(
        entries(&next)
            .iter()
            .flat_map(|e| e.1.clone())
            .collect::<Vec<_>>(),
        ["f!"]
    );
    // A line with an old timestamp, stored now, is live too.
    push(&agg, "app", &[(now - 3000 * NS, "level=error msg=late")]);
    let next = ws.read_text(Duration::from_secs(10)).unwrap().unwrap();
    assert_eq!(entries(&next)[0].1, ["late!"]);
    ws.close().unwrap();

    // delay_for gathers lines into one message.
    let Opened::Socket(mut ws) = open(&agg, r#"{job="batch"}"#, "&delay_for=1") else {
        panic!("refused")
    };
    let first = ws.read_text(Duration::from_secs(2));
    assert!(first.is_err(), "no history, nothing to say yet: {first:?}");
    for i in 0..3 {
        push(&agg, "batch", &[(now + i, &format!("line {i}"))]);
    }
    let msg = ws.read_text(Duration::from_secs(10)).unwrap().unwrap();
    let lines: Vec<String> = entries(&msg).into_iter().flat_map(|e| e.1).collect();
    assert_eq!(lines, ["line 0", "line 1", "line 2"], "{msg}");
    ws.close().unwrap();
}

#[test]
fn bad_tails_are_refused_and_the_number_of_tails_is_bounded() {
    let (dir, tls) = scratch_with_ca().unwrap();
    let data = dir.path().join("agg");
    let agg = start_aggregator(&tls, &data, "127.0.0.1:0", "127.0.0.1:0", &[]).unwrap();
    for (q, extra, says) in [
        ("{", "", "parse error"),
        (r#"count_over_time({job="x"}[1m])"#, "", "log query"),
        (r#"{job="x"}"#, "&delay_for=10", "delay_for"),
        (r#"{job="x"}"#, "&limit=100000", "max entries"),
    ] {
        match open(&agg, q, extra) {
            Opened::Refused(status, body) => {
                assert_eq!(status, 400, "{q}: {body}");
                assert!(body.contains(says), "{q}: {body}");
            }
            Opened::Socket(_) => panic!("{q} {extra}: accepted"),
        }
    }
    // A plain GET is not a WebSocket.
    let (status, _) = http_get(
        agg.http,
        &format!("/loki/api/v1/tail?query={}", enc(r#"{job="x"}"#)),
    )
    .unwrap();
    assert!((400..500).contains(&status), "{status}");
    // Ten tails at once; the eleventh waits for one to end.
    let mut open_ones: Vec<WebSocket> = (0..10)
        .map(|_| match open(&agg, r#"{job="x"}"#, "") {
            Opened::Socket(ws) => ws,
            Opened::Refused(s, b) => panic!("{s} {b}"),
        })
        .collect();
    match open(&agg, r#"{job="x"}"#, "") {
        Opened::Refused(status, body) => {
            assert_eq!(status, 429, "{body}");
            assert!(body.contains("max concurrent tail requests"), "{body}");
        }
        Opened::Socket(_) => panic!("an eleventh tail"),
    }
    open_ones.pop().unwrap().close().unwrap();
    let again = wait_for(Duration::from_secs(10), || {
        match open(&agg, r#"{job="x"}"#, "") {
            Opened::Socket(ws) => Some(ws),
            Opened::Refused(..) => None,
        }
    });
    assert!(again.is_some(), "a closed tail frees its place");
}
