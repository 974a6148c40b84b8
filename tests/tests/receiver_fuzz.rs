//! Hostile input to every network receiver of the agent, against the real binary on loopback:
//! StatsD (UDP), syslog (UDP and TCP), Fluent forward (TCP, MessagePack), the Loki push API
//! and OTLP over HTTP and gRPC. Seeded random bytes, messages whose length fields claim
//! gigabytes, deep nesting, lines without an end, bodies of random JSON or protobuf, bombs and
//! truncated compression. Afterwards the agent must be running, within bounded memory, still
//! collecting its host metrics, and every receiver must still take a valid message through to
//! the aggregator. A failure prints the seed; `TT_RECEIVER_FUZZ_SEED` replays it.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use telltale_common::model::now_ms;
use telltale_tests::chaos::rss_and_fds;
use telltale_tests::compliance::Rng;
use telltale_tests::hostile::{Pick, Request, body, json, send, value};
use telltale_tests::*;

fn bytes(r: &mut Rng, max: usize) -> Vec<u8> {
    (0..r.below(max)).map(|_| r.below(256) as u8).collect()
}

/// A StatsD datagram: random bytes, or lines of hostile names, values, types, rates and tags.
fn statsd(r: &mut Rng) -> Vec<u8> {
    if r.chance(0.2) {
        return bytes(r, 9000);
    }
    let lines: Vec<String> = (0..1 + r.below(20))
        .map(|i| {
            let name = match r.below(4) {
                0 => value(r).chars().take(300).collect(),
                1 => format!("fuzz.series_{}", r.below(100_000)),
                _ => "fuzz.hits".to_string(),
            };
            let v: String = value(r).chars().take(40).collect();
            let ty = r.pick(&["c", "g", "ms", "h", "s", "d", "x", "", "c|c"]);
            let rate = r.pick(&["", "|@0", "|@-1", "|@NaN", "|@1e-300", "|@0.5", "|@"]);
            let tags = r.pick(&[
                "",
                "|#a:b",
                "|#a",
                "|#:",
                "|#a:b,a:c",
                "|#__name__:x",
                "|#le:NaN",
                "|#",
            ]);
            format!(
                "{name}:{v}|{ty}{rate}{tags}{}",
                if i % 7 == 0 { "\r" } else { "" }
            )
        })
        .collect();
    lines.join("\n").into_bytes()
}

/// A syslog message: random bytes, or RFC 3164/5424 with hostile priority, time, structured
/// data and octet counts.
fn syslog(r: &mut Rng) -> Vec<u8> {
    match r.below(6) {
        0 => bytes(r, 4000),
        1 => format!("<{}>", value(r)).into_bytes(),
        2 => format!(
            "<{}>1 {} host app {} - [{}] {}",
            r.pick(&["13", "999999", "-1", "", "191", "192"]),
            r.pick(&[
                "-",
                "2026-13-45T99:99:99Z",
                "9999-12-31T23:59:59.999999999+14:00",
                "x"
            ]),
            r.pick(&["-", "0", "99999999999999999999"]),
            r.pick(&[
                "a b=\"\\\"",
                "x@1 k=\"v\"]",
                "",
                "[[[[",
                "a b=\"unterminated"
            ]),
            value(r).chars().take(2000).collect::<String>()
        )
        .into_bytes(),
        3 => format!(
            "{} <13>1 - - - - - - short",
            r.pick(&["99999999999", "0", "-5", "18446744073709551616", "12"])
        )
        .into_bytes(),
        _ => format!(
            "<13>Dec  6 22:00:00 host app[{}]: {}",
            r.pick(&["1", "x", "", "99999999999999999999"]),
            value(r).chars().take(3000).collect::<String>()
        )
        .into_bytes(),
    }
}

/// A Fluent forward message: random bytes, or MessagePack whose lengths claim far more than
/// follows, deep nesting, or the forward modes with the wrong types in each place.
fn forward(r: &mut Rng) -> Vec<u8> {
    match r.below(7) {
        0 => bytes(r, 8000),
        // array32 of 4 billion entries.
        1 => vec![0xdd, 0xff, 0xff, 0xff, 0xff, 0xa1, b't'],
        // [tag, bin32 of 4 GiB]
        2 => vec![0x92, 0xa1, b't', 0xc6, 0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        // 100 000 nested arrays.
        3 => {
            let mut v = vec![0x91; 100_000];
            v.push(0xc0);
            v
        }
        // [tag, time, record] with the record a map claiming 2^32-1 pairs.
        4 => vec![
            0x93, 0xa1, b't', 0xce, 0x65, 0x00, 0x00, 0x00, 0xdf, 0xff, 0xff, 0xff, 0xff,
        ],
        // PackedForward: [tag, str8 "entries" of garbage, option]
        5 => {
            let mut v = vec![0x93, 0xa1, b't', 0xc4, 0xff];
            v.extend(bytes(r, 255));
            v.push(0x80);
            v
        }
        // EventTime ext with the wrong length, then a record.
        _ => vec![
            0x93, 0xa1, b't', 0xd7, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, 0x81, 0xa1, b'k', 0xa1, b'v',
        ],
    }
}

fn http_post(r: &mut Rng, path: &str) -> Request {
    let (body, mut headers) = body(r);
    if r.chance(0.5) {
        let ct = r.pick(&["application/x-protobuf", "application/json"]);
        headers.retain(|(k, _)| k != "Content-Type");
        headers.push(("Content-Type".into(), ct.to_string()));
    }
    let body = if r.chance(0.2) {
        json(r, 0).into_bytes()
    } else {
        body
    };
    Request {
        method: "POST",
        target: path.to_string(),
        headers,
        body,
    }
}

/// One TCP connection that writes `data` and closes; refused or reset writes are fine (the
/// receiver may hang up on garbage), the receiver must only go on serving.
fn tcp_write(addr: SocketAddr, data: &[u8]) {
    if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        s.set_write_timeout(Some(Duration::from_secs(5))).ok();
        let _ = s.write_all(data);
    }
}

fn loki_lines(agg: &Aggregator, q: &str) -> usize {
    let (start, end) = (
        (now_ms() - 600_000) * 1_000_000,
        (now_ms() + 60_000) * 1_000_000,
    );
    let (_, b) = http_get(
        agg.http,
        &format!(
            "/loki/api/v1/query_range?limit=1000&query={}&start={start}&end={end}",
            enc(q)
        ),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&b).unwrap_or_default();
    v["data"]["result"].as_array().map_or(0, |a| {
        a.iter()
            .map(|s| s["values"].as_array().map_or(0, Vec::len))
            .sum()
    })
}

#[test]
fn hostile_input_to_every_agent_receiver_leaves_it_collecting_and_receiving() {
    let seed = seed_from_env("TT_RECEIVER_FUZZ_SEED");
    let (dir, tls) = scratch_with_ca().unwrap();
    certs_issue(&tls, "rcv-1").unwrap();
    let agg = start_fresh_aggregator(&tls, dir.path()).unwrap();
    let (statsd_port, syslog_port, fwd_port, loki_port, otlp_http, otlp_grpc) = (
        free_udp_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[statsd]\nlisten = \"127.0.0.1:{statsd_port}\"\nflush_interval = \"1s\"\n\
             [otlp]\nenabled = true\nhttp_listen = \"127.0.0.1:{otlp_http}\"\n\
             grpc_listen = \"127.0.0.1:{otlp_grpc}\"\n\
             [[log]]\nname = \"sys\"\ntype = \"syslog\"\nlisten = \"127.0.0.1:{syslog_port}\"\n\
             [[log]]\nname = \"fluent\"\ntype = \"forward\"\nlisten = \"127.0.0.1:{fwd_port}\"\n\
             [[log]]\nname = \"pushed\"\ntype = \"loki\"\nlisten = \"127.0.0.1:{loki_port}\"\n"
        ),
    )
    .unwrap();
    let mut agent = start_agent_with_config(
        &tls,
        "rcv-1",
        agg.quic,
        &dir.path().join("agent"),
        "1s",
        Some(&cfg),
    )
    .unwrap();
    for started in [
        "statsd listener started",
        "syslog listener started",
        "forward listener started",
        "loki push listener started",
        "receiver started",
    ] {
        agent.wait_log(started, Duration::from_secs(20)).unwrap();
    }
    let at = |p: u16| -> SocketAddr { ([127, 0, 0, 1], p).into() };
    let alive = |agent: &mut Proc, what: &str| {
        assert!(
            agent.child.try_wait().unwrap().is_none(),
            "the agent exited after {what} (seed {seed}):\n{}",
            agent.log()
        );
    };

    let mut r = Rng(seed);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..400 {
        let _ = udp.send_to(&statsd(&mut r), at(statsd_port));
        let _ = udp.send_to(&syslog(&mut r), at(syslog_port));
    }
    alive(&mut agent, "StatsD and syslog datagrams");
    for _ in 0..40 {
        let mut framed = syslog(&mut r);
        if r.chance(0.3) {
            // A line that never ends.
            framed.extend(std::iter::repeat_n(b'a', 1 << 20));
        }
        framed.push(b'\n');
        tcp_write(at(syslog_port), &framed);
        tcp_write(at(fwd_port), &forward(&mut r));
    }
    alive(&mut agent, "syslog and forward streams");
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..150 {
        for (port, path) in [
            (loki_port, "/loki/api/v1/push"),
            (
                otlp_http,
                *r.pick(&["/v1/metrics", "/v1/traces", "/v1/logs"]),
            ),
        ] {
            let req = http_post(&mut r, path);
            match send(at(port), &req) {
                Ok((status, _)) => {
                    assert!(
                        status < 500 || status == 503,
                        "{path} answered {status} (seed {seed})\n{req}\n{}",
                        agent.log()
                    );
                    *statuses.entry(format!("{path} {status}")).or_default() += 1;
                }
                Err(e) => panic!("{path}: no answer (seed {seed}): {e}\n{req}"),
            }
        }
    }
    for _ in 0..30 {
        let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        if r.chance(0.3) {
            h2.clear();
        }
        h2.extend(bytes(&mut r, 4000));
        tcp_write(at(otlp_grpc), &h2);
    }
    alive(&mut agent, "HTTP and gRPC requests");
    eprintln!("answers: {statuses:?}");

    // Every receiver still takes a valid message through to the aggregator.
    let mark = format!("after-fuzz-{seed}");
    udp.send_to(
        format!("<13>Dec  6 22:00:00 host app: {mark} syslog").as_bytes(),
        at(syslog_port),
    )
    .unwrap();
    let mut msg = vec![0x93, 0xa1, b't', 0xce];
    msg.extend_from_slice(&((now_ms() / 1000) as u32).to_be_bytes());
    msg.extend_from_slice(b"\x81\xa7message");
    let text = format!("{mark} forward");
    msg.extend_from_slice(&[0xd9, text.len() as u8]);
    msg.extend_from_slice(text.as_bytes());
    tcp_write(at(fwd_port), &msg);
    let push = format!(
        "{{\"streams\":[{{\"stream\":{{\"job\":\"fuzzcheck\"}},\"values\":[[\"{}\",\"{mark} loki\"]]}}]}}",
        now_ms() as i128 * 1_000_000
    );
    let (st, b) = telltale_tests::http_post(
        at(loki_port),
        "/loki/api/v1/push",
        "application/json",
        push.as_bytes(),
    )
    .unwrap();
    assert_eq!(st, 204, "{b}");
    let arrived = wait_for(Duration::from_secs(30), || {
        (loki_lines(&agg, &format!("{{source=~\".+\"}} |= \"{mark}\"")) >= 3).then_some(())
    });
    assert!(
        arrived.is_some(),
        "not every receiver passed its valid line on after the fuzzing (seed {seed}): {} of 3\n{}",
        loki_lines(&agg, &format!("{{source=~\".+\"}} |= \"{mark}\"")),
        agent.log()
    );
    for _ in 0..3 {
        udp.send_to(b"fuzz_after:1|c", at(statsd_port)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let counted = wait_for(Duration::from_secs(30), || {
        query(agg.http, "{__name__=~\"fuzz_after.*\", instance=\"rcv-1\"}")
            .ok()
            .filter(|v| !v.is_empty())
    });
    assert!(counted.is_some(), "StatsD stopped counting (seed {seed})");
    // Host metrics kept coming.
    let fresh = query(
        agg.http,
        "time() - timestamp(node_time_seconds{instance=\"rcv-1\"}) < 10",
    )
    .unwrap();
    assert_eq!(fresh.len(), 1, "host collection stalled (seed {seed})");
    let rss = rss_and_fds(&agent).0;
    eprintln!("agent RSS {} MiB", rss >> 20);
    assert!(
        rss < 512 << 20,
        "the agent grew to {} MiB (seed {seed})",
        rss >> 20
    );
}
