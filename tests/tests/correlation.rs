//! Correlation quality on generated failure cascades (`telltale_tests::cascade`), posted to a
//! real aggregator: a fixed-seed subset of what `telltale-bench correlation` runs, held to the
//! targets the bench reports against — root cause right ≥ 90 %, grouping right ≥ 95 %, noise
//! off the causal path and independent failures kept apart every time.

use telltale_tests::cascade::{self, Options};

#[test]
fn generated_cascades_get_their_root_causes_and_groups_right() {
    let scenarios: Vec<_> = (0..60)
        .map(|i| cascade::scenario(20261203, i, Options { marks: true }))
        .collect();
    // CASCADE_DUMP=N prints scenario N (topology and alerts in arrival order) for a miss.
    if let Some(n) = std::env::var("CASCADE_DUMP")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        && let Some(s) = scenarios.get(n)
    {
        eprintln!(
            "{}\n{}",
            s.title,
            cascade::routes_yaml(std::slice::from_ref(s))
        );
        for a in &s.alerts {
            eprintln!(
                "{:>6.0}s onset, {:>6.0}s arrival: {:?} {:?}",
                a.onset, a.arrival, a.labels, a.annotations
            );
        }
    }
    let sc = cascade::run(&scenarios).expect("run");
    for m in &sc.misses {
        eprintln!("miss: {m}");
    }
    let (root, grouping, _, _) = sc.pct();
    eprintln!("root, grouping, noise, independent: {}", sc.cells());
    assert!(
        sc.cascades >= 60 && sc.noise > 20 && sc.independent >= 5,
        "{sc:?}"
    );
    assert!(root >= 90.0, "root cause right {root:.1} %");
    assert!(grouping >= 95.0, "grouping right {grouping:.1} %");
    assert_eq!(sc.noise_apart, sc.noise, "noise kept apart");
    assert_eq!(
        sc.independent_apart, sc.independent,
        "independent failures kept apart"
    );
}
