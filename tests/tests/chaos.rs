//! The reliability suite at CI size (issue 26): network faults through the seeded UDP fault
//! proxy, crash loops of the aggregator and of an agent. The scenarios live in
//! `telltale_tests::chaos`; `cargo bench-telltale chaos` runs them at the size and
//! prints the README's table. A failing run prints its seed; `TT_CHAOS_SEED=N` replays it.

use telltale_tests::chaos::{self, NetPlan};

fn seed() -> u64 {
    telltale_tests::seed_from_env("TT_CHAOS_SEED")
}

/// 40 s of 10 % loss (with duplication and reordering), a 30 s partition, 40 s at 500 ms
/// (± 50 ms per packet, so packets overtake each other): the partition's backlog drains while
/// still at 500 ms, and afterwards every 1 s interval is present, once.
#[test]
fn through_loss_a_partition_and_latency_every_interval_arrives_once() {
    let seed = seed();
    let r = chaos::network(&NetPlan::ci(), seed).expect("network scenario");
    eprintln!("{r:?}");
    assert!(r.expected >= 90, "{r:?}");
    assert!(
        r.proxy.dropped > 0 && r.proxy.duplicated > 0 && r.proxy.reordered > 0,
        "{r:?}"
    );
    assert_eq!(r.missing, 0, "intervals lost (seed {seed}): {r:?}");
    assert_eq!(
        r.missing_before_heal, 0,
        "the backlog did not drain at 500 ms (seed {seed}): {r:?}"
    );
    assert_eq!(
        r.overwritten, 0,
        "samples stored twice (seed {seed}): {r:?}"
    );
    assert!(
        r.drain_s.is_some(),
        "the backlog did not drain (seed {seed}): {r:?}"
    );
}

/// 10 SIGKILLs of the aggregator under an agent at 1 s and remote_write: no acknowledged
/// sample lost, none stored twice.
#[test]
fn ten_aggregator_kills_lose_and_double_nothing_acknowledged() {
    let seed = seed();
    let r = chaos::aggregator_crash_loop(10, seed).expect("aggregator crash loop");
    eprintln!("{r:?} p99 {:.2} s", r.recovery_p99());
    assert!(r.rw_acked > 10_000 && r.agent_expected >= 20, "{r:?}");
    assert_eq!(
        r.rw_lost, 0,
        "acknowledged remote_write samples lost (seed {seed}): {r:?}"
    );
    assert_eq!(r.agent_lost, 0, "agent intervals lost (seed {seed}): {r:?}");
    assert_eq!(r.duplicates, 0, "samples stored twice (seed {seed}): {r:?}");
}

/// 10 SIGKILLs of an agent: every collection it had persisted arrives, once.
#[test]
fn ten_agent_kills_lose_and_double_nothing_persisted() {
    let seed = seed();
    let r = chaos::agent_crash_loop(10, seed).expect("agent crash loop");
    eprintln!("{r:?} p99 {:.2} s", r.recovery_p99());
    assert!(r.agent_expected >= 20, "{r:?}");
    assert_eq!(r.agent_lost, 0, "agent intervals lost (seed {seed}): {r:?}");
    assert_eq!(r.duplicates, 0, "samples stored twice (seed {seed}): {r:?}");
}

/// A disk-full report, or `None` after saying why the scenario was skipped (no tmpfs without
/// root; CI runs as root, so there it fails instead); the goals both sides share are asserted.
fn full_disk(r: Option<chaos::DiskReport>, gauge: &str) -> Option<chaos::DiskReport> {
    let Some(r) = r else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to mount a tmpfs (it runs as root)"
        );
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return None;
    };
    eprintln!("{r:?}");
    assert!(r.logged, "{r:?}");
    assert_eq!(r.flagged, Some(1.0), "{gauge} while full: {r:?}");
    assert_eq!(r.lost, 0, "{r:?}");
    assert!(r.resumed, "{r:?}");
    Some(r)
}

/// The agent's buffer on a full disk: collection goes on, batches wait in memory (bounded),
/// the condition is logged and in `telltale_agent_disk_full`; with space again everything
/// held is written and shipped, no interval lost.
#[test]
fn a_full_disk_under_the_agent_holds_batches_and_resumes_by_itself() {
    let r = chaos::agent_disk_full(std::time::Duration::from_secs(15)).expect("agent disk full");
    full_disk(r, "telltale_agent_disk_full");
}

/// The aggregator's disk full under an agent and remote_write: it stops acknowledging, says so
/// (`/metrics`, log), loses nothing acknowledged, and resumes by itself — its alerting state
/// too, which sled had left refusing every write until a restart.
#[test]
fn a_full_disk_under_the_aggregator_stops_acks_loses_nothing_and_resumes() {
    let r = chaos::aggregator_disk_full(std::time::Duration::from_secs(15))
        .expect("aggregator disk full");
    if let Some(r) = full_disk(r, "telltale_aggregator_disk_full") {
        assert_eq!(
            r.alerting_writes,
            Some(true),
            "the alerting state writes again: {r:?}"
        );
    }
}

/// Clocks jump by hours, forward and back, on the agent and on the aggregator (libfaketime):
/// nothing crashes, nothing stays stuck once the clock is right again, refusals are counted.
#[test]
fn clock_jumps_by_hours_crash_nothing_and_leave_nothing_stuck() {
    for (whose, offset) in [
        (chaos::Whose::Agent, "+3h"),
        (chaos::Whose::Agent, "-3h"),
        (chaos::Whose::Aggregator, "+3h"),
        (chaos::Whose::Aggregator, "-3h"),
    ] {
        let Some(r) = chaos::clock_jump(whose, offset, std::time::Duration::from_secs(8))
            .expect("clock jump")
        else {
            assert!(std::env::var_os("CI").is_none(), "CI installs faketime");
            eprintln!(
                "skipped: {} is absent (apt-get install faketime)",
                chaos::LIBFAKETIME
            );
            return;
        };
        eprintln!("{whose:?} {offset}: {r:?}");
        assert!(r.alive, "{whose:?} {offset}: {r:?}");
        assert!(
            r.flowing_again_s.is_some(),
            "{whose:?} {offset}: stuck: {r:?}"
        );
        assert!(
            r.evaluations_after > 0,
            "{whose:?} {offset}: rules stopped: {r:?}"
        );
    }
}
