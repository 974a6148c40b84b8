//! Random Alertmanager routing files checked against Alertmanager's own tool: `amtool
//! check-config` and Telltale load the same files, and `amtool config routes test` sends
//! random label sets where Telltale's routing tree sends them (tests/src/routefuzz.rs).
//! `TT_ROUTES_FUZZ_CASES` and `TT_ROUTES_FUZZ_SEED` widen a run by hand.

use telltale_tests::compliance::Rng;
use telltale_tests::peers::{AMTOOL, peer};
use telltale_tests::routefuzz::Case;

use telltale_tests::env_u64 as env;

#[test]
fn random_routing_files_load_and_route_as_alertmanager_does() {
    let Some(amtool) = peer(AMTOOL, "prometheus-alertmanager") else {
        return;
    };
    let cases = env("TT_ROUTES_FUZZ_CASES", 60);
    let seed = env("TT_ROUTES_FUZZ_SEED", 0xa1e7_5eed);
    let mut r = Rng(seed | 1);
    let dir = tempfile::tempdir().unwrap();
    let (mut loaded, mut routed) = (0, 0);
    let mut failed = Vec::new();
    for i in 0..cases {
        let case = Case::random(&mut r);
        let o = case
            .check(dir.path(), &amtool, &mut r, 6)
            .unwrap_or_else(|e| panic!("case {i} (seed {seed}): {e}"));
        loaded += usize::from(o.loaded);
        routed += o.routed;
        if let Some(d) = o.disagreement {
            failed.push(format!(
                "=== case {i} (seed {seed}) ===\n{d}\n{}",
                case.yaml
            ));
        }
    }
    println!(
        "{cases} routing files: {loaded} loaded by both, {routed} label sets routed, {} \
         disagreements",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {cases} files disagree with amtool:\n{}",
        failed.len(),
        failed
            .iter()
            .take(6)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Most files must load, or the routing comparison says little.
    assert!(loaded * 2 >= cases as usize, "{loaded} of {cases} load");
}
