//! Pressure stall information (`/proc/pressure/{cpu,io,memory}`), as node_exporter's
//! `pressure` collector exports it: the `total` of the `some` line (time some task waited)
//! and of the `full` line (time no task could progress; not for cpu, as node_exporter 1.5),
//! microseconds as seconds.

use super::CollectError;
use super::{Out, Root, num, read};

/// Per resource file, `(line, metric)`.
const SERIES: &[(&str, &[(&str, &str)])] = &[
    (
        "cpu",
        &[("some", "node_pressure_cpu_waiting_seconds_total")],
    ),
    (
        "io",
        &[
            ("some", "node_pressure_io_waiting_seconds_total"),
            ("full", "node_pressure_io_stalled_seconds_total"),
        ],
    ),
    (
        "memory",
        &[
            ("some", "node_pressure_memory_waiting_seconds_total"),
            ("full", "node_pressure_memory_stalled_seconds_total"),
        ],
    ),
    // Kernels from 6.1 with CONFIG_IRQ_TIME_ACCOUNTING; node_exporter reports it from 1.8.
    (
        "irq",
        &[("full", "node_pressure_irq_stalled_seconds_total")],
    ),
];

/// The `total=` (microseconds) of line `kind` (`some` or `full`) in a pressure file.
pub fn total_us(text: &str, kind: &str) -> Result<Option<f64>, CollectError> {
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        if f.next() != Some(kind) {
            continue;
        }
        for field in f {
            if let Some(v) = field.strip_prefix("total=") {
                return Ok(Some(num(v, "pressure total")?));
            }
        }
        return Err(format!("pressure line without total: {line:?}").into());
    }
    Ok(None)
}

/// The `node_pressure_*` counters. A kernel without PSI (no `/proc/pressure`) yields nothing
/// and no error, as node_exporter stays quiet about it.
pub fn collect(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    if !root.proc.join("pressure").is_dir() {
        return Ok(());
    }
    for (resource, lines) in SERIES {
        if *resource == "irq" && !root.proc.join("pressure/irq").exists() {
            continue;
        }
        let text = read(root, &format!("pressure/{resource}"))?;
        for (kind, metric) in *lines {
            if let Some(us) = total_us(&text, kind)? {
                // Divided as node_exporter divides, so the figures are equal to the bit.
                out.add(metric, &[], us / 1000.0 / 1000.0);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPU: &str = "some avg10=3.88 avg60=6.97 avg300=2.91 total=1002635390\n\
                       full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";

    #[test]
    fn totals_are_read_per_line() {
        assert_eq!(total_us(CPU, "some").ok(), Some(Some(1_002_635_390.0)));
        assert_eq!(total_us(CPU, "full").ok(), Some(Some(0.0)));
        // Kernels before 5.13 have no `full` line for cpu.
        assert_eq!(
            total_us("some avg10=0.00 total=5\n", "full").ok(),
            Some(None)
        );
        assert!(total_us("some avg10=0.00 total=x\n", "some").is_err());
        assert!(total_us("some avg10=0.00\n", "some").is_err());
    }

    #[test]
    fn a_kernel_without_psi_yields_nothing_and_no_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = Out::new(1);
        let root = Root {
            proc: dir.path().to_path_buf(),
            sys: dir.path().to_path_buf(),
            rootfs: dir.path().to_path_buf(),
        };
        assert!(collect(&root, &mut out).is_ok());
        assert!(out.series.is_empty());
        std::fs::create_dir(dir.path().join("pressure")).unwrap();
        for r in ["cpu", "io", "memory"] {
            std::fs::write(dir.path().join("pressure").join(r), CPU).unwrap();
        }
        collect(&root, &mut out).unwrap();
        assert_eq!(out.series.len(), 5);
        assert_eq!(
            out.series[0].samples[0].1,
            1_002_635_390.0 / 1000.0 / 1000.0
        );
    }
}
