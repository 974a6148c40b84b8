//! `/proc/diskstats`: per-device I/O counters as node_exporter names them.

use super::{Out, Root, num, read};

/// Sector size the kernel uses in diskstats, whatever the device's real one.
const SECTOR: f64 = 512.0;

/// node_exporter's default device exclusion: partitions, RAM disks, loop devices, floppies.
fn ignored(dev: &str) -> bool {
    let digits = dev.trim_end_matches(|c: char| c.is_ascii_digit());
    let has_number = digits.len() < dev.len();
    if ["ram", "zram", "loop", "fd"]
        .iter()
        .any(|p| digits == *p && has_number)
    {
        return true;
    }
    // sda1, vdb2, hda3, xvda1: a partition of a whole disk
    let whole_disk = |p: &str| {
        digits
            .strip_prefix(p)
            .is_some_and(|rest| rest.len() == 1 && rest.as_bytes()[0].is_ascii_lowercase())
    };
    if has_number
        && ["h", "s", "v", "xv"]
            .iter()
            .any(|p| whole_disk(&format!("{p}d")))
    {
        return true;
    }
    // nvme0n1p1
    if has_number && let Some(rest) = digits.strip_prefix("nvme") {
        return rest.ends_with('p') && rest.contains('n');
    }
    false
}

/// The diskstats columns after major, minor and name: (index, metric, scale).
const FIELDS: &[(usize, &str, f64)] = &[
    (0, "node_disk_reads_completed_total", 1.0),
    (1, "node_disk_reads_merged_total", 1.0),
    (2, "node_disk_read_bytes_total", SECTOR),
    (3, "node_disk_read_time_seconds_total", 0.001),
    (4, "node_disk_writes_completed_total", 1.0),
    (5, "node_disk_writes_merged_total", 1.0),
    (6, "node_disk_written_bytes_total", SECTOR),
    (7, "node_disk_write_time_seconds_total", 0.001),
    (8, "node_disk_io_now", 1.0),
    (9, "node_disk_io_time_seconds_total", 0.001),
    (10, "node_disk_io_time_weighted_seconds_total", 0.001),
    (11, "node_disk_discards_completed_total", 1.0),
    (12, "node_disk_discards_merged_total", 1.0),
    (13, "node_disk_discarded_sectors_total", 1.0),
    (14, "node_disk_discard_time_seconds_total", 0.001),
    (15, "node_disk_flush_requests_total", 1.0),
    (16, "node_disk_flush_requests_time_seconds_total", 0.001),
];

/// `node_disk_*{device}`.
pub fn collect(root: &Root, out: &mut Out) -> Result<(), String> {
    let text = read(root, "diskstats")?;
    for line in text.lines() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.len() < 14 {
            continue;
        }
        let dev = f[2];
        if ignored(dev) {
            continue;
        }
        for &(i, name, scale) in FIELDS {
            if let Some(v) = f.get(3 + i) {
                out.add(name, &[("device", dev)], num(v, name)? * scale);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_and_virtual_devices_are_ignored_like_node_exporter() {
        for d in [
            "sda1",
            "vda2",
            "xvda1",
            "nvme0n1p1",
            "loop0",
            "ram1",
            "zram0",
        ] {
            assert!(ignored(d), "{d}");
        }
        for d in ["sda", "vda", "nvme0n1", "dm-0", "md0", "sr0"] {
            assert!(!ignored(d), "{d}");
        }
    }
}
