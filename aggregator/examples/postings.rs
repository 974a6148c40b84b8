//! How fast the label index answers selectors over a million series.
//!
//! `cargo run --release -p telltale-aggregator --example postings`
//!
//! One million series: 100 metric names × 10 000 instances (`web-0000`…`web-4999`,
//! `db-0000`…`db-4999`), 10 jobs (by instance), and a `cpu` label on a tenth of them.

use std::time::Instant;

use telltale_aggregator::metrics::storage::{MatchOp, Matcher};
use telltale_aggregator::metrics::tsdb::head::{Head, hash_labels};
use telltale_common::model::Labels;

fn re(name: &str, r: &str, negate: bool) -> Matcher {
    let rx = regex::Regex::new(&format!("^(?:{r})$")).unwrap_or_else(|e| panic!("{e}"));
    Matcher {
        name: name.into(),
        op: if negate {
            MatchOp::NotRegex(rx)
        } else {
            MatchOp::Regex(rx)
        },
    }
}

fn main() {
    let mut h = Head::default();
    let t = Instant::now();
    for i in 0..10_000 {
        let instance = if i < 5000 {
            format!("web-{i:04}")
        } else {
            format!("db-{:04}", i - 5000)
        };
        let job = format!("job-{}", i % 10);
        for m in 0..100 {
            let name = format!("metric_{m:03}");
            let mut pairs = vec![
                ("__name__", name.as_str()),
                ("instance", instance.as_str()),
                ("job", job.as_str()),
            ];
            let cpu = (m % 10).to_string();
            if m < 10 {
                pairs.push(("cpu", cpu.as_str()));
            }
            pairs.sort();
            let l = Labels::from_pairs(pairs.iter().copied());
            h.create(l, hash_labels(pairs.iter().copied()), u32::MAX, 0);
        }
    }
    println!(
        "indexed {} series in {:.1} s\n",
        h.len(),
        t.elapsed().as_secs_f64()
    );
    println!("| selector | series | µs (median of 21) |");
    println!("|---|---|---|");
    let cases: Vec<(&str, Vec<Matcher>)> = vec![
        (
            "{job=\"job-3\", instance=~\"web.*\"}",
            vec![
                Matcher::equal("job", "job-3"),
                re("instance", "web.*", false),
            ],
        ),
        (
            "metric_042{job=\"job-3\", instance=~\"web.*\"}",
            vec![
                Matcher::equal("__name__", "metric_042"),
                Matcher::equal("job", "job-3"),
                re("instance", "web.*", false),
            ],
        ),
        (
            "metric_042{instance=~\"web-00.*\"}",
            vec![
                Matcher::equal("__name__", "metric_042"),
                re("instance", "web-00.*", false),
            ],
        ),
        (
            "{instance=\"db-0042\"}",
            vec![Matcher::equal("instance", "db-0042")],
        ),
        (
            "metric_001{cpu!=\"3\"}",
            vec![
                Matcher::equal("__name__", "metric_001"),
                Matcher {
                    name: "cpu".into(),
                    op: MatchOp::NotEqual("3".into()),
                },
            ],
        ),
        (
            "{__name__=~\"metric_00.*\", instance!~\"db.*\"}",
            vec![
                re("__name__", "metric_00.*", false),
                re("instance", "db.*", true),
            ],
        ),
    ];
    for (name, ms) in cases {
        let mut times = Vec::new();
        let mut n = 0;
        for _ in 0..21 {
            let t = Instant::now();
            n = h.matching_ids(&ms).len();
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
        times.sort_by(f64::total_cmp);
        println!("| `{name}` | {n} | {:.0} |", times[10]);
    }
}
