//! Regression tests of the adversarial probe's findings (issue 14), against the real binaries
//! on loopback: hostile queries, a second daemon on a data directory, damaged state, reloads,
//! cross-site requests, and damage to an agent's buffer.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use telltale_tests::*;

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    scratch_with_ca().unwrap()
}

fn alive(agg: &mut Aggregator) {
    assert!(
        agg.proc.child.try_wait().unwrap().is_none(),
        "the aggregator exited:\n{}",
        agg.proc.log()
    );
    assert_eq!(http_get(agg.http, "/-/healthy").unwrap().0, 200);
}

/// An aggregator on free ports with one file flag (`--rules F`, `--config F`).
fn start_with_file(
    tls: &std::path::Path,
    data: &std::path::Path,
    flag: &str,
    file: &std::path::Path,
) -> Aggregator {
    let f = file.to_string_lossy().to_string();
    start_aggregator(tls, data, "127.0.0.1:0", "127.0.0.1:0", &[flag, &f]).unwrap()
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// A POST with extra headers; status and body.
fn post_with(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("POST {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (h, b) = raw.split_once("\r\n\r\n").unwrap();
    (
        h.split_whitespace().nth(1).unwrap().parse().unwrap(),
        b.to_string(),
    )
}

/// Responses read off one connection: status and body of each, in order (bodies have a
/// Content-Length).
fn responses(mut raw: &str) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    while let Some((head, rest)) = raw.split_once("\r\n\r\n") {
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no Content-Length: {head}"));
        out.push((status, rest[..len].to_string()));
        raw = &rest[len..];
    }
    out
}

/// A query written into the URL without percent-encoding (`curl -g`, a URL formatted by
/// hand) is answered as Prometheus answers it: `"`, `<`, `>`, `` ` `` and `#` in the target
/// are taken as written, on a kept-alive connection with a POST and its body in between.
#[test]
fn unencoded_query_targets_are_answered_as_prometheus_answers_them() {
    let (dir, tls) = setup();
    let mut agg = start_fresh_aggregator(&tls, dir.path()).unwrap();
    let mut s = TcpStream::connect(agg.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = "query=label_replace(vector(2),\"b\",\"<#>\",\"\",\"\")";
    let requests = format!(
        "GET /api/v1/query?query=label_replace(vector(1)>0,\"a\",\"<`x`>\",\"\",\"\")#c&time=100 HTTP/1.1\r\nHost: x\r\n\r\n\
         POST /api/v1/query?time=100 HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}\
         GET /api/v1/query?query=\"s\"&time=100 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(requests.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let r = responses(&raw);
    assert_eq!(r.len(), 3, "{raw}");
    for (st, b) in &r {
        assert_eq!(*st, 200, "{b}");
    }
    // The `#` and what follows it are the query's (a PromQL comment) and the next parameter.
    let v = json(&r[0].1);
    assert_eq!(v["data"]["result"][0]["metric"]["a"], "<`x`>", "{v}");
    assert_eq!(v["data"]["result"][0]["value"][0], 100);
    let v = json(&r[1].1);
    assert_eq!(v["data"]["result"][0]["metric"]["b"], "<#>", "{v}");
    assert_eq!(json(&r[2].1)["data"]["result"][1], "s");
    alive(&mut agg);
}

/// Point 1 and 2: queries that crashed the process or grew without bound get a clear error,
/// and the server keeps serving.
#[test]
fn hostile_queries_get_a_clear_error_and_the_server_keeps_serving() {
    let (dir, tls) = setup();
    let mut agg = start_fresh_aggregator(&tls, dir.path()).unwrap();
    let http = agg.http;
    // POSTed as a form, as Grafana sends long queries (a GET this long is refused with 414
    // before it reaches the API).
    let form = |path: &str, key: &str, q: &str| {
        post_with(
            http,
            path,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            format!("{key}={}", enc(q)).as_bytes(),
        )
    };
    let get = |q: &str| form("/api/v1/query", "query", q);
    // What aborted it: 3,000 terms, 40k parentheses (also in match[], also unbalanced).
    for q in [
        vec!["1"; 3000].join("+"),
        format!("{}1{}", "(".repeat(40_000), ")".repeat(40_000)),
        "(".repeat(40_000),
    ] {
        let (st, body) = get(&q);
        assert_eq!(st, 400, "{body}");
        assert_eq!(json(&body)["errorType"], "bad_data");
    }
    let (st, body) = form("/api/v1/series", "match[]", &"(".repeat(40_000));
    assert_eq!(st, 400, "{body}");
    alive(&mut agg);
    // What must still answer: depth 100, 1,000 terms.
    let (st, body) = get(&format!("{}1{}", "(".repeat(100), ")".repeat(100)));
    assert_eq!(st, 200, "{body}");
    let (st, body) = get(&vec!["1"; 1000].join("+"));
    assert_eq!(st, 200, "{body}");
    assert_eq!(json(&body)["data"]["result"][1], "1000");
    let (st, body) = get(&format!(
        "{}vector(1){}",
        "abs(".repeat(100),
        ")".repeat(100)
    ));
    assert_eq!(st, 200, "{body}");
    // Unbounded memory: refused before allocating, naming the limit.
    let started = Instant::now();
    let (st, body) = get("sum_over_time(vector(1)[100y:1ms])");
    assert_eq!(st, 422, "{body}");
    assert_eq!(json(&body)["errorType"], "execution");
    assert!(body.contains("query_max_samples"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The 11,000-point check cannot be overflowed.
    let (st, body) = http_get(
        agg.http,
        "/api/v1/query_range?query=vector(1)&start=-9.2e15&end=9.2e15&step=1",
    )
    .unwrap();
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("11,000 points"), "{body}");
    // Parameters Prometheus refuses, refused alike (found by probing it side by side).
    for (path, want) in [
        ("/api/v1/label/1bad/values", "invalid label name"),
        ("/api/v1/metadata?limit=abc", "limit must be a number"),
        (
            "/api/v1/series?match[]=rate(x%5B5m%5D)",
            "invalid parameter \"match[]\"",
        ),
        ("/federate?match[]=bad%7B", "invalid parameter \"match[]\""),
    ] {
        let (st, body) = http_get(agg.http, path).unwrap();
        assert_eq!(st, 400, "{path}: {body}");
        let error = json(&body)["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(error.contains(want), "{path}: {body}");
    }
    // Exemplars of a query without a selector: no content, as Prometheus answers.
    let (st, body) = http_get(agg.http, "/api/v1/query_exemplars?query=1%2B1").unwrap();
    assert_eq!(st, 204, "{body}");
    alive(&mut agg);
}

/// Point 1: a rule file with such an expression fails `rules check` and `check-config`
/// instead of crash-looping `serve`.
#[test]
fn a_rule_too_large_to_evaluate_fails_the_checks() {
    let (dir, tls) = setup();
    let rules = dir.path().join("deep.yml");
    std::fs::write(
        &rules,
        format!(
            "groups:\n- name: g\n  rules:\n  - record: deep\n    expr: {}\n",
            vec!["1"; 3000].join("+")
        ),
    )
    .unwrap();
    let out = Command::new(bin("telltale-aggregator").unwrap())
        .args(["rules", "check"])
        .arg(&rules)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("operators"), "{text}");
    let out = Command::new(bin("telltale-aggregator").unwrap())
        .arg("check-config")
        .arg("--tls-dir")
        .arg(&tls)
        .arg("--rules")
        .arg(&rules)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// Point 6: a second `serve` on the same data directory stops before touching it, naming the
/// first; the first goes on writing and rolling its WAL.
#[test]
fn a_second_aggregator_on_one_data_dir_exits_2_naming_the_first() {
    let (dir, tls) = setup();
    let mut agg = start_fresh_aggregator(&tls, dir.path()).unwrap();
    let data = dir.path().join("agg");
    let segments = |d: &std::path::Path| std::fs::read_dir(d.join("log")).unwrap().count();
    let before = segments(&data);
    let out = aggregator_command(&tls, &data, "127.0.0.1:0", "127.0.0.1:0", &[])
        .unwrap()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let pid = agg.proc.child.id();
    assert!(
        err.contains(&format!("in use by telltale-aggregator serve (pid {pid})")),
        "{err}"
    );
    assert_eq!(segments(&data), before, "the second one touched the WAL");
    let (st, body) = http_post(
        agg.http,
        "/api/v1/admin/tsdb/flush",
        "application/json",
        b"",
    )
    .unwrap();
    assert_eq!(st, 200, "{body}");
    alive(&mut agg);
}

/// Point 7: damaged alerting state is found by `storage check`, moved aside at start-up and
/// counted; the aggregator starts.
#[test]
fn damaged_alerting_state_is_moved_aside_and_counted() {
    let (dir, tls) = setup();
    let data = dir.path().join("agg");
    {
        let mut agg = start_fresh_aggregator(&tls, dir.path()).unwrap();
        assert_eq!(agg.proc.terminate(Duration::from_secs(10)), Some(0));
    }
    let conf = data.join("alerting/conf");
    let mut bytes = std::fs::read(&conf).unwrap();
    for b in bytes.iter_mut().take(16) {
        *b ^= 0x5A;
    }
    std::fs::write(&conf, bytes).unwrap();
    let out = Command::new(bin("telltale-aggregator").unwrap())
        .args(["storage", "check", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("DAMAGED alerting state"), "{text}");
    // Garbage in the log file too: whatever sled makes of it, start-up goes on.
    let mut rng = 0x9E3779B97F4A7C15u64;
    let garbage: Vec<u8> = (0..65_536)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng as u8
        })
        .collect();
    std::fs::write(data.join("alerting/db"), garbage).unwrap();
    let mut agg = start_aggregator(&tls, &data, "127.0.0.1:0", "127.0.0.1:0", &[]).unwrap();
    alive(&mut agg);
    assert_eq!(
        metric(agg.http, "telltale_aggregator_alerting_state_damaged_total").unwrap(),
        1.0
    );
    let aside = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("alerting.corrupt-")
        });
    assert!(aside, "the damaged state is kept beside, not deleted");
}

/// Rules loaded from the test's files (the built-in golden-signal groups left out).
fn rule_count(agg: &Aggregator) -> usize {
    let (_, body) = http_get(agg.http, "/api/v1/rules").unwrap();
    json(&body)["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| {
            !g["name"]
                .as_str()
                .unwrap_or("")
                .starts_with("telltale-golden-")
        })
        .map(|g| g["rules"].as_array().unwrap().len())
        .sum()
}

fn rules_file(n: usize) -> String {
    let mut s = String::from("groups:\n- name: g\n  interval: 1s\n  rules:\n");
    for i in 0..n {
        s.push_str(&format!("  - record: r{i}\n    expr: vector({i})\n"));
    }
    s
}

/// Point 8: SIGHUP and `POST /-/reload` re-read the rules; a bad file keeps the running ones
/// and says so in `/metrics`.
#[test]
fn sighup_and_the_reload_endpoint_reload_rules_and_keep_them_on_a_bad_file() {
    let (dir, tls) = setup();
    let rules = dir.path().join("r.yml");
    std::fs::write(&rules, rules_file(1)).unwrap();
    let mut agg = start_with_file(&tls, &dir.path().join("agg"), "--rules", &rules);
    assert_eq!(rule_count(&agg), 1);
    std::fs::write(&rules, rules_file(2)).unwrap();
    let pid = agg.proc.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let reloaded = wait_for(Duration::from_secs(10), || {
        (rule_count(&agg) == 2).then_some(())
    });
    assert!(
        reloaded.is_some(),
        "SIGHUP did not reload:\n{}",
        agg.proc.log()
    );
    alive(&mut agg);
    // The new rule is evaluated.
    let evaluated = wait_for(Duration::from_secs(10), || {
        (!query(agg.http, "r1").unwrap().is_empty()).then_some(())
    });
    assert!(evaluated.is_some());
    // A bad file: 500 naming it, the running rules kept, the gauge at 0.
    std::fs::write(
        &rules,
        "groups:\n- name: g\n  rules:\n  - record: x\n    expr: sum(\n",
    )
    .unwrap();
    let (st, body) = post_with(
        agg.http,
        "/-/reload",
        &[("Content-Type", "application/json")],
        b"",
    );
    assert_eq!(st, 500, "{body}");
    assert!(body.contains("r.yml"), "{body}");
    assert_eq!(rule_count(&agg), 2);
    assert_eq!(
        metric(
            agg.http,
            "telltale_aggregator_config_last_reload_successful"
        )
        .unwrap(),
        0.0
    );
    std::fs::write(&rules, rules_file(3)).unwrap();
    let (st, body) = post_with(agg.http, "/-/reload", &[], b"");
    assert_eq!(st, 200, "{body}");
    assert_eq!(rule_count(&agg), 3);
    assert_eq!(
        metric(
            agg.http,
            "telltale_aggregator_config_last_reload_successful"
        )
        .unwrap(),
        1.0
    );
    alive(&mut agg);
}

/// Point 9 and 10: with no token, a browser's cross-site request cannot change state; with a
/// token, an unauthorized upload is refused before its body is read.
#[test]
fn cross_site_requests_are_refused_and_auth_comes_before_the_body() {
    let (dir, tls) = setup();
    let agg = start_fresh_aggregator(&tls, dir.path()).unwrap();
    let path = "/api/v1/remediation/status";
    let (_, status) = http_get(agg.http, path).unwrap();
    let enabled = json(&status)["data"]["enabled"].as_bool().unwrap();
    let body = format!("{{\"enabled\": {}}}", !enabled);
    let body = body.as_bytes();
    for headers in [
        vec![("Content-Type", "text/plain")],
        vec![("Content-Type", "application/x-www-form-urlencoded")],
        vec![("Content-Type", "multipart/form-data; boundary=x")],
        vec![
            ("Content-Type", "application/json"),
            ("Origin", "http://evil.example"),
        ],
        vec![("Content-Type", "application/json"), ("Origin", "null")],
        vec![
            ("Content-Type", "application/json"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
    ] {
        let (st, resp) = post_with(agg.http, path, &headers, body);
        assert_eq!(st, 403, "{headers:?}: {resp}");
    }
    let (_, status) = http_get(agg.http, path).unwrap();
    assert_eq!(json(&status)["data"]["enabled"], enabled, "nothing changed");
    // The same call from an API client works; a same-origin Origin is fine.
    let origin = format!("http://{}", agg.http);
    let (st, resp) = post_with(
        agg.http,
        path,
        &[("Content-Type", "application/json"), ("Origin", &origin)],
        body,
    );
    assert_eq!(st, 200, "{resp}");
    let (_, status) = http_get(agg.http, path).unwrap();
    assert_eq!(json(&status)["data"]["enabled"], !enabled);
    // Read-only POSTs (form-encoded queries, as Grafana sends) are not state changes.
    let (st, resp) = post_with(
        agg.http,
        "/api/v1/query",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"query=vector(1)",
    );
    assert_eq!(st, 200, "{resp}");
    drop(agg);

    // With a token: a 60 MB upload without it is answered 401 before it is sent.
    let cfg = dir.path().join("agg.toml");
    std::fs::write(&cfg, "api_token = \"s3cret\"\n").unwrap();
    let mut agg = start_with_file(&tls, &dir.path().join("agg2"), "--config", &cfg);
    let mut s = TcpStream::connect(agg.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /api/v1/write HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 60000000\r\n\r\n",
        agg.http
    )
    .unwrap();
    s.write_all(&[0u8; 4096]).unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    assert!(line.contains(" 401 "), "{line:?}");
    alive(&mut agg);
}

fn newest_time_sample(agg: &Aggregator, instance: &str) -> i64 {
    raw_samples(
        agg.http,
        &format!("node_time_seconds{{instance=\"{instance}\"}}"),
        "10m",
    )
    .unwrap()
    .into_iter()
    .map(|(t, _)| t)
    .max()
    .unwrap_or(0)
}

/// Points 3 and 4: a second agent on one data directory stops without touching the buffer;
/// bytes flipped in a stopped agent's buffer never make the aggregator drop new batches as
/// duplicates.
#[test]
fn agent_buffer_locking_and_damage() {
    let (dir, tls) = setup();
    certs_issue(&tls, "bufhost").unwrap();
    let agg = start_fresh_aggregator(&tls, dir.path()).unwrap();
    let data = dir.path().join("agent");
    let mut agent = start_agent(&tls, "bufhost", agg.quic, &data, "200ms").unwrap();
    let first = wait_for(Duration::from_secs(15), || {
        let t = newest_time_sample(&agg, "bufhost");
        (t > 0).then_some(t)
    });
    assert!(first.is_some(), "no data:\n{}", agent.log());
    // A second agent on the same directory: exit 2, nothing moved aside.
    let mut second = start_agent(&tls, "bufhost", agg.quic, &data, "200ms").unwrap();
    let code = wait_for(Duration::from_secs(10), || {
        second.child.try_wait().unwrap().map(|s| s.code())
    });
    assert_eq!(code, Some(Some(2)), "{}", second.log());
    // The log is read by a thread of its own, which may not have caught up with the exit.
    let said = second.wait_log("in use by telltale-agent run", Duration::from_secs(5));
    assert!(said.is_ok(), "{}", second.log());
    let names: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(!names.iter().any(|n| n.contains("corrupt")), "{names:?}");
    // Run a while (about 40 batches), stop cleanly, damage the buffer's log, restart.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        agent.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        agent.log()
    );
    let db = data.join("buffer/db");
    let mut bytes = std::fs::read(&db).unwrap();
    let n = bytes.len();
    // Bytes flipped across the later part of the log (as the probe did): sled keeps what
    // precedes the first damaged record and silently drops the rest.
    for i in (n / 10..n).step_by(97) {
        bytes[i] ^= 0x5A;
    }
    std::fs::write(&db, bytes).unwrap();
    let restarted = telltale_common::model::now_ms();
    let agent = start_agent(&tls, "bufhost", agg.quic, &data, "200ms").unwrap();
    // Re-used sequences would be dropped as duplicates until they pass the old ones: the
    // first seconds after the restart would be missing. Every interval must arrive.
    let after = wait_for(Duration::from_secs(15), || {
        let s: Vec<i64> = raw_samples(agg.http, "node_time_seconds{instance=\"bufhost\"}", "10m")
            .unwrap()
            .into_iter()
            .map(|(t, _)| t)
            .filter(|&t| t >= restarted)
            .collect();
        (s.len() >= 20).then_some(s)
    });
    let after = after.unwrap_or_else(|| {
        panic!(
            "samples collected after the restart never arrived:\nagent:\n{}",
            agent.log()
        )
    });
    assert!(
        after[0] < restarted + 3000,
        "the first {} ms after the restart are missing (dropped as duplicates):\n{}",
        after[0] - restarted,
        agent.log()
    );
    // And the damage was noticed, not passed over.
    assert!(
        agent.log().contains("starting a new epoch"),
        "{}",
        agent.log()
    );
    assert!(agent.log().contains("corrupt=1"), "{}", agent.log());
}

/// Point 8 (agent): SIGHUP re-reads the configuration instead of killing the agent; a bad
/// file keeps the running sources.
#[test]
fn the_agent_reloads_on_sighup() {
    let (dir, tls) = setup();
    certs_issue(&tls, "hup").unwrap();
    let agg = start_fresh_aggregator(&tls, dir.path()).unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, "interval = \"500ms\"\n").unwrap();
    let mut agent = start_agent_with_config(
        &tls,
        "hup",
        agg.quic,
        &dir.path().join("agent"),
        "500ms",
        Some(&cfg),
    )
    .unwrap();
    agent
        .wait_log("telltale-agent starting", Duration::from_secs(10))
        .unwrap();
    let pid = agent.child.id().to_string();
    let hup = || {
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        )
    };
    hup();
    agent
        .wait_log("configuration reloaded", Duration::from_secs(10))
        .unwrap();
    std::fs::write(&cfg, "interval = [\n").unwrap();
    hup();
    agent
        .wait_log("reload failed", Duration::from_secs(10))
        .unwrap();
    assert!(agent.child.try_wait().unwrap().is_none(), "{}", agent.log());
    // Still collecting and shipping.
    let t = telltale_common::model::now_ms();
    let fresh = wait_for(Duration::from_secs(10), || {
        (newest_time_sample(&agg, "hup") > t).then_some(())
    });
    assert!(fresh.is_some(), "{}", agent.log());
}

/// Point 10: an aggregator killed and restarted on its ports is found again within seconds
/// (its stateless resets are recognised; reconnects back off to 5 s at most), not after the
/// 30 s idle timeout.
#[test]
fn agents_reconnect_promptly_after_an_aggregator_restart() {
    let (dir, tls) = setup();
    certs_issue(&tls, "prompt").unwrap();
    let data = dir.path().join("agg");
    let mut agg = start_aggregator(&tls, &data, "127.0.0.1:0", "127.0.0.1:0", &[]).unwrap();
    let (http, quic) = (agg.http.to_string(), agg.quic.to_string());
    let agent = start_agent(&tls, "prompt", agg.quic, &dir.path().join("agent"), "500ms").unwrap();
    let connected = |agg: &Aggregator| {
        metric(agg.http, "telltale_aggregator_connected_agents").unwrap_or(0.0) >= 1.0
    };
    assert!(wait_for(Duration::from_secs(15), || connected(&agg).then_some(())).is_some());
    agg.proc.kill();
    let agg = start_aggregator(&tls, &data, &http, &quic, &[]).unwrap();
    let restarted = Instant::now();
    let back = wait_for(Duration::from_secs(25), || connected(&agg).then_some(()));
    let took = restarted.elapsed();
    assert!(
        back.is_some(),
        "the agent never came back:\n{}",
        agg.proc.log()
    );
    // Generous against a loaded CI machine; the idle timeout it replaces was 30 s.
    assert!(
        took < Duration::from_secs(12),
        "reconnected after {took:?}:\n{}",
        agent.log()
    );
    eprintln!("reconnected {took:?} after the restart");
}

/// Point 10: two hosts with one certificate do not interleave silently: the newer connection
/// replaces the older one, counted and logged.
#[test]
fn a_second_connection_with_one_certificate_replaces_the_first_and_is_counted() {
    let (dir, tls) = setup();
    certs_issue(&tls, "twin").unwrap();
    let agg = start_fresh_aggregator(&tls, dir.path()).unwrap();
    let _a = start_agent(&tls, "twin", agg.quic, &dir.path().join("a"), "500ms").unwrap();
    assert!(
        wait_for(Duration::from_secs(15), || {
            (metric(agg.http, "telltale_aggregator_connected_agents").unwrap_or(0.0) >= 1.0)
                .then_some(())
        })
        .is_some()
    );
    let _b = start_agent(&tls, "twin", agg.quic, &dir.path().join("b"), "500ms").unwrap();
    let replaced = wait_for(Duration::from_secs(15), || {
        (metric(agg.http, "telltale_aggregator_connections_replaced_total").unwrap_or(0.0) >= 1.0)
            .then_some(())
    });
    assert!(replaced.is_some(), "{}", agg.proc.log());
    assert!(agg.proc.log().contains("replaces its older one"));
}

/// Fills the filesystem under `dir` with one file, returned (removing it gives the space back).
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 1 << 16];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    filler
}

/// Point 10: with the aggregator's disk full, `/-/ready` says so and agents back off instead
/// of reconnecting several times a second; once space is back, writes resume by themselves.
#[test]
fn a_full_disk_makes_the_aggregator_unready_and_agents_back_off() {
    let (dir, tls) = setup();
    let data = dir.path().join("small");
    let Some(_fs) = telltale_tests::chaos::Tmpfs::mount(&data, "24m") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to mount a tmpfs (it runs as root)"
        );
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    certs_issue(&tls, "full").unwrap();
    let agg = start_aggregator(&tls, &data.join("agg"), "127.0.0.1:0", "127.0.0.1:0", &[]).unwrap();
    let _agent = start_agent(&tls, "full", agg.quic, &dir.path().join("agent"), "200ms").unwrap();
    assert!(
        wait_for(Duration::from_secs(15), || {
            (newest_time_sample(&agg, "full") > 0).then_some(())
        })
        .is_some()
    );
    let filler = fill(&data);
    let unready = wait_for(Duration::from_secs(20), || {
        let (st, body) = http_get(agg.http, "/-/ready").unwrap();
        (st == 503 && body.contains("cannot write")).then_some(())
    });
    assert!(unready.is_some(), "{}", agg.proc.log());
    let connects = |log: &str| log.matches("agent connected").count();
    let before = connects(&agg.proc.log());
    std::thread::sleep(Duration::from_secs(6));
    let during = connects(&agg.proc.log()) - before;
    eprintln!("{during} reconnections in 6 s while the disk is full");
    // The aggregator closes with the storage code, and the agent then waits 2.5 to 5 s:
    // at most three attempts fit in 6 s.
    assert!(
        during <= 3,
        "{during} reconnections in 6 s while the disk is full:\n{}",
        agg.proc.log()
    );
    // Space again: the next write succeeds and readiness comes back.
    std::fs::remove_file(&filler).unwrap();
    let t = telltale_common::model::now_ms();
    let back = wait_for(Duration::from_secs(20), || {
        (http_get(agg.http, "/-/ready").unwrap().0 == 200 && newest_time_sample(&agg, "full") > t)
            .then_some(())
    });
    assert!(back.is_some(), "{}", agg.proc.log());
}

/// With a read token configured, every read needs it (or the API token) — metric queries, log
/// queries, the live tail, alerts, `/metrics`, read-only POSTs — except the two probes; the
/// read token never authorises a change.
#[test]
fn a_read_token_guards_every_read_but_the_probes() {
    let (dir, tls) = setup();
    let cfg = dir.path().join("agg.toml");
    std::fs::write(&cfg, "api_token = \"adm1n\"\nread_token = \"r34d\"\n").unwrap();
    let mut agg = start_with_file(&tls, &dir.path().join("agg"), "--config", &cfg);
    let now = telltale_common::model::now_ms() * 1_000_000;
    let stream = telltale_common::wire::LogStream {
        labels: vec![("source".into(), "app".into())],
        entries: vec![telltale_common::wire::LogEntry {
            t_ns: now,
            line: "card 4111 declined for alice@example.com".into(),
            metadata: Vec::new(),
        }],
    };
    // Pushing is a change: the read token does not do.
    let body = telltale_aggregator::logs::push::encode_protobuf(std::slice::from_ref(&stream));
    let (st, _) = http_post_auth(
        agg.http,
        "/loki/api/v1/push",
        "application/x-protobuf",
        &body,
        Some("r34d"),
    )
    .unwrap();
    assert_eq!(st, 401, "the read token pushed");
    loki_push(agg.http, "adm1n", &[stream]).unwrap();

    let logs = format!(
        "/loki/api/v1/query_range?query={}&start={}&end={}",
        enc(r#"{source="app"}"#),
        now - 60_000_000_000,
        now + 60_000_000_000
    );
    let reads = [
        logs.as_str(),
        "/loki/api/v1/labels",
        "/loki/api/v1/tail?query=%7Bsource%3D%22app%22%7D",
        "/loki/api/v1/patterns?query=%7Bsource%3D%22app%22%7D",
        "/api/v1/query?query=up",
        "/api/v1/labels",
        "/api/v1/alerts",
        "/api/v1/incidents",
        "/api/v1/agents",
        "/metrics",
    ];
    for path in reads {
        for token in [None, Some("wrong"), Some("r34"), Some("r34d2")] {
            let (st, body) = http_get_auth(agg.http, path, token).unwrap();
            assert_eq!(st, 401, "{path} with {token:?}: {body}");
            assert!(body.contains("read token"), "{path}: {body}");
        }
    }
    // A form-encoded query (Grafana's POST) is a read too.
    let (st, _) = http_post(
        agg.http,
        "/api/v1/query",
        "application/x-www-form-urlencoded",
        b"query=vector(1)",
    )
    .unwrap();
    assert_eq!(st, 401);
    for token in ["r34d", "adm1n"] {
        let (st, body) = http_get_auth(agg.http, &logs, Some(token)).unwrap();
        assert_eq!(st, 200, "{body}");
        assert!(body.contains("4111 declined"), "{body}");
        let (st, body) =
            http_get_auth(agg.http, "/api/v1/query?query=vector(1)", Some(token)).unwrap();
        assert_eq!(st, 200, "{body}");
    }
    for probe in ["/-/healthy", "/-/ready"] {
        assert_eq!(http_get(agg.http, probe).unwrap().0, 200, "{probe}");
    }
    alive(&mut agg);
}

/// Slowloris: connections that never finish a request's head take at most the connection cap
/// (a quarter of the descriptor limit, at least 64) and are closed after the header timeout
/// (`http_header_timeout`, 5 s here), so the storage engine keeps its descriptors — an
/// agent's samples are stored throughout, second by second — and the server answers again
/// once they are gone. Run under a limit of 128 descriptors: 120 slow connections beside the
/// store's own files would have taken them all.
#[test]
fn slow_clients_cannot_hold_the_descriptors_storage_needs() {
    let (dir, tls) = setup();
    certs_issue(&tls, "steady").unwrap();
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=128:128")
        .arg("--")
        .arg(bin("telltale-aggregator").unwrap())
        .arg("serve")
        .arg("--tls-dir")
        .arg(&tls)
        .arg("--data-dir")
        .arg(dir.path().join("agg"))
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--quic-listen",
            "127.0.0.1:0",
        ])
        .arg("--config")
        .arg(dir.path().join("agg.toml"));
    std::fs::write(
        dir.path().join("agg.toml"),
        "http_header_timeout = \"5s\"\n",
    )
    .unwrap();
    let mut agg = start_aggregator_command(cmd).unwrap();
    let _agent = start_agent(&tls, "steady", agg.quic, &dir.path().join("agent"), "1s").unwrap();
    wait_for(Duration::from_secs(20), || {
        (newest_time_sample(&agg, "steady") > 0).then_some(())
    })
    .expect("the agent's samples arrive");
    let base = telltale_tests::chaos::rss_and_fds(&agg.proc).1;
    let attack = telltale_common::model::now_ms();
    let mut slow: Vec<TcpStream> = (0..120)
        .map(|_| {
            let mut s = TcpStream::connect(agg.http).unwrap();
            s.write_all(b"GET /api/v1/query?query=up HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    let mut peak = 0;
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(500));
        peak = peak.max(telltale_tests::chaos::rss_and_fds(&agg.proc).1);
    }
    assert!(
        agg.proc.child.try_wait().unwrap().is_none(),
        "the aggregator exited:\n{}",
        agg.proc.log()
    );
    assert!(
        peak <= base + 64 + 8,
        "{peak} descriptors open under attack ({base} before): more than the cap of 64 connections"
    );
    // Answered once the first slow connections are closed (5 s), not never.
    let t = Instant::now();
    let (status, _) = http_get(agg.http, "/-/healthy").unwrap();
    assert_eq!(status, 200);
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    std::thread::sleep(Duration::from_secs(6));
    // The slow connections were closed by the server.
    let mut closed = 0;
    for s in slow.iter_mut().take(64) {
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut b = [0u8; 512];
        // A 408 then the end, or the end at once, or a reset: the server let it go. A
        // timeout means it still holds the connection open.
        let over = match s.read(&mut b) {
            Ok(_) => true,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        closed += usize::from(over);
    }
    assert!(
        closed >= 60,
        "only {closed} of the first 64 slow connections were closed"
    );
    // Every second of the attack was stored.
    let (_, body) = http_get(
        agg.http,
        &format!(
            "/api/v1/query?query={}",
            enc("node_time_seconds{instance=\"steady\"}[2m]")
        ),
    )
    .unwrap();
    let v = json(&body);
    let ts: Vec<i64> = v["data"]["result"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_f64().unwrap() * 1000.0) as i64)
        .filter(|&t| t >= attack)
        .collect();
    let gaps = ts.windows(2).filter(|w| w[1] - w[0] > 1500).count();
    assert!(
        ts.len() >= 8 && gaps == 0,
        "samples during the attack: {} with {gaps} gaps",
        ts.len()
    );
}

/// A flood of handshakes with certificates from another CA (300, 100 at a time) is refused,
/// counted one by one, and logged within the budget (20 lines per 10 s, then a count of the
/// lines left out), and an agent connected meanwhile is served throughout.
#[test]
fn a_flood_of_foreign_handshakes_is_counted_logged_within_a_budget_and_serves_agents() {
    let (dir, tls) = setup();
    let other = dir.path().join("other-ca");
    certs_init(&other).unwrap();
    certs_issue(&other, "intruder").unwrap();
    std::fs::copy(tls.join("ca.crt"), other.join("ca.crt")).unwrap();
    certs_issue(&tls, "good").unwrap();
    let agg = start_fresh_aggregator(&tls, dir.path()).unwrap();
    let _good = start_agent(&tls, "good", agg.quic, &dir.path().join("good"), "200ms").unwrap();
    assert!(
        wait_for(Duration::from_secs(15), || {
            (newest_time_sample(&agg, "good") > 0).then_some(())
        })
        .is_some()
    );
    let paths = telltale_common::tls::TlsPaths {
        ca: other.join("ca.crt"),
        cert: other.join("agents/intruder.crt"),
        key: other.join("agents/intruder.key"),
    };
    let client = paths.load().unwrap().client_config().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let refused = rt.block_on(async {
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.set_default_client_config(client);
        let mut refused = 0;
        for _ in 0..3 {
            let mut tries = tokio::task::JoinSet::new();
            for _ in 0..100 {
                let connecting = ep.connect(agg.quic, "localhost").unwrap();
                tries.spawn(async move {
                    // With TLS 1.3 the server checks the client's certificate after the
                    // client's handshake is done: the refusal shows as the connection's close.
                    match connecting.await {
                        Err(_) => true,
                        Ok(c) => {
                            let closed = tokio::time::timeout(Duration::from_secs(10), c.closed());
                            matches!(
                                closed.await,
                                Ok(quinn::ConnectionError::ConnectionClosed(_)
                                    | quinn::ConnectionError::ApplicationClosed(_))
                            )
                        }
                    }
                });
            }
            while let Some(r) = tries.join_next().await {
                refused += usize::from(r.unwrap());
            }
        }
        refused
    });
    assert_eq!(refused, 300, "every foreign handshake is refused");
    let t = telltale_common::model::now_ms();
    assert!(
        wait_for(Duration::from_secs(10), || {
            (newest_time_sample(&agg, "good") > t).then_some(())
        })
        .is_some(),
        "the agent is served after the flood"
    );
    let counted = metric(agg.http, "telltale_aggregator_handshake_errors_total").unwrap();
    assert!(counted >= 300.0, "{counted} handshake errors counted");
    let retries = metric(agg.http, "telltale_aggregator_handshake_retries_total").unwrap_or(0.0);
    let log = agg.proc.log();
    let lines = log.matches("QUIC/TLS handshake refused").count();
    eprintln!("{counted} refused handshakes counted, {lines} logged, {retries} sent a Retry");
    assert!(
        (1..=40).contains(&lines),
        "{lines} log lines for 300 refused handshakes"
    );
}

/// An agent whose preferred aggregator's disk fills moves to the next one at once, and does
/// not move back while that disk stays full: the full aggregator's handshake still works,
/// but the failback probes leave it out for a minute after it said it cannot store data.
#[test]
fn an_agent_leaves_an_aggregator_with_a_full_disk_for_the_next_and_stays() {
    let (dir, tls) = setup();
    let small = dir.path().join("small");
    let Some(_fs) = telltale_tests::chaos::Tmpfs::mount(&small, "24m") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to mount a tmpfs (it runs as root)"
        );
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let full =
        start_aggregator(&tls, &small.join("agg"), "127.0.0.1:0", "127.0.0.1:0", &[]).unwrap();
    let spare = start_fresh_aggregator(&tls, dir.path()).unwrap();
    certs_issue(&tls, "mover").unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "aggregators = [\"localhost:{}\", \"localhost:{}\"]\nmode = \"failover\"\n",
            full.quic.port(),
            spare.quic.port()
        ),
    )
    .unwrap();
    // Without `--aggregator`, which would replace the list.
    let mut cmd = Command::new(bin("telltale-agent").unwrap());
    cmd.arg("run")
        .arg("--config")
        .arg(&cfg)
        .args(["--name", "mover", "--interval", "200ms"])
        .arg("--data-dir")
        .arg(dir.path().join("agent"))
        .arg("--ca")
        .arg(tls.join("ca.crt"))
        .arg("--cert")
        .arg(tls.join("agents/mover.crt"))
        .arg("--key")
        .arg(tls.join("agents/mover.key"));
    let agent = Proc::spawn(cmd, "mover").unwrap().0;
    assert!(
        wait_for(Duration::from_secs(15), || {
            (newest_time_sample(&full, "mover") > 0).then_some(())
        })
        .is_some()
    );
    let filler = fill(&small);
    let unready = wait_for(Duration::from_secs(20), || {
        (http_get(full.http, "/-/ready").unwrap().0 == 503).then_some(Instant::now())
    })
    .expect("the full aggregator says it is not ready");
    let moved = wait_for(Duration::from_secs(15), || {
        (newest_time_sample(&spare, "mover") > 0).then_some(Instant::now())
    })
    .unwrap_or_else(|| {
        panic!(
            "the agent's samples never reached the next aggregator:\n{}",
            agent.log()
        )
    });
    eprintln!(
        "samples at the next aggregator {:?} after the first was unready",
        moved - unready
    );
    assert!(
        moved - unready < Duration::from_secs(8),
        "moved after {:?}",
        moved - unready
    );
    // Three failback probes' worth: the agent stays.
    let before = full.proc.log().matches("agent connected").count();
    std::thread::sleep(Duration::from_secs(25));
    let back = full.proc.log().matches("agent connected").count() - before;
    assert!(
        back == 0,
        "{back} moves back to the full aggregator in 25 s:\n{}\n{}",
        agent.log(),
        full.proc.log()
    );
    let t = telltale_common::model::now_ms() - 2_000;
    assert!(
        newest_time_sample(&spare, "mover") > t,
        "samples still arrive"
    );
    std::fs::remove_file(&filler).unwrap();
}
