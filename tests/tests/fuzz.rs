//! The differential PromQL fuzzer in CI (see `telltale_tests::fuzz`): 2,000 grammar-generated
//! queries on scrape-shaped data, and the 539 compliance cases on the demo data made
//! scrape-shaped, against Debian's Prometheus 2.42. The seed changes every run and is printed
//! (`TT_FUZZ_SEED=N` replays one; `cargo bench-telltale fuzz --seed N` runs it by hand). Any
//! difference fails. A query the reference itself answers differently from run to run (Go map
//! order decides `topk` ties in its range queries) is undecided: listed, not counted, and
//! bounded, so the check cannot go quiet.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use telltale_tests::compliance::PROMETHEUS;
use telltale_tests::fuzz::{self, Pair, Report};

fn have_prometheus() -> bool {
    if Path::new(PROMETHEUS).exists() {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "prometheus is missing in CI: .ci/run must install it"
    );
    eprintln!("skipped: prometheus is not installed (apt-get install prometheus)");
    false
}

fn seed() -> u64 {
    std::env::var("TT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| telltale_common::model::now_ms() as u64)
}

fn check(report: &Report, what: &str, seed: u64) {
    report.print(what, 50);
    assert!(
        report.differ.is_empty(),
        "{what}: {} wrong answers (replay: TT_FUZZ_SEED={seed})",
        report.differ.len()
    );
    assert!(
        report.undecided.len() * 100 <= report.total(),
        "{what}: {} of {} undecided — more than 1 %: the comparison has gone blind (seed {seed})",
        report.undecided.len(),
        report.total()
    );
}

#[test]
fn random_queries_agree_with_prometheus() {
    if !have_prometheus() {
        return;
    }
    let seed = seed();
    println!("fuzzer seed {seed} (replay: TT_FUZZ_SEED={seed})");
    let pair = Pair::start(seed).unwrap();
    let report = fuzz::run(&pair, seed, 2000);
    assert_eq!(report.total(), 2000);
    check(&report, "random queries", seed);
}

#[test]
fn compliance_cases_agree_on_scrape_shaped_data() {
    if !have_prometheus() {
        return;
    }
    if telltale_tests::compliance::compliance_data().is_none() {
        return;
    }
    let seed = seed();
    println!("data seed {seed} (replay: TT_FUZZ_SEED={seed})");
    let now = telltale_common::model::now_ms() / 10_000 * 10_000;
    let (start, end) = (now - 65 * 60_000, now);
    let pair = Pair::load(&fuzz::rough_demo_data(seed, start, end), start, end).unwrap();
    let cases = telltale_tests::compliance::cases().unwrap();
    let report = fuzz::run_cases(&pair, &cases);
    assert_eq!(report.total(), 539);
    check(&report, "compliance cases on scrape-shaped data", seed);
}

/// `/federate` on the fuzzer's data (NaNs, stale markers, series that end and begin) is the
/// text Prometheus' own `/federate` writes for the same samples, line for line (the order of
/// series within a family is unspecified there, so lines are compared sorted).
#[test]
fn federation_is_prometheus_own_text() {
    if !have_prometheus() {
        return;
    }
    let seed = seed();
    let pair = Pair::start(seed).unwrap();
    for m in [
        "%7B__name__%3D~%22.%2B%22%7D",
        "http_requests_total%7Bjob%3D%22api%22%7D&match[]=node_load1",
        "%7Bjob%3D%22db%22%7D&match[]=%7Bjob%3D~%22d.*%22%7D",
        "nonexistent",
    ] {
        let path = format!("/federate?match[]={m}");
        let lines = |addr| {
            let (status, body) = telltale_tests::http_get(addr, &path).unwrap();
            assert_eq!(status, 200, "{path}: {body}");
            let mut l: Vec<String> = body.lines().map(String::from).collect();
            l.sort();
            l
        };
        let (theirs, ours) = (lines(pair.prometheus_addr), lines(pair.telltale.http));
        assert!(
            m == "nonexistent" || !theirs.is_empty(),
            "{path}: the reference federated nothing"
        );
        assert_eq!(ours, theirs, "{path} (seed {seed})");
    }
}

#[test]
fn corner_queries_agree_with_prometheus() {
    if !have_prometheus() {
        return;
    }
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/promql-corners.txt");
    let text = std::fs::read_to_string(&file).unwrap();
    let queries: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("# "))
        .map(str::to_string)
        .collect();
    assert!(
        queries.len() > 700,
        "{}: {} queries",
        file.display(),
        queries.len()
    );
    let seed = seed();
    println!("data seed {seed} (replay: TT_FUZZ_SEED={seed})");
    let pair = Pair::start(seed).unwrap();
    let report = fuzz::run_corners(&pair, &queries);
    assert_eq!(report.total(), queries.len());
    check(&report, "corner queries", seed);
}

/// The query API's parameters — times and steps in every spelling, missing, inverted,
/// overflowing and unparsable ones, result types a range query refuses, the metadata
/// endpoints' `match[]`, `start` and `end` — get Prometheus' HTTP status, error type, error
/// text and data (`telltale_tests::apidiff`, which lists what is left out).
#[test]
fn api_parameters_are_answered_as_prometheus_answers_them() {
    if !have_prometheus() {
        return;
    }
    let seed = seed();
    let pair = Pair::start(seed).unwrap();
    let diffs = telltale_tests::apidiff::compare(&pair).unwrap();
    for (path, what) in &diffs {
        println!("DIFFER {path}\n    {what}");
    }
    assert!(
        diffs.is_empty(),
        "{} of {} requests answered unlike Prometheus (seed {seed})",
        diffs.len(),
        telltale_tests::apidiff::requests(pair.end).len()
    );
}
