//! `telltale-bench correlation [--scenarios 300] [--seed 1] [--show 15]`: correlation quality
//! on generated failure cascades (`telltale_tests::cascade`), posted to a real aggregator —
//! once with symptom rules marked (`telltale_role: symptom`, as the README recommends) and
//! once without marks (only the default symptom name patterns).

use telltale_tests::cascade::{self, Options};

use super::arg;

pub fn bench_correlation(args: &[String]) -> anyhow::Result<()> {
    let n: usize = arg(args, "--scenarios", 300);
    let seed: u64 = arg(args, "--seed", 1);
    let show: usize = arg(args, "--show", 15);
    let mut rows = Vec::new();
    for marks in [true, false] {
        let scenarios: Vec<_> = (0..n)
            .map(|i| cascade::scenario(seed, i, Options { marks }))
            .collect();
        let alerts: usize = scenarios.iter().map(|s| s.alerts.len()).sum();
        let t = std::time::Instant::now();
        let sc = cascade::run(&scenarios)?;
        let secs = t.elapsed().as_secs_f64();
        eprintln!("marks {marks}: {} misses (first {show}):", sc.misses.len());
        for m in sc.misses.iter().take(show) {
            eprintln!("  {m}");
        }
        rows.push(format!(
            "| {} | {n} | {alerts} | {} | {secs:.1} |",
            if marks { "marked" } else { "unmarked" },
            sc.cells()
        ));
    }
    println!("\nCorrelation on generated cascades (seed {seed}):\n");
    println!(
        "| symptom rules | scenarios | alerts | root cause right | grouping right | noise kept apart | independent failures apart | seconds |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}
