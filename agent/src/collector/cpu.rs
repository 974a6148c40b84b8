//! `/proc/stat`: per-CPU time by mode, boot time, context switches, forks, running and
//! blocked processes, interrupts.

use super::{Out, Root, num, read};

/// The kernel's USER_HZ: /proc/stat counts in 1/100 s on every Linux architecture.
const USER_HZ: f64 = 100.0;
const MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

/// `node_cpu_seconds_total{cpu,mode}` and `node_cpu_guest_seconds_total{cpu,mode}`.
pub fn collect(root: &Root, out: &mut Out) -> Result<(), String> {
    let text = read(root, "stat")?;
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let Some(cpu) = f.next().and_then(|c| c.strip_prefix("cpu")) else {
            continue;
        };
        if cpu.is_empty() {
            continue; // the aggregate line; node_exporter reports per-CPU only
        }
        let vals: Vec<f64> = f
            .map(|v| num(v, "/proc/stat cpu"))
            .collect::<Result<_, _>>()?;
        for (mode, v) in MODES.iter().zip(&vals) {
            out.add(
                "node_cpu_seconds_total",
                &[("cpu", cpu), ("mode", mode)],
                v / USER_HZ,
            );
        }
        for (i, mode) in ["user", "nice"].iter().enumerate() {
            if let Some(v) = vals.get(8 + i) {
                out.add(
                    "node_cpu_guest_seconds_total",
                    &[("cpu", cpu), ("mode", mode)],
                    v / USER_HZ,
                );
            }
        }
    }
    Ok(())
}

/// The non-CPU lines of `/proc/stat`.
pub fn collect_stat(root: &Root, out: &mut Out) -> Result<(), String> {
    let text = read(root, "stat")?;
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(key), Some(v)) = (f.next(), f.next()) else {
            continue;
        };
        let name = match key {
            "btime" => "node_boot_time_seconds",
            "ctxt" => "node_context_switches_total",
            "processes" => "node_forks_total",
            "procs_running" => "node_procs_running",
            "procs_blocked" => "node_procs_blocked",
            "intr" => "node_intr_total",
            _ => continue,
        };
        out.add(name, &[], num(v, key)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::fixtures;

    #[test]
    fn cpu_seconds_are_per_cpu_and_mode_in_seconds() {
        let mut out = Out::new(0);
        collect(&fixtures::root(), &mut out).unwrap();
        collect_stat(&fixtures::root(), &mut out).unwrap();
        let find = |name: &str, pairs: &[(&str, &str)]| {
            out.series
                .iter()
                .find(|s| {
                    s.labels.metric_name() == Some(name)
                        && pairs.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
                })
                .map(|s| s.samples[0].1)
        };
        assert_eq!(
            find("node_cpu_seconds_total", &[("cpu", "1"), ("mode", "idle")]),
            Some(2000.0)
        );
        assert_eq!(
            find("node_cpu_seconds_total", &[("cpu", "0"), ("mode", "steal")]),
            Some(0.08)
        );
        assert_eq!(
            find(
                "node_cpu_guest_seconds_total",
                &[("cpu", "0"), ("mode", "user")]
            ),
            Some(0.0)
        );
        assert_eq!(find("node_boot_time_seconds", &[]), Some(1_764_000_000.0));
        assert_eq!(find("node_procs_running", &[]), Some(3.0));
        assert_eq!(
            out.series
                .iter()
                .filter(|s| s.labels.metric_name() == Some("node_cpu_seconds_total"))
                .count(),
            16
        );
    }
}
