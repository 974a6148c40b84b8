//! The README's first command runs this demo; CI runs it briefly to prove it works.

use std::process::Command;

#[test]
fn the_demo_starts_an_aggregator_and_an_agent_and_shows_data() {
    let out = Command::new(env!("CARGO_BIN_EXE_telltale-demo"))
        .args(["--no-build", "--for", "3s"])
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Telltale demo is running."), "{stdout}");
    // The UI's URL comes first.
    let after = stdout
        .split("Telltale demo is running.")
        .nth(1)
        .unwrap_or("");
    assert!(
        after.trim_start().starts_with("web UI:     http://"),
        "{stdout}"
    );
    assert!(stdout.contains("node_load1 = "), "{stdout}");
    assert!(stdout.contains("up = 1"), "{stdout}");
    assert!(
        stdout.contains("probe_success{check=\"aggregator-http\"} = 1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ALERTS{alertname=\"OrdersFlowing\"} = 1"),
        "the demo's business alert fires: {stdout}"
    );
    let orders = stdout
        .lines()
        .find_map(|l| l.split_once("sum by (plan) (shop_orders) = ").map(|x| x.1))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(orders.is_some_and(|n| n >= 1.0), "{stdout}");
    assert!(stdout.contains("scratch directory removed"), "{stdout}");
}
