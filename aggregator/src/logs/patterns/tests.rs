//! The pattern index on made-up traffic with hand-computed answers.

use super::*;
use crate::labels::Matcher;

const MIN: i64 = 60_000;

fn stream(source: &str, instance: &str) -> Labels {
    Labels::from_pairs([("instance", instance), ("source", source)])
}

/// `n` access lines at `t_ms` (one per ms), alternating two paths.
fn access(n: usize, t_ms: i64) -> Vec<(i64, String)> {
    (0..n)
        .map(|i| {
            (
                (t_ms + i as i64) * 1_000_000,
                format!(
                    "GET /api/{} {} {}ms",
                    ["users", "orders"][i % 2],
                    200 + i % 3,
                    i
                ),
            )
        })
        .collect()
}

fn errors(n: usize, t_ms: i64) -> Vec<(i64, String)> {
    (0..n)
        .map(|i| {
            (
                (t_ms + i as i64) * 1_000_000,
                format!(
                    "connection to db-{} failed after {}ms: timeout",
                    i % 4,
                    100 + i
                ),
            )
        })
        .collect()
}

#[test]
fn the_pattern_api_counts_per_template_stream_and_step() {
    let p = Patterns::default();
    let t0 = 1_700_000_000_000 - 1_700_000_000_000 % MIN;
    p.feed(&stream("nginx", "web-1"), &access(30, t0), t0);
    p.feed(&stream("nginx", "web-2"), &access(10, t0 + 20_000), t0);
    p.feed(&stream("app", "web-1"), &errors(5, t0), t0);
    let all = p.query(&[], t0, t0 + MIN, 60_000, 100);
    assert_eq!(
        all.iter()
            .map(|s| (s.pattern.as_str(), s.samples.clone()))
            .collect::<Vec<_>>(),
        vec![
            ("GET <_> <_> <_>", vec![(t0, 40)]),
            ("connection to <_> failed after <_> timeout", vec![(t0, 5)]),
        ]
    );
    // A selector narrows to its streams; the step splits the counts.
    let web2 = p.query(
        &[Matcher::equal("instance", "web-2")],
        t0,
        t0 + MIN,
        10_000,
        100,
    );
    assert_eq!(web2.len(), 1);
    assert_eq!(web2[0].samples, vec![(t0 + 20_000, 10)]);
    let split = p.query(
        &[Matcher::equal("source", "nginx")],
        t0,
        t0 + MIN,
        10_000,
        100,
    );
    assert_eq!(split[0].samples, vec![(t0, 30), (t0 + 20_000, 10)]);
    // Out of range: nothing; limit: the biggest first.
    assert!(
        p.query(&[], t0 + 2 * MIN, t0 + 3 * MIN, 60_000, 100)
            .is_empty()
    );
    assert_eq!(p.query(&[], t0, t0 + MIN, 60_000, 1)[0].samples[0].1, 40);
    assert_eq!(p.lines.load(Ordering::Relaxed), 45);
}

#[test]
fn pattern_series_are_cumulative_counters_per_source() {
    let p = Patterns::default();
    let t0 = 1_700_000_000_000;
    p.feed(&stream("nginx", "web-1"), &access(6, t0), t0);
    p.feed(&stream("nginx", "web-2"), &access(4, t0), t0);
    let f = p.flush(t0 + 15_000);
    let mut got: Vec<(String, String, f64)> = f
        .series
        .iter()
        .map(|s| {
            assert_eq!(s.labels.get("__name__"), Some(names::LOG_PATTERN_LINES));
            (
                s.labels.get("source").unwrap_or("").to_string(),
                s.labels.get("pattern").unwrap_or("").to_string(),
                s.samples[0].1,
            )
        })
        .collect();
    got.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(got, vec![("nginx".into(), "GET <_> <_> <_>".into(), 10.0)]);
    p.feed(
        &stream("nginx", "web-1"),
        &access(5, t0 + 20_000),
        t0 + 20_000,
    );
    let f = p.flush(t0 + 30_000);
    assert_eq!(f.series[0].samples[0], Sample(t0 + 30_000, 15.0));
    // Within the warm-up nothing is "new".
    assert!(f.events.is_empty(), "{:?}", f.events);
}

#[test]
fn new_and_surging_patterns_become_events_after_the_warm_up() {
    let p = Patterns::default();
    let t0 = 1_700_000_000_000 - 1_700_000_000_000 % MIN;
    let s = stream("app", "db-host");
    // 40 minutes of a steady 2 access lines a minute.
    for m in 0..40 {
        let t = t0 + m * MIN;
        p.feed(&s, &access(2, t), t);
        p.flush(t + 30_000);
    }
    let t = t0 + 40 * MIN;
    // A pattern never seen, after the warm-up: announced once it has 3 lines.
    p.feed(&s, &errors(2, t), t);
    assert!(p.flush(t + 1000).events.is_empty(), "2 lines: not yet");
    p.feed(&s, &errors(1, t + 2000), t + 2000);
    let f = p.flush(t + 3000);
    assert_eq!(f.events.len(), 1, "{:?}", f.events);
    assert_eq!(f.events[0].kind, "log_pattern_new");
    assert!(
        f.events[0]
            .labels
            .contains(&("source".into(), "app".into()))
    );
    assert!(
        f.events[0].message.contains("connection to <_>"),
        "{}",
        f.events[0].message
    );
    // A steady pattern jumping to 60 lines in a minute (30× its mean) surges...
    p.feed(&s, &access(60, t + MIN), t + MIN);
    let f = p.flush(t + 2 * MIN + 1000);
    let surges: Vec<_> = f
        .events
        .iter()
        .filter(|e| e.kind == "log_pattern_surge")
        .collect();
    assert_eq!(surges.len(), 1, "{:?}", f.events);
    assert!(
        surges[0].message.contains("60 lines in a minute"),
        "{}",
        surges[0].message
    );
    // ...once per cool-down, and a merely busy minute (under the factor) does not.
    p.feed(&s, &access(60, t + 2 * MIN), t + 2 * MIN);
    assert!(p.flush(t + 3 * MIN + 1000).events.is_empty());
    assert_eq!(p.events.load(Ordering::Relaxed), 2);
}

#[test]
fn a_flood_of_unique_lines_stays_within_the_caps() {
    let p = Patterns::default();
    let t0 = 1_700_000_000_000;
    let mut x: u64 = 7;
    let mut next = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x >> 33
    };
    for round in 0..20 {
        let lines: Vec<(i64, String)> = (0..1000)
            .map(|i| {
                let n = 1 + next() % 30;
                // Words of letters only (digits would be masked as variable).
                let words: Vec<String> = (0..n)
                    .map(|_| {
                        let k = next() % 5000;
                        [k % 26, k / 26 % 26, k / 676]
                            .iter()
                            .map(|&c| char::from(b'a' + c as u8))
                            .collect()
                    })
                    .collect();
                ((t0 + i) * 1_000_000, words.join(" "))
            })
            .collect();
        p.feed(&stream(&format!("s{}", round % 3), "h"), &lines, t0);
    }
    let f = p.flush(t0 + 1000);
    {
        let st = p.lock();
        for s in st.sources.values() {
            assert_eq!(s.drain.len(), MAX_TEMPLATES_PER_SOURCE, "full, never over");
            assert!(s.slots <= MAX_SERIES_PER_SOURCE);
        }
    }
    for src in ["s0", "s1", "s2"] {
        let series: Vec<_> = f
            .series
            .iter()
            .filter(|s| s.labels.get("source") == Some(src))
            .collect();
        assert!(
            series.len() <= MAX_SERIES_PER_SOURCE + 1,
            "{}",
            series.len()
        );
        assert!(
            series
                .iter()
                .any(|s| s.labels.get("pattern") == Some(OTHER)),
            "templates past the cap are counted in <other>"
        );
    }
    assert_eq!(p.lines.load(Ordering::Relaxed), 20_000);
}
