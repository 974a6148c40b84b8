//! The differential PromQL fuzzer: data shaped like real scrapes (counter resets when an
//! instance restarts, stale markers when a target disappears, a target that appears late,
//! NaN samples, ±25 ms scrape jitter, gaps of up to 7 minutes) loaded into a real Prometheus
//! (through its remote-write receiver, which keeps stale markers) and into Telltale
//! (remote_write), and random queries from a grammar run against both and compared with
//! [`crate::compliance::compare`].
//!
//! Everything is derived from one seed, printed by the callers, so a difference can be
//! replayed exactly.

use std::net::SocketAddr;
use std::process::Child;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use telltale_common::model::{Labels, STALE_NAN_BITS, Sample, SeriesSamples};

use crate::compliance::{Rng, spawn_prometheus};
use crate::{Aggregator, certs_init, enc, http_get, http_post, start_fresh_aggregator, wait_for};

/// Counters, as the generator makes them (the last one starts near 3e13, as a network
/// interface's byte counter does, so rates subtract large numbers).
pub const COUNTERS: &[&str] = &[
    "http_requests_total",
    "process_cpu_seconds_total",
    "node_network_receive_bytes_total",
];
/// Gauges (the last one, `sensor_reading`, goes negative and now and then holds ±Inf, ±1.8e308,
/// a subnormal, -0 or 2^53 + 2: the values functions and aggregations treat specially).
pub const GAUGES: &[&str] = &["node_load1", "queue_depth", "sensor_reading"];
/// The special values `sensor_reading` takes now and then.
const EXTREMES: &[f64] = &[
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::MAX,
    -f64::MAX,
    5e-324,
    -0.0,
    9_007_199_254_740_994.0,
    -1e-300,
    1e300,
];
/// Histogram buckets (`le`), a counter family.
pub const HISTOGRAM: &str = "request_duration_seconds_bucket";

/// The scrape interval of the generated data (ms).
pub const INTERVAL: i64 = 15_000;

fn pick<'a, T>(rng: &mut Rng, xs: &'a [T]) -> &'a T {
    &xs[((rng.uniform() * xs.len() as f64) as usize).min(xs.len() - 1)]
}

/// Series over `[start, end]` (ms) from `seed`: 4 jobs × 3 instances of counters, gauges
/// and a histogram, with restarts (resets), one instance that disappears (stale markers)
/// and one that appears late, NaN samples, jitter and gaps.
pub fn data(seed: u64, start: i64, end: i64) -> Vec<SeriesSamples> {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::new();
    let les = ["0.05", "0.1", "0.5", "1", "+Inf"];
    for job in ["api", "db", "web", "cache"] {
        for inst in 0..3 {
            let instance = format!("10.0.0.{inst}:9100");
            // This instance's life: one disappears half-way, one appears late.
            let (born, dies) = match (job, inst) {
                ("web", 2) => (start + (end - start) / 3, end),
                ("db", 1) => (start, start + (end - start) / 2),
                _ => (start, end),
            };
            let gap_at = start + ((end - start) as f64 * rng.uniform()) as i64;
            let gap_len = (rng.uniform() * 7.0 * 60_000.0) as i64;
            let restarts: Vec<i64> = (0..(rng.uniform() * 3.0) as usize)
                .map(|_| start + ((end - start) as f64 * rng.uniform()) as i64)
                .collect();
            let mut times = Vec::new();
            let mut t = born;
            while t <= dies {
                if !(t >= gap_at && t < gap_at + gap_len) {
                    times.push(t + (rng.uniform() * 50.0) as i64 - 25);
                }
                t += INTERVAL;
            }
            let base = |name: &str, extra: &[(&str, &str)]| {
                let mut pairs = vec![
                    ("__name__", name.to_string()),
                    ("job", job.to_string()),
                    ("instance", instance.clone()),
                ];
                pairs.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
                Labels::from_pairs(pairs)
            };
            let mut series = |labels: Labels, rng: &mut Rng, counter: bool, rate: f64| {
                let name = labels.metric_name().unwrap_or("").to_string();
                let (base, extreme) = match name.as_str() {
                    "node_network_receive_bytes_total" => (3e13 * (1.0 + rng.uniform()), false),
                    "sensor_reading" => (0.0, true),
                    _ => (0.0, false),
                };
                let mut v = if counter { base } else { rate };
                let mut samples = Vec::with_capacity(times.len() + 1);
                for &t in &times {
                    if counter {
                        if restarts.iter().any(|&r| r > t - INTERVAL && r <= t) {
                            v = 0.0;
                        }
                        v += (rate * rng.uniform() * 1000.0).round() / 1000.0;
                        samples.push(Sample(t, v));
                    } else if rng.uniform() < 0.02 {
                        samples.push(Sample(t, f64::NAN));
                    } else if extreme && rng.uniform() < 0.05 {
                        samples.push(Sample(t, *pick(rng, EXTREMES)));
                    } else if extreme {
                        v += (rng.uniform() - 0.5) * rate;
                        samples.push(Sample(t, (v * 100.0).round() / 100.0));
                    } else {
                        v = (v + (rng.uniform() - 0.5) * rate).max(0.0);
                        samples.push(Sample(t, (v * 100.0).round() / 100.0));
                    }
                }
                // A target that disappears leaves a stale marker behind.
                if dies < end
                    && let Some(last) = samples.last().map(|s| s.0)
                {
                    samples.push(Sample(last + INTERVAL, f64::from_bits(STALE_NAN_BITS)));
                }
                out.push(SeriesSamples { labels, samples });
            };
            for (i, name) in COUNTERS.iter().enumerate() {
                for method in ["GET", "POST"] {
                    let rate = if i == 2 { 1e6 } else { 10.0 * (i + 1) as f64 };
                    series(base(name, &[("method", method)]), &mut rng, true, rate);
                }
            }
            for (i, name) in GAUGES.iter().enumerate() {
                series(base(name, &[]), &mut rng, false, 5.0 * (i + 1) as f64);
            }
            for (b, le) in les.iter().enumerate() {
                series(
                    base(HISTOGRAM, &[("le", le)]),
                    &mut rng,
                    true,
                    2.0 * (b + 1) as f64,
                );
            }
        }
    }
    // Buckets must not decrease across `le`: make each bucket the running sum.
    let mut by_instance: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for (i, s) in out.iter().enumerate() {
        if s.labels.metric_name() == Some(HISTOGRAM) {
            let key = format!(
                "{}/{}",
                s.labels.get("job").unwrap_or(""),
                s.labels.get("instance").unwrap_or("")
            );
            by_instance.entry(key).or_default().push(i);
        }
    }
    for idx in by_instance.values() {
        for w in 1..idx.len() {
            let (a, b) = (idx[w - 1], idx[w]);
            let prev: Vec<Sample> = out[a].samples.clone();
            for (s, p) in out[b].samples.iter_mut().zip(prev) {
                if !telltale_common::model::is_stale_marker(s.1) {
                    s.1 += p.1;
                }
            }
        }
    }
    out
}

/// The compliance suite's demo data made scrape-shaped from `seed`: ±25 ms jitter, a gap of
/// up to 7 minutes in every target, NaN in 2 % of the gauges' samples, one instance that
/// disappears half-way (leaving stale markers) and one that appears a third of the way in.
/// (The demo counters already restart once per instance.)
pub fn rough_demo_data(seed: u64, start: i64, end: i64) -> Vec<SeriesSamples> {
    let mut rng = Rng(seed | 1);
    let mut out = crate::compliance::demo_data(start, end);
    let span = end - start;
    for s in &mut out {
        let instance = s.labels.get("instance").unwrap_or("").to_string();
        let name = s.labels.metric_name().unwrap_or("").to_string();
        let counter = ["_total", "_bucket", "_count", "_sum"]
            .iter()
            .any(|x| name.ends_with(x));
        let (born, dies) = if instance.ends_with('1') {
            (start, start + span / 2)
        } else if instance.ends_with('2') {
            (start + span / 3, end)
        } else {
            (start, end)
        };
        // A target's samples share a scrape: its gap and each scrape's jitter are drawn from
        // the seed, the instance and the scrape time, the same for all of its series.
        let key = seed
            ^ instance
                .bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31) ^ u64::from(b));
        let mut target = Rng(key | 1);
        let gap_at = start + (span as f64 * target.uniform()) as i64;
        let gap_len = (target.uniform() * 7.0 * 60_000.0) as i64;
        let mut kept = Vec::with_capacity(s.samples.len() + 1);
        for x in &s.samples {
            if x.0 < born || x.0 > dies || (x.0 >= gap_at && x.0 < gap_at + gap_len) {
                continue;
            }
            let mut scrape = Rng((key ^ (x.0 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
            scrape.uniform();
            let t = x.0 + (scrape.uniform() * 50.0) as i64 - 25;
            let v = if !counter && rng.uniform() < 0.02 {
                f64::NAN
            } else {
                x.1
            };
            kept.push(Sample(t, v));
        }
        if dies < end
            && let Some(last) = kept.last().map(|x| x.0)
        {
            kept.push(Sample(last + 5_000, f64::from_bits(STALE_NAN_BITS)));
        }
        s.samples = kept;
    }
    out.retain(|s| !s.samples.is_empty());
    out
}

/// The depth of the queries [`run`] asks for.
pub const TOP_DEPTH: u32 = 3;

/// A random query from the grammar: every function Prometheus 2.42 has (native-histogram
/// ones on float data), every aggregation with its parameters and grouping, every binary
/// operator with `bool`, `on`/`ignoring` and `group_left`/`group_right`, offsets, `@`,
/// subqueries, and now and then an ill-typed or invalid query (both sides must then fail).
/// One random query; `anchor` (Unix seconds, the data's end) places the `@` times it names.
pub fn query(rng: &mut Rng, depth: u32, anchor: i64) -> String {
    let metric = |rng: &mut Rng| -> String {
        let all: Vec<&str> = COUNTERS
            .iter()
            .chain(GAUGES)
            .copied()
            .chain([HISTOGRAM])
            .collect();
        let name = pick(rng, &all).to_string();
        match (rng.uniform() * 7.0) as u32 {
            0 => format!("{name}{{job=\"{}\"}}", pick(rng, &["api", "db", "web"])),
            1 => format!("{name}{{instance=~\"10.0.0.[01]:9100\"}}"),
            2 => format!("{name}{{job!=\"cache\"}}"),
            // Several names at once, by regular expression.
            3 => format!("{{__name__=~\"{}.*\",job=~\"a.*|db\"}}", &name[..4]),
            _ => name,
        }
    };
    // On a subquery: `start()`/`end()` and positive offsets only. Prometheus 2.42 resolves an
    // `@` nested in a subquery against the wrong time when the subquery's first inner step is
    // the enclosing range's first step (a negative offset or an `@` time one range after the
    // query's time): a known difference, kept out (README, "Differential fuzzer").
    let sub_modifier = |rng: &mut Rng| -> String {
        match (rng.uniform() * 8.0) as u32 {
            0 => format!(" offset {}m", 1 + (rng.uniform() * 10.0) as u32),
            1 => " @ end()".into(),
            2 => " @ start()".into(),
            3 => format!(
                " @ end() offset {}s",
                15 * (1 + (rng.uniform() * 8.0) as u32)
            ),
            _ => String::new(),
        }
    };
    // On a selector, also `@` times — inside the data, after it, long before it, at a
    // fraction of a second — and negative offsets.
    let modifier = |rng: &mut Rng| -> String {
        match (rng.uniform() * 12.0) as u32 {
            8 => format!(" @ {}", anchor - (rng.uniform() * 2900.0) as i64),
            9 => format!(
                " @ {}.25{}",
                pick(rng, &[anchor - 600, anchor + 600, anchor - 86_400]),
                pick(rng, &["", " offset 1m", " offset -2m"])
            ),
            10 => format!(" offset -{}m", 1 + (rng.uniform() * 5.0) as u32),
            _ => sub_modifier(rng),
        }
    };
    let range = |rng: &mut Rng| pick(rng, &["15s", "30s", "1m", "2m", "5m", "10m"]).to_string();
    let counter = |rng: &mut Rng| -> String {
        let name = pick(rng, COUNTERS).to_string();
        if rng.uniform() < 0.3 {
            format!("{name}{{job=\"{}\"}}", pick(rng, &["api", "db", "web"]))
        } else {
            name
        }
    };
    let number = |rng: &mut Rng| -> String {
        match (rng.uniform() * 7.0) as u32 {
            0 => "0".into(),
            // The values Go's and Rust's functions treat differently (`math.Max(x, NaN)`).
            6 => pick(rng, &["NaN", "Inf", "-Inf", "-0"]).to_string(),
            1 => format!("{:.2}", rng.uniform() * 2.0 - 1.0),
            _ => format!("{}", (rng.uniform() * 100.0).round()),
        }
    };
    if depth == 0 || rng.uniform() < 0.25 {
        return match (rng.uniform() * 8.0) as u32 {
            0 | 1 => number(rng),
            2 => pick(
                rng,
                &[
                    "time()",
                    "pi()",
                    "vector(1)",
                    "scalar(node_load1{job=\"api\"})",
                ],
            )
            .to_string(),
            _ => format!("{}{}", metric(rng), modifier(rng)),
        };
    }
    let sub = |rng: &mut Rng| query(rng, depth - 1, anchor);
    match (rng.uniform() * 16.0) as u32 {
        0 | 1 => {
            let f = pick(
                rng,
                &["rate", "increase", "irate", "resets", "delta", "idelta"],
            );
            format!("{f}({}[{}]{})", counter(rng), range(rng), modifier(rng))
        }
        2 => {
            let f = pick(
                rng,
                &[
                    "delta",
                    "idelta",
                    "deriv",
                    "changes",
                    "avg_over_time",
                    "min_over_time",
                    "max_over_time",
                    "sum_over_time",
                    "count_over_time",
                    "last_over_time",
                    "stddev_over_time",
                    "stdvar_over_time",
                    "present_over_time",
                    "absent_over_time",
                    "irate",
                    "resets",
                ],
            );
            format!("{f}({}[{}]{})", metric(rng), range(rng), modifier(rng))
        }
        3 => match (rng.uniform() * 6.0) as u32 {
            0 => format!(
                "quantile_over_time({}, {}[{}]{})",
                pick(
                    rng,
                    &[
                        "0.1",
                        "0.5",
                        "0.9",
                        "0",
                        "1",
                        "-1",
                        "2",
                        "scalar(vector(0.3))"
                    ]
                ),
                metric(rng),
                range(rng),
                modifier(rng)
            ),
            // With an `@`, a range argument of a call that is not step-invariant slides in
            // Prometheus 2.42's range queries (`Evaluator::call_window`).
            1 => format!(
                "predict_linear({}[{}]{}, {})",
                metric(rng),
                range(rng),
                modifier(rng),
                number(rng)
            ),
            2 => format!(
                "holt_winters({}[{}]{}, {}, {})",
                metric(rng),
                range(rng),
                modifier(rng),
                pick(rng, &["0.5", "0.1", "0.9", "1"]),
                pick(rng, &["0.3", "0.8", "0"])
            ),
            3 => format!(
                "max_over_time(rate({}[1m])[{}:{}])",
                counter(rng),
                range(rng),
                pick(rng, &["15s", "30s", "1m"])
            ),
            // A subquery over any expression (ill-typed when it is not an instant vector).
            _ => format!(
                "{}(({})[{}:{}]{})",
                pick(
                    rng,
                    &[
                        "avg_over_time",
                        "sum_over_time",
                        "max_over_time",
                        "count_over_time",
                        "deriv",
                        "changes"
                    ]
                ),
                sub(rng),
                range(rng),
                pick(rng, &["15s", "30s", "1m", ""]),
                sub_modifier(rng)
            ),
        },
        4 | 5 => {
            let op = pick(
                rng,
                &[
                    "sum", "avg", "min", "max", "count", "stddev", "stdvar", "group",
                ],
            );
            let grouping = match (rng.uniform() * 5.0) as u32 {
                0 => " by (job)".to_string(),
                1 => " without (instance)".to_string(),
                2 => " by ()".to_string(),
                3 => " by (job, method)".to_string(),
                _ => String::new(),
            };
            format!("{op}{grouping}({})", sub(rng))
        }
        6 => {
            let grouping = pick(rng, &["", "", " by (job)", " without (method)"]).to_string();
            match (rng.uniform() * 5.0) as u32 {
                0 => format!(
                    "topk{grouping}({}, {})",
                    1 + (rng.uniform() * 3.0) as u32,
                    sub(rng)
                ),
                1 => format!(
                    "bottomk{grouping}({}, {})",
                    1 + (rng.uniform() * 3.0) as u32,
                    sub(rng)
                ),
                2 => format!(
                    "quantile{grouping}({}, {})",
                    pick(rng, &["0.1", "0.5", "0.9", "0", "1", "-1", "2"]),
                    sub(rng)
                ),
                3 => format!("topk(scalar({}), {})", sub(rng), sub(rng)),
                _ => format!(
                    "count_values{grouping}(\"{}\", {})",
                    pick(rng, &["value", "job", "bad-label"]),
                    sub(rng)
                ),
            }
        }
        7..=9 => {
            let op = pick(
                rng,
                &[
                    "+", "-", "*", "/", "%", "^", "atan2", "==", "!=", ">", "<", ">=", "<=",
                    "== bool", "!= bool", "> bool", "<= bool", "and", "or", "unless",
                ],
            );
            let matching = match (rng.uniform() * 10.0) as u32 {
                0 => " on(job, instance)",
                1 => " ignoring(method)",
                2 => " on()",
                3 => " on(job, instance) group_left",
                4 => " ignoring(method) group_left(method)",
                5 => " on(job) group_right",
                _ => "",
            };
            format!("({}) {op}{matching} ({})", sub(rng), sub(rng))
        }
        10 => {
            // `sort` and `sort_desc` anywhere: inside an expression the order they give
            // decides which of equal values (or NaNs) a `topk` above keeps.
            if rng.uniform() < 0.15 {
                return format!("{}({})", pick(rng, &["sort", "sort_desc"]), sub(rng));
            }
            let f = pick(
                rng,
                &[
                    "abs",
                    "ceil",
                    "floor",
                    "sqrt",
                    "exp",
                    "ln",
                    "log2",
                    "log10",
                    "sgn",
                    "round",
                    "timestamp",
                    "sin",
                    "cos",
                    "tan",
                    "asin",
                    "acos",
                    "atan",
                    "sinh",
                    "cosh",
                    "tanh",
                    "asinh",
                    "acosh",
                    "atanh",
                    "deg",
                    "rad",
                    "absent",
                    "scalar",
                    "vector",
                ],
            );
            // sin, cos and tan of a large argument are chaotic (one ulp of 1e130 spans many
            // periods), so they find any last-bit difference in their argument: fuzzed
            // unbounded since every function is Go's to the last bit (`gomath.rs`).
            format!("{f}({})", sub(rng))
        }
        11 => {
            let f = pick(
                rng,
                &[
                    "year",
                    "month",
                    "day_of_month",
                    "day_of_week",
                    "day_of_year",
                    "days_in_month",
                    "hour",
                    "minute",
                ],
            );
            if rng.uniform() < 0.3 {
                format!("{f}()")
            } else {
                format!("{f}(timestamp({}))", metric(rng))
            }
        }
        12 => match (rng.uniform() * 6.0) as u32 {
            0 => format!(
                "label_replace({}, \"dst\", \"x-$1\", \"instance\", \"10.0.0.(.*):9100\")",
                sub(rng)
            ),
            1 => format!(
                "label_replace({}, \"job\", \"\", \"job\", \".*\")",
                sub(rng)
            ),
            2 => format!(
                "label_join({}, \"dst\", \"-\", \"job\", \"instance\")",
                sub(rng)
            ),
            3 => format!("round({}, {})", sub(rng), pick(rng, &["0.5", "10", "3"])),
            4 => format!("clamp({}, {}, {})", sub(rng), number(rng), number(rng)),
            _ => format!("clamp_min({}, {})", sub(rng), number(rng)),
        },
        13 => match (rng.uniform() * 7.0) as u32 {
            0 => format!(
                "histogram_quantile({}, sum by (le) (rate({HISTOGRAM}[{}])))",
                pick(rng, &["0.9", "0.5", "0", "1", "1.5", "NaN"]),
                range(rng)
            ),
            1 if rng.uniform() < 0.5 => format!(
                "histogram_quantile(0.9, rate({HISTOGRAM}{{job=\"api\"}}[{}]))",
                range(rng)
            ),
            // Buckets with and without the metric name: Prometheus groups by the name too,
            // and two groups apart only by it are one label set twice (an error).
            1 => format!(
                "histogram_quantile({}, {HISTOGRAM}{{le!=\"0.5\"}} or {HISTOGRAM}{{le=\"0.5\"}} * {})",
                pick(rng, &["0.5", "0.9"]),
                number(rng)
            ),
            2 => format!("-({})", sub(rng)),
            // Unary `+`, which promql-parser drops (`promql/prepare.rs` puts back what it
            // means): on anything, on a range vector (a type error), and where the argument's
            // shape shows (`timestamp(+x)` is the evaluation time, `absent(+x{job="a"})` has
            // no labels).
            3 => format!("+{}", sub(rng)),
            4 => match (rng.uniform() * 3.0) as u32 {
                0 => format!("+{}[{}]", metric(rng), range(rng)),
                1 => format!("timestamp(+{}{})", metric(rng), modifier(rng)),
                _ => format!("absent(+{})", metric(rng)),
            },
            // Parentheses around arguments, which Prometheus removes before a call
            // (`rate((x[5m]))`, `absent((x{job="a"}))`).
            _ => match (rng.uniform() * 5.0) as u32 {
                0 => format!("rate(({}[{}]))", counter(rng), range(rng)),
                1 => format!(
                    "{}(({}[{}]{}))",
                    pick(rng, &["absent_over_time", "max_over_time", "changes"]),
                    metric(rng),
                    range(rng),
                    modifier(rng)
                ),
                2 => format!("absent((({})))", metric(rng)),
                3 => format!("timestamp(({}{}))", metric(rng), modifier(rng)),
                _ => format!("round(({}), ({}))", sub(rng), number(rng)),
            },
        },
        // The grammar's corners: literal spellings, matchers that match the empty value or
        // exclude, negative offsets and compound durations, grouping written after the
        // aggregation, `absent` of what does not exist, string results, `clamp_max`.
        14 => match (rng.uniform() * 16.0) as u32 {
            0 => pick(
                rng,
                &[
                    "Inf",
                    "-Inf",
                    "NaN",
                    "0x1F",
                    "1e3",
                    ".5",
                    "5.",
                    "-0",
                    "+3",
                    // Past a double (refused), the largest one, below the smallest (0).
                    "1e400",
                    "-1.8e308",
                    "1.7976931348623158e308",
                    "1e-400",
                ],
            )
            .to_string(),
            1 => format!("\"{}\"", pick(rng, &["hello", "", "a\\\"b"])),
            2 => format!("{}{{job!~\"a.*\"}}{}", pick(rng, GAUGES), modifier(rng)),
            3 => format!(
                "{}{{method=\"\"}}",
                pick(rng, &[COUNTERS[0], GAUGES[0], HISTOGRAM])
            ),
            4 => "{__name__=~\"(node|queue)_.*\",__name__!=\"node_load1\",job=~\".+\"}".to_string(),
            5 => format!(
                "{}({}[{}] offset -{}m)",
                pick(rng, &["rate", "avg_over_time", "count_over_time"]),
                counter(rng),
                pick(rng, &["1m30s", "90s", "2m15s"]),
                1 + (rng.uniform() * 3.0) as u32
            ),
            6 => format!(
                "absent({}{{job=\"api\",instance=~\"x.*\",method!=\"get\"}})",
                pick(rng, &["nonexistent_metric", GAUGES[0]])
            ),
            7 => format!(
                "absent_over_time({}{{job=\"db\"}}[{}])",
                pick(rng, &["nonexistent_metric", GAUGES[1]]),
                range(rng)
            ),
            8 => format!(
                "{}({}) {}",
                pick(rng, &["sum", "max", "count", "avg"]),
                sub(rng),
                pick(rng, &["by (job)", "without (instance, method)", "by ()"])
            ),
            9 => format!("clamp_max({}, {})", sub(rng), number(rng)),
            10 => format!(
                "({}) {} bool ({})",
                sub(rng),
                pick(rng, &[">", "<=", "=="]),
                number(rng)
            ),
            11 => format!("- - ({})", sub(rng)),
            12 => format!(
                "label_replace({}, \"dst\", \"${{1}}-$0\", \"job\", \"(a)(.*)\")",
                sub(rng)
            ),
            13 => format!(
                "timestamp({}{})",
                metric(rng),
                pick(
                    rng,
                    &[
                        " offset 1m",
                        " @ start()",
                        " offset -30s",
                        // `timestamp` reads these at `@` itself (Prometheus 2.42's way).
                        " @ end() offset -1m",
                        " @ start() offset -30s",
                        " @ end() offset 4m",
                        " @ start() offset 2m",
                    ]
                )
            ),
            14 => format!(
                "{}(({})[{}:])",
                pick(
                    rng,
                    &["last_over_time", "absent_over_time", "stddev_over_time"]
                ),
                sub(rng),
                range(rng)
            ),
            _ => format!(
                "quantile_over_time({}, {}[{}])",
                pick(rng, &["NaN", "0.25", "Inf"]),
                metric(rng),
                range(rng)
            ),
        },
        // Ill-typed or invalid on purpose: both must refuse.
        _ => match (rng.uniform() * 7.0) as u32 {
            0 => format!("sum({}[5m])", metric(rng)),
            1 => format!("rate({})", metric(rng)),
            2 => format!("({}[5m]) + 1", metric(rng)),
            3 => format!(
                "label_replace({}, \"dst\", \"$1\", \"job\", \"(\")",
                metric(rng)
            ),
            4 => format!("abs({}, 1)", metric(rng)),
            5 => format!("topk(\"a\", {})", metric(rng)),
            _ => format!("{} +", metric(rng)),
        },
    }
}

/// How one query's answers compare.
#[derive(Debug)]
pub enum Verdict {
    /// Same series, timestamps and values.
    Agree,
    /// A difference, named.
    Differ(String),
    /// The reference gave different answers to the same query: nothing to compare against.
    Undecided(String),
}

/// A reference Prometheus (remote-write receiver on) and Telltale, holding the same data.
pub struct Pair {
    /// The reference (killed on drop).
    pub prometheus: Child,
    /// Its HTTP address.
    pub prometheus_addr: SocketAddr,
    /// Telltale.
    pub telltale: Aggregator,
    /// The data's span (ms).
    pub start: i64,
    /// See `start`.
    pub end: i64,
    _dir: tempfile::TempDir,
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = self.prometheus.kill();
        let _ = self.prometheus.wait();
    }
}

impl Pair {
    /// Starts both and writes 50 minutes of data from `seed`, ending now, to both — in time
    /// order, minute by minute, as Prometheus' head needs.
    pub fn start(seed: u64) -> anyhow::Result<Pair> {
        let now = telltale_common::model::now_ms() / 1000 * 1000;
        let (start, end) = (now - 50 * 60_000, now - 30_000);
        Pair::load(&data(seed, start, end), start, end)
    }

    /// Starts both and writes `series` (samples within `[start - 1m, end + 1m]`) to both.
    pub fn load(series: &[SeriesSamples], start: i64, end: i64) -> anyhow::Result<Pair> {
        let dir = tempfile::tempdir()?;
        // Telltale first: if Prometheus then fails to start, nothing is left running.
        let tls = dir.path().join("tls");
        certs_init(&tls)?;
        let telltale = start_fresh_aggregator(&tls, dir.path())?;
        let (prometheus, prometheus_addr) = spawn_prometheus(
            dir.path(),
            &dir.path().join("prom"),
            &["--web.enable-remote-write-receiver"],
        )?;
        let mut pair = Pair {
            prometheus,
            prometheus_addr,
            telltale,
            start,
            end,
            _dir: dir,
        };
        wait_for(Duration::from_secs(60), || {
            http_get(pair.prometheus_addr, "/-/ready")
                .ok()
                .filter(|r| r.0 == 200)
        })
        .context("prometheus did not become ready")?;
        let mut t = start - 60_000;
        while t <= end + 60_000 {
            let slice: Vec<SeriesSamples> = series
                .iter()
                .map(|s| SeriesSamples {
                    labels: s.labels.clone(),
                    samples: s
                        .samples
                        .iter()
                        .copied()
                        .filter(|x| x.0 >= t && x.0 < t + 60_000)
                        .collect(),
                })
                .filter(|s| !s.samples.is_empty())
                .collect();
            if !slice.is_empty() {
                let body = telltale_aggregator::api::remote_write::encode(&slice);
                for addr in [pair.prometheus_addr, pair.telltale.http] {
                    let (status, resp) =
                        http_post(addr, "/api/v1/write", "application/x-protobuf", &body)?;
                    anyhow::ensure!(status / 100 == 2, "remote_write to {addr}: {status} {resp}");
                }
            }
            t += 60_000;
        }
        pair.end = end;
        Ok(pair)
    }

    /// Like [`Pair::compare`], and when the answers differ, asks the reference again (up to
    /// 63 times): if the reference's own answers differ from each other, the query has no
    /// single right answer — Prometheus 2.42 assembles range results and `histogram_quantile`
    /// results in Go map order, so which of equal values `topk`/`bottomk` keep changes from run
    /// to run (and sums add up in a different order) — and the query is `Undecided`, not a
    /// disagreement.
    pub fn judge(&self, q: &str, at: i64, step: Option<i64>) -> Verdict {
        self.judge_over(q, at, step, 30 * 60_000)
    }

    /// [`Pair::judge`] with a range query spanning `span` ms before `at`.
    pub fn judge_over(&self, q: &str, at: i64, step: Option<i64>, span: i64) -> Verdict {
        let path = self.path(q, at, step, span);
        let ordered = step.is_none() && sorts(q);
        let Err(first) = self.compare_path(&path, ordered) else {
            return Verdict::Agree;
        };
        let Ok(reference) = self.get(self.prometheus_addr, &path) else {
            return Verdict::Differ(first);
        };
        // Up to 64 tries (they stop at the first disagreement, and are only made on a
        // difference): Go's map order is a random rotation, so one order may come up only one
        // time in eight or sixteen — 64 tries still show it with a chance above 98 %.
        for _ in 0..63 {
            match self.get(self.prometheus_addr, &path) {
                Ok(again) => {
                    let same = crate::compliance::compare(&reference, &again).and_then(|_| {
                        if ordered {
                            crate::compliance::compare_order(&reference, &again)
                        } else {
                            Ok(())
                        }
                    });
                    if let Err(e) = same {
                        return Verdict::Undecided(format!(
                            "the reference differs from itself: {e}"
                        ));
                    }
                }
                Err(_) => break,
            }
        }
        Verdict::Differ(first)
    }

    fn path(&self, q: &str, at: i64, step: Option<i64>, span: i64) -> String {
        match step {
            None => format!("/api/v1/query?query={}&time={}", enc(q), at as f64 / 1000.0),
            Some(s) => format!(
                "/api/v1/query_range?query={}&start={}&end={}&step={}",
                enc(q),
                (at - span) as f64 / 1000.0,
                at as f64 / 1000.0,
                s as f64 / 1000.0
            ),
        }
    }

    fn get(&self, addr: SocketAddr, path: &str) -> Result<Value, String> {
        let (_, body) = http_get(addr, path).map_err(|e| e.to_string())?;
        serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
    }

    /// Runs `q` as an instant query at `at` (ms) or, with a `step`, as a range query over the
    /// last 30 minutes of data, on both; `Err` names the difference.
    pub fn compare(&self, q: &str, at: i64, step: Option<i64>) -> Result<(), String> {
        let ordered = step.is_none() && sorts(q);
        self.compare_path(&self.path(q, at, step, 30 * 60_000), ordered)
    }

    /// Compares the answers to `path`; with `ordered`, the order of an instant vector's
    /// series too (what `sort` and `sort_desc` promise a client).
    fn compare_path(&self, path: &str, ordered: bool) -> Result<(), String> {
        let (a, b) = (
            self.get(self.prometheus_addr, path)?,
            self.get(self.telltale.http, path)?,
        );
        crate::compliance::compare(&a, &b)?;
        if ordered {
            crate::compliance::compare_order(&a, &b)?;
        }
        Ok(())
    }
}

/// Whether `q`'s outermost operation is one whose instant answer Prometheus orders: `sort`
/// and `sort_desc` (their promise to a client) and `topk`/`bottomk` (each group best first,
/// groups in first-seen order). A range query sorts its series by labels instead.
pub fn sorts(q: &str) -> bool {
    let mut q = q.trim();
    while let Some(inner) = q.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
        q = inner.trim();
    }
    let Some(rest) = ["sort_desc", "sort", "topk", "bottomk"]
        .iter()
        .find_map(|f| q.strip_prefix(f))
    else {
        return false;
    };
    let mut rest = rest.trim_start();
    for clause in ["by", "without"] {
        if let Some(r) = rest.strip_prefix(clause)
            && let Some(i) = r.find(')')
        {
            rest = r[i + 1..].trim_start();
        }
    }
    // One call spanning the whole query: its parenthesis closes at the end.
    rest.starts_with('(') && {
        let mut depth = 0i32;
        let mut close = None;
        let mut quote: Option<char> = None;
        let mut escaped = false;
        for (i, c) in rest.char_indices() {
            match quote {
                Some(qc) => {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == qc {
                        quote = None;
                    }
                }
                None => match c {
                    '"' | '\'' | '`' => quote = Some(c),
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            close = Some(i);
                            break;
                        }
                    }
                    _ => {}
                },
            }
        }
        close == Some(rest.len() - 1)
    }
}

/// What a run found.
#[derive(Default)]
pub struct Report {
    /// Queries answered alike.
    pub agree: usize,
    /// `(query, step, difference)`: wrong answers.
    pub differ: Vec<(String, Option<i64>, String)>,
    /// `(query, step, why)`: queries the reference answers differently from run to run.
    pub undecided: Vec<(String, Option<i64>, String)>,
}

impl Report {
    /// Queries run.
    pub fn total(&self) -> usize {
        self.agree + self.differ.len() + self.undecided.len()
    }

    /// Prints the counts and up to `show` differences and undecided queries.
    pub fn print(&self, what: &str, show: usize) {
        let decided = self.agree + self.differ.len();
        println!(
            "{what}: agreement {} of {decided} decided ({:.2} %); {} of {} undecided (the reference answered differently from run to run)",
            self.agree,
            100.0 * self.agree as f64 / decided.max(1) as f64,
            self.undecided.len(),
            self.total()
        );
        for (label, list) in [("DIFFER", &self.differ), ("undecided", &self.undecided)] {
            for (q, step, e) in list.iter().take(show) {
                let kind = step.map_or("instant".to_string(), |s| format!("range step {s}ms"));
                println!(
                    "  {label} {kind} {q}\n      {}",
                    e.chars().take(300).collect::<String>()
                );
            }
        }
    }

    fn add(&mut self, q: &str, step: Option<i64>, v: Verdict) {
        match v {
            Verdict::Agree => self.agree += 1,
            Verdict::Differ(e) => self.differ.push((q.to_string(), step, e)),
            Verdict::Undecided(e) => self.undecided.push((q.to_string(), step, e)),
        }
    }
}

/// `n` random queries from `seed` against `pair`: odd ones as range queries (15 s, 30 s or
/// 1 m steps over 30 minutes; one in five at 5 minutes over 45, aligned, where rollups
/// answer), even ones as instant queries (a fifth of them sorted, their order compared), at
/// times in the last 15 minutes.
pub fn run(pair: &Pair, seed: u64, n: usize) -> Report {
    let mut rng = Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B);
    let mut report = Report::default();
    for i in 0..n {
        let mut q = query(&mut rng, TOP_DEPTH, pair.end / 1000);
        // One instant query in five is sorted, and its order compared: ties and NaNs come
        // out where Go's unstable sort leaves them, from the order the inner parts produce.
        if i % 10 == 0 || i % 10 == 4 {
            q = format!("{}({q})", if i % 10 == 0 { "sort" } else { "sort_desc" });
        }
        let mut at = pair.end - (rng.uniform() * 15.0 * 60_000.0) as i64 / 1000 * 1000;
        let mut step = (i % 2 == 1).then(|| [15_000, 30_000, 60_000][i % 3]);
        let mut span = 30 * 60_000;
        // One query in ten (a range query in five) at a 5-minute step from an aligned start, where
        // `*_over_time` calls are answered from rollups.
        if i % 10 == 5 {
            (at, step, span) = (
                pair.end.div_euclid(300_000) * 300_000,
                Some(300_000),
                2_700_000,
            );
        }
        let verdict = match pair.judge_over(&q, at, step, span) {
            Verdict::Differ(e) => Verdict::Differ(format!("[at {}] {e}", at / 1000)),
            v => v,
        };
        report.add(&q, step, verdict);
    }
    report
}

/// `q` with every `{end}`, `{end-100}`, `{end+300.5}` written as Unix seconds from `end_s`.
pub fn place_times(q: &str, end_s: i64) -> String {
    let mut out = String::with_capacity(q.len() + 16);
    let mut rest = q;
    while let Some(i) = rest.find("{end") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 4..];
        let Some(close) = tail.find('}') else {
            out.push_str(&rest[i..]);
            return out;
        };
        let delta: f64 = tail[..close].parse().unwrap_or(0.0);
        let t = end_s as f64 + delta;
        out.push_str(&if t.fract() == 0.0 {
            format!("{t:.0}")
        } else {
            format!("{t:.3}")
        });
        rest = &tail[close + 1..];
    }
    out.push_str(rest);
    out
}

/// The corner queries of `tests/data/promql-corners.txt` (times placed by [`place_times`]) on
/// `pair`, each as instant queries at four times (a fraction of a second among them) and
/// as range queries at nine steps from 0.75 s to an hour, from aligned and unaligned
/// starts; a query counts as agreeing when every one of its 13 answers does.
pub fn run_corners(pair: &Pair, queries: &[String]) -> Report {
    let end = pair.end;
    let aligned = |step: i64| end.div_euclid(step) * step;
    // (time, step, span) in ms.
    let mut shapes: Vec<(i64, Option<i64>, i64)> = [0, 123_456, 600_500, 1_799_999]
        .iter()
        .map(|d| (end - d, None, 0))
        .collect();
    shapes.extend([
        (end, Some(15_000), 1_800_000),
        (end - 1_700, Some(7_000), 1_798_600),
        (end, Some(13_500), 900_000),
        (end, Some(750), 600_000),
        (end + 60_000, Some(60_000), 3_060_000),
        (aligned(300_000), Some(300_000), 2_700_000),
        (aligned(900_000) + 900_000, Some(900_000), 3_600_000),
        (aligned(600_000), Some(600_000), 3_000_000),
        (aligned(3_600_000) + 3_600_000, Some(3_600_000), 7_200_000),
    ]);
    let mut report = Report::default();
    for q in queries {
        let q = place_times(q, end / 1000);
        let mut verdict = Verdict::Agree;
        for &(at, step, span) in &shapes {
            let v = pair.judge_over(&q, at, step, span);
            if !matches!(v, Verdict::Agree) {
                verdict = match v {
                    Verdict::Differ(e) => Verdict::Differ(format!("[at {at} step {step:?}] {e}")),
                    v => v,
                };
                break;
            }
        }
        report.add(&q, None, verdict);
    }
    report
}

/// The compliance cases on `pair` (holding [`rough_demo_data`]): each as a range query over
/// the last hour at a 10 s step and as instant queries at three times, as the compliance
/// test runs them. A case that should fail must fail on both.
pub fn run_cases(pair: &Pair, cases: &[crate::compliance::Case]) -> Report {
    let mut report = Report::default();
    for c in cases {
        let mut verdict = Verdict::Agree;
        for (at, step) in [
            (pair.end, Some(10_000)),
            (pair.end - 17 * 60_000, None),
            (pair.end - 33 * 60_000 - 2_500, None),
            (pair.end, None),
        ] {
            let v = pair.judge_over(&c.query, at, step, 60 * 60_000);
            if !matches!(v, Verdict::Agree) {
                verdict = v;
                break;
            }
        }
        report.add(&c.query, None, verdict);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::sorts;

    #[test]
    fn only_a_whole_query_under_an_ordering_call_is_compared_in_order() {
        for q in [
            "sort(x)",
            " ( sort_desc(rate(x[5m])) ) ",
            "topk(3, x)",
            "bottomk by (job) (2, x)",
            "topk without (le) (2, x)",
            r#"sort(label_replace(x, "a", ")", "b", "("))"#,
        ] {
            assert!(sorts(q), "{q}");
        }
        for q in [
            "sort(x) + 1",
            "sum(sort(x))",
            "(sort(x)) + (sort(y))",
            "sorted_thing",
            "topk(3, x) by (job) + 1",
            "x",
        ] {
            assert!(!sorts(q), "{q}");
        }
    }
}
