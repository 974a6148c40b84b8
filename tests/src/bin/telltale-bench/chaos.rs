//! `telltale-bench chaos [--scale ci|full] [--cycles N] [--seed N] [--loss D] [--partition D]
//! [--latency D] [--only network]`: the reliability suite
//! (`telltale_tests::chaos`) with its counted figures as the README's table. `ci` is the size
//! the tests run (network phases of 40 s / 30 s / 40 s, 10 kill cycles); `full` is the issue's
//! size (10 minutes at 10 % loss, a 5-minute partition, 5 minutes at 500 ms, 100 cycles).
//! Full disks need root (a tmpfs); clock jumps need Debian's `faketime`.

use std::time::{Duration, Instant};

use anyhow::bail;
use telltale_tests::chaos::{self, CrashReport, NetPlan, Whose};

use crate::arg;

fn crash_row(what: &str, r: &CrashReport) -> String {
    format!(
        "| {what} | {} cycles | acknowledged lost: {} remote_write of {}, {} agent intervals of {}; stored twice: {}; recovery p99 {:.2} s (max of {}) |",
        r.cycles,
        r.rw_lost,
        r.rw_acked,
        r.agent_lost,
        r.agent_expected,
        r.duplicates,
        r.recovery_p99(),
        r.recovery_s.len()
    )
}

pub fn bench_chaos(args: &[String]) -> anyhow::Result<()> {
    let scale: String = arg(args, "--scale", "ci".to_string());
    let (plan, cycles) = match scale.as_str() {
        "ci" => (NetPlan::ci(), 10),
        "full" => (NetPlan::full(), 100),
        other => bail!("--scale ci|full, not {other}"),
    };
    let cycles: usize = arg(args, "--cycles", cycles);
    // `--loss D --partition D --latency D` override the network phases; `--only network`
    // runs that scenario alone.
    let phase = |flag: &str, d: Duration| -> anyhow::Result<Duration> {
        let v: String = arg(args, flag, String::new());
        Ok(if v.is_empty() {
            d
        } else {
            humantime::parse_duration(&v)?
        })
    };
    let plan = NetPlan {
        loss: phase("--loss", plan.loss)?,
        partition: phase("--partition", plan.partition)?,
        latency: phase("--latency", plan.latency)?,
    };
    let only: String = arg(args, "--only", String::new());
    let seed: u64 = arg(args, "--seed", telltale_common::model::now_ms() as u64);
    eprintln!("seed {seed}, scale {scale}");
    let started = Instant::now();
    let mut rows = vec![
        "| test | size | counted |".to_string(),
        "|---|---|---|".to_string(),
    ];
    let n = chaos::network(&plan, seed)?;
    rows.push(format!(
        "| network: 10 % loss (+2 % duplicated, 5 % reordered), partition, 500 ms latency | {} s + {} s + {} s at 1 s collection | {} of {} intervals missing, {} stored twice; backlog drained at 500 ms: {}; drained {} after healing; {} connections; proxy dropped {} of {} packets, duplicated {}, reordered {} |",
        plan.loss.as_secs(),
        plan.partition.as_secs(),
        plan.latency.as_secs(),
        n.missing,
        n.expected,
        n.overwritten,
        if n.missing_before_heal == 0 {
            "yes".to_string()
        } else {
            format!("no, {} intervals missing at the end of it", n.missing_before_heal)
        },
        n.drain_s.map_or("never".into(), |s| format!("in {s:.1} s")),
        n.connects,
        n.proxy.dropped,
        n.proxy.received,
        n.proxy.duplicated,
        n.proxy.reordered
    ));
    eprintln!("{}", rows.last().map(String::as_str).unwrap_or(""));
    if n.missing > 0 || n.drain_s.is_none() || only == "network" {
        eprintln!("the agent's connection and backlog log:");
        for l in n.agent_log.iter().take(60) {
            eprintln!("  {l}");
        }
    }
    if only == "network" {
        println!("{}", rows.join("\n"));
        return Ok(());
    }
    let r = chaos::aggregator_crash_loop(cycles, seed)?;
    rows.push(crash_row(
        "SIGKILL the aggregator (agent at 1 s + remote_write)",
        &r,
    ));
    eprintln!("{}", rows.last().map(String::as_str).unwrap_or(""));
    let r = chaos::agent_crash_loop(cycles, seed)?;
    rows.push(crash_row("SIGKILL an agent (1 s)", &r));
    eprintln!("{}", rows.last().map(String::as_str).unwrap_or(""));
    let full_for = Duration::from_secs(15);
    for (what, r) in [
        ("agent buffer", chaos::agent_disk_full(full_for)?),
        (
            "aggregator data dir (agent + remote_write)",
            chaos::aggregator_disk_full(full_for)?,
        ),
    ] {
        match r {
            Some(r) => rows.push(format!(
                "| disk full: {what} | 15 s full (tmpfs) | lost: {}; acknowledged while full: {}; flagged: {}; logged: {}; resumed by itself: {} ({:.1} s after space returned) |",
                r.lost,
                r.acked_while_full,
                r.flagged.map_or("no".into(), |f| format!("{f}")),
                r.logged,
                r.resumed,
                r.resume_s
            )),
            None => rows.push(format!("| disk full: {what} | skipped | cannot mount a tmpfs (needs root) |")),
        }
        eprintln!("{}", rows.last().map(String::as_str).unwrap_or(""));
    }
    for (whose, offset) in [
        (Whose::Agent, "+3h"),
        (Whose::Agent, "-3h"),
        (Whose::Aggregator, "+3h"),
        (Whose::Aggregator, "-3h"),
    ] {
        match chaos::clock_jump(whose, offset, Duration::from_secs(8))? {
            Some(r) => rows.push(format!(
                "| clock jump: {whose:?} {offset} | 8 s, then back | running: {}; samples again {} after; refused too_far_in_future {}, too_old {}; rule evaluations in the next 5 s: {} |",
                r.alive,
                r.flowing_again_s.map_or("never".into(), |s| format!("{s:.1} s")),
                r.refused_new,
                r.refused_old,
                r.evaluations_after
            )),
            None => rows.push(format!("| clock jump: {whose:?} {offset} | skipped | faketime absent |")),
        }
        eprintln!("{}", rows.last().map(String::as_str).unwrap_or(""));
    }
    println!("{}", rows.join("\n"));
    println!(
        "\n(seed {seed}, scale {scale}, {:.0} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
