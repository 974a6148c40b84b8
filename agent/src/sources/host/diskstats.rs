//! `/proc/diskstats`: per-device I/O counters as node_exporter names them.

use super::CollectError;
use super::{Out, Root, num, read};

/// Sector size the kernel uses in diskstats, whatever the device's real one.
const SECTOR: f64 = 512.0;

/// node_exporter's default device exclusion: partitions, RAM disks, loop devices, floppies.
fn ignored(dev: &str) -> bool {
    let digits = dev.trim_end_matches(|c: char| c.is_ascii_digit());
    let has_number = digits.len() < dev.len();
    if ["ram", "loop", "fd"]
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

/// The `E:KEY=value` properties of udev's database entry for block device `major:minor`
/// (`/run/udev/data/b<major>:<minor>`); empty without udev (containers, minimal VMs).
fn udev_properties(root: &Root, major: &str, minor: &str) -> Vec<(String, String)> {
    let path = root.rootfs.join(format!("run/udev/data/b{major}:{minor}"));
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.strip_prefix("E:")?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `node_disk_info`, and where udev knows them `node_disk_filesystem_info`,
/// `node_disk_device_mapper_info` and the ATA gauges, as node_exporter 1.5 reads them.
fn info(root: &Root, dev: &str, major: &str, minor: &str, out: &mut Out) {
    let props = udev_properties(root, major, minor);
    let p = |k: &str| {
        props
            .iter()
            .find(|(key, _)| key == k)
            .map_or("", |(_, v)| v.as_str())
    };
    out.add(
        "node_disk_info",
        &[
            ("device", dev),
            ("major", major),
            ("minor", minor),
            ("path", p("ID_PATH")),
            ("wwn", p("ID_WWN")),
            ("model", p("ID_MODEL")),
            ("serial", p("ID_SERIAL_SHORT")),
            ("revision", p("ID_REVISION")),
        ],
        1.0,
    );
    if !p("ID_FS_TYPE").is_empty() {
        out.add(
            "node_disk_filesystem_info",
            &[
                ("device", dev),
                ("type", p("ID_FS_TYPE")),
                ("usage", p("ID_FS_USAGE")),
                ("uuid", p("ID_FS_UUID")),
                ("version", p("ID_FS_VERSION")),
            ],
            1.0,
        );
    }
    if !p("DM_NAME").is_empty() {
        out.add(
            "node_disk_device_mapper_info",
            &[
                ("device", dev),
                ("name", p("DM_NAME")),
                ("uuid", p("DM_UUID")),
                ("vg_name", p("DM_VG_NAME")),
                ("lv_name", p("DM_LV_NAME")),
                ("lv_layer", p("DM_LV_LAYER")),
            ],
            1.0,
        );
    }
    if !p("ID_ATA").is_empty() {
        for (key, metric) in [
            ("ID_ATA_WRITE_CACHE", "node_disk_ata_write_cache"),
            (
                "ID_ATA_WRITE_CACHE_ENABLED",
                "node_disk_ata_write_cache_enabled",
            ),
            (
                "ID_ATA_ROTATION_RATE_RPM",
                "node_disk_ata_rotation_rate_rpm",
            ),
        ] {
            if let Ok(v) = p(key).parse::<f64>() {
                out.add(metric, &[("device", dev)], v);
            }
        }
    }
}

/// `node_disk_*{device}`.
pub fn collect(root: &Root, out: &mut Out) -> Result<(), CollectError> {
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
        info(root, dev, f[0], f[1], out);
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
    fn udev_properties_become_info_series() {
        let dir = tempfile::tempdir().unwrap();
        let root = crate::sources::host::fixtures::tree(dir.path());
        std::fs::create_dir_all(&root.proc).unwrap();
        std::fs::write(
            root.proc.join("diskstats"),
            "   8       0 sda 1 0 8 1 2 0 16 2 0 3 3 0 0 0 0 0 0\n   8       1 sda1 1 0 8 1 2 0 16 2 0 3 3\n",
        )
        .unwrap();
        let udev = dir.path().join("run/udev/data");
        std::fs::create_dir_all(&udev).unwrap();
        std::fs::write(
            udev.join("b8:0"),
            "S:disk/by-id/ata-X\nE:ID_MODEL=Samsung_SSD\nE:ID_SERIAL_SHORT=S1\nE:ID_ATA=1\n\
             E:ID_ATA_ROTATION_RATE_RPM=0\nE:ID_FS_TYPE=ext4\nE:ID_FS_UUID=u-1\nE:ID_PATH=pci-0000:00:1f.2-ata-1\n",
        )
        .unwrap();
        let mut out = Out::new(0);
        collect(&root, &mut out).unwrap();
        let text = crate::sources::host::exposition(&out.series);
        for line in [
            "node_disk_info{device=\"sda\",major=\"8\",minor=\"0\",model=\"Samsung_SSD\",path=\"pci-0000:00:1f.2-ata-1\",serial=\"S1\"} 1",
            "node_disk_filesystem_info{device=\"sda\",type=\"ext4\",uuid=\"u-1\"} 1",
            "node_disk_ata_rotation_rate_rpm{device=\"sda\"} 0",
            "node_disk_written_bytes_total{device=\"sda\"} 8192",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert!(!text.contains("sda1"));
        assert!(!text.contains("ata_write_cache"));
    }

    #[test]
    fn partitions_and_virtual_devices_are_ignored_like_node_exporter() {
        for d in ["sda1", "vda2", "xvda1", "nvme0n1p1", "loop0", "ram1"] {
            assert!(ignored(d), "{d}");
        }
        // node_exporter's pattern is anchored: `zram0` is not `ram0`.
        for d in ["sda", "vda", "nvme0n1", "dm-0", "md0", "sr0", "zram0"] {
            assert!(!ignored(d), "{d}");
        }
    }
}
