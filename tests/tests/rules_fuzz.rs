//! Random rule files and alert timelines checked against Prometheus' rule engine: Telltale's
//! observations of every alert check and `ALERTS` query become a test file's expectations,
//! and `promtool test rules` must pass it (tests/src/rulefuzz.rs). `TT_RULES_FUZZ_CASES`
//! and `TT_RULES_FUZZ_SEED` widen a run by hand; `TT_RULES_FUZZ_REPORT=FILE` keeps every
//! disagreement.

use telltale_tests::compliance::Rng;
use telltale_tests::peers::peer;
use telltale_tests::rulefuzz::Case;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn random_rules_fire_and_render_as_prometheus_does() {
    let Some(promtool) = peer("/usr/bin/promtool", "prometheus") else {
        return;
    };
    let cases = env("TT_RULES_FUZZ_CASES", 120);
    let seed = env("TT_RULES_FUZZ_SEED", 0x5eed_a1e7);
    let mut r = Rng(seed | 1);
    let dir = tempfile::tempdir().unwrap();
    let (mut alerts, mut firing, mut exprs, mut skipped) = (0, 0, 0, 0);
    let mut failed = Vec::new();
    for i in 0..cases {
        let case = Case::random(&mut r);
        let o = case
            .check(dir.path(), &promtool)
            .unwrap_or_else(|e| panic!("case {i} (seed {seed}): {e}\n{}", case.rules));
        alerts += o.alert_checks;
        firing += o.firing_checks;
        exprs += o.expr_checks;
        skipped += o.expr_skipped;
        if let Some(d) = o.disagreement {
            failed.push(format!("=== case {i} (seed {seed}) ===\n{d}"));
        }
    }
    println!(
        "{cases} rule files: {alerts} alert checks ({firing} with alerts firing), {exprs} \
         expression checks ({skipped} left out), {} disagreements",
        failed.len()
    );
    if let Ok(path) = std::env::var("TT_RULES_FUZZ_REPORT") {
        std::fs::write(path, failed.join("\n")).unwrap();
    }
    // The generator must reach firing alerts, or the comparison says little.
    assert!(firing * 5 >= alerts, "{firing} of {alerts} checks fire");
    assert!(
        failed.is_empty(),
        "{} of {cases} files disagree with promtool:\n{}",
        failed.len(),
        failed
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
