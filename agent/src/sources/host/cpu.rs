//! `/proc/stat`: per-CPU time by mode, boot time, context switches, forks, running and
//! blocked processes, interrupts.

use super::CollectError;
use super::{Out, Root, num, read};

/// The kernel's USER_HZ: /proc/stat counts in 1/100 s on every Linux architecture.
const USER_HZ: f64 = 100.0;
const MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

/// node_exporter's `cpu` collector: `node_cpu_seconds_total{cpu,mode}`,
/// `node_cpu_guest_seconds_total{cpu,mode}`, and from `/sys` the thermal throttle counters and
/// `node_cpu_isolated{cpu}`.
pub fn collect(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    collect_times(root, out)?;
    collect_isolated(root, out);
    collect_throttles(root, out);
    Ok(())
}

/// `cpu<N>` directories under `/sys/devices/system/cpu`, as `(N, path)` sorted by N.
fn sys_cpus(root: &Root) -> Vec<(u32, std::path::PathBuf)> {
    let Ok(dir) = std::fs::read_dir(root.sys.join("devices/system/cpu")) else {
        return Vec::new();
    };
    let mut cpus: Vec<(u32, std::path::PathBuf)> = dir
        .filter_map(|e| {
            let e = e.ok()?;
            let n = e.file_name().to_str()?.strip_prefix("cpu")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    cpus.sort();
    cpus
}

fn read_u64(path: &std::path::Path) -> Option<u64> {
    super::read_text(path).ok()?.trim().parse().ok()
}

/// A kernel CPU list (`0-3,8,10-11`) as CPU numbers; `None` if malformed.
fn cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 65_536 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

/// `node_cpu_isolated{cpu} 1` for every CPU isolated from the scheduler (`isolcpus=`).
fn collect_isolated(root: &Root, out: &mut Out) {
    let Ok(text) = root.sys_file("devices/system/cpu/isolated") else {
        return;
    };
    for cpu in cpu_list(&text).unwrap_or_default() {
        out.add("node_cpu_isolated", &[("cpu", &cpu.to_string())], 1.0);
    }
}

/// `node_cpu_core_throttles_total{package,core}` and `node_cpu_package_throttles_total{package}`
/// from `thermal_throttle/` (x86 with thermal monitoring; absent in most VMs): each core and
/// package read once, through its first CPU.
fn collect_throttles(root: &Root, out: &mut Out) {
    let mut seen_core = std::collections::BTreeSet::new();
    let mut seen_package = std::collections::BTreeSet::new();
    for (_, path) in sys_cpus(root) {
        let (Some(package), Some(core)) = (
            read_u64(&path.join("topology/physical_package_id")),
            read_u64(&path.join("topology/core_id")),
        ) else {
            continue;
        };
        let (p, c) = (package.to_string(), core.to_string());
        if seen_core.insert((package, core))
            && let Some(n) = read_u64(&path.join("thermal_throttle/core_throttle_count"))
        {
            out.add(
                "node_cpu_core_throttles_total",
                &[("core", &c), ("package", &p)],
                n as f64,
            );
        }
        if !seen_package.contains(&package)
            && let Some(n) = read_u64(&path.join("thermal_throttle/package_throttle_count"))
        {
            seen_package.insert(package);
            out.add(
                "node_cpu_package_throttles_total",
                &[("package", &p)],
                n as f64,
            );
        }
    }
}

/// node_exporter's `cpufreq`: `node_cpu_frequency{,_min,_max}_hertz{cpu}` (the hardware's) and
/// `node_cpu_scaling_frequency{,_min,_max}_hertz{cpu}` (the governor's), from kHz.
pub fn collect_cpufreq(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    const FILES: [(&str, &str); 6] = [
        ("cpuinfo_cur_freq", "node_cpu_frequency_hertz"),
        ("cpuinfo_min_freq", "node_cpu_frequency_min_hertz"),
        ("cpuinfo_max_freq", "node_cpu_frequency_max_hertz"),
        ("scaling_cur_freq", "node_cpu_scaling_frequency_hertz"),
        ("scaling_min_freq", "node_cpu_scaling_frequency_min_hertz"),
        ("scaling_max_freq", "node_cpu_scaling_frequency_max_hertz"),
    ];
    for (n, path) in sys_cpus(root) {
        let freq = path.join("cpufreq");
        if !freq.is_dir() {
            continue;
        }
        let cpu = n.to_string();
        for (file, metric) in FILES {
            if let Some(khz) = read_u64(&freq.join(file)) {
                out.add(metric, &[("cpu", &cpu)], khz as f64 * 1000.0);
            }
        }
    }
    Ok(())
}

/// node_exporter's `schedstat`: `node_schedstat_{running,waiting}_seconds_total{cpu}` and
/// `node_schedstat_timeslices_total{cpu}` from `/proc/schedstat` (kernels built without
/// scheduler statistics have no such file: nothing, no error).
pub fn collect_schedstat(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    let text = match root.proc_file("schedstat") {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CollectError::Read {
                path: root.proc.join("schedstat"),
                source,
            });
        }
    };
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let Some(cpu) = f.next().and_then(|c| c.strip_prefix("cpu")) else {
            continue;
        };
        let vals: Vec<&str> = f.collect();
        // cpuN followed by nine counters; the last three are run time (ns), wait time (ns)
        // and timeslices.
        if cpu.is_empty() || vals.len() < 9 || !cpu.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let l = [("cpu", cpu)];
        out.add(
            "node_schedstat_running_seconds_total",
            &l,
            num(vals[6], "schedstat")? / 1e9,
        );
        out.add(
            "node_schedstat_waiting_seconds_total",
            &l,
            num(vals[7], "schedstat")? / 1e9,
        );
        out.add(
            "node_schedstat_timeslices_total",
            &l,
            num(vals[8], "schedstat")?,
        );
    }
    Ok(())
}

fn collect_times(root: &Root, out: &mut Out) -> Result<(), CollectError> {
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
pub fn collect_stat(root: &Root, out: &mut Out) -> Result<(), CollectError> {
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
    use crate::sources::host::fixtures;

    #[test]
    fn cpu_lists_parse_like_the_kernel_writes_them() {
        assert_eq!(cpu_list("0-2,5,8-9\n"), Some(vec![0, 1, 2, 5, 8, 9]));
        assert_eq!(cpu_list("\n"), Some(vec![]));
        assert_eq!(cpu_list("3-1"), None);
        assert_eq!(cpu_list("x"), None);
    }

    #[test]
    fn sysfs_cpu_frequency_throttles_and_schedstat() {
        let dir = tempfile::tempdir().unwrap();
        let root = crate::sources::host::fixtures::tree(dir.path());
        let w = |rel: &str, text: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        for cpu in 0..2 {
            let c = format!("sys/devices/system/cpu/cpu{cpu}");
            w(&format!("{c}/cpufreq/scaling_cur_freq"), "2400000\n");
            w(&format!("{c}/cpufreq/cpuinfo_max_freq"), "3600000\n");
            w(&format!("{c}/topology/physical_package_id"), "0\n");
            // Two hyperthreads of one core.
            w(&format!("{c}/topology/core_id"), "0\n");
            w(&format!("{c}/thermal_throttle/core_throttle_count"), "7\n");
            w(
                &format!("{c}/thermal_throttle/package_throttle_count"),
                "9\n",
            );
        }
        w("sys/devices/system/cpu/isolated", "1\n");
        w(
            "proc/schedstat",
            "version 15\ntimestamp 4297299139\ncpu0 0 0 0 0 0 0 2500000000 1500000000 42\n\
             domain0 3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
        );
        let mut out = Out::new(0);
        collect_cpufreq(&root, &mut out).unwrap();
        collect_throttles(&root, &mut out);
        collect_isolated(&root, &mut out);
        collect_schedstat(&root, &mut out).unwrap();
        let text = crate::sources::host::exposition(&out.series);
        for line in [
            "node_cpu_scaling_frequency_hertz{cpu=\"1\"} 2400000000",
            "node_cpu_frequency_max_hertz{cpu=\"0\"} 3600000000",
            "node_cpu_core_throttles_total{core=\"0\",package=\"0\"} 7",
            "node_cpu_package_throttles_total{package=\"0\"} 9",
            "node_cpu_isolated{cpu=\"1\"} 1",
            "node_schedstat_running_seconds_total{cpu=\"0\"} 2.5",
            "node_schedstat_waiting_seconds_total{cpu=\"0\"} 1.5",
            "node_schedstat_timeslices_total{cpu=\"0\"} 42",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert_eq!(text.matches("node_cpu_core_throttles_total{").count(), 1);
        assert!(!text.contains("node_cpu_frequency_hertz"));
    }

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
