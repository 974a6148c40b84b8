//! Storage beyond diskstats: software RAID from `/proc/mdstat` (node_exporter's `mdadm`), NVMe
//! controllers from `/sys/class/nvme` (`nvme`) and XFS statistics (`xfs`). Hosts without them
//! yield nothing.

use std::io::ErrorKind;

use super::CollectError;
use super::{Out, Root, list_dir};

/// One md array as `/proc/mdstat` describes it.
#[derive(Debug, PartialEq)]
pub struct MdArray {
    /// `md0`.
    pub name: String,
    /// `active`, `inactive`, `recovering`, `resyncing` or `checking`.
    pub state: String,
    /// Member disks in use.
    pub active: u64,
    /// Member disks the array is built for.
    pub total: u64,
    /// Members marked `(F)`.
    pub failed: u64,
    /// Members marked `(S)`.
    pub spare: u64,
    /// Size in 1 KiB blocks.
    pub blocks: u64,
    /// Blocks in sync (all of them unless a recovery, resync or check runs).
    pub synced: u64,
}

/// Parses `/proc/mdstat` as node_exporter (procfs 0.8) reads it.
pub fn parse_mdstat(text: &str) -> Result<Vec<MdArray>, CollectError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty()
            || line.starts_with(' ')
            || line.starts_with("Personalities")
            || line.starts_with("unused")
        {
            continue;
        }
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        if fields.len() < 3 {
            return Err(format!("/proc/mdstat: short device line {line:?}").into());
        }
        let name = fields[0].to_string();
        let status = lines
            .get(i + 1)
            .ok_or_else(|| format!("/proc/mdstat: no status line for {name}"))?;
        let blocks: u64 = status
            .split_ascii_whitespace()
            .next()
            .and_then(|b| b.parse().ok())
            .ok_or_else(|| format!("/proc/mdstat: bad status line {status:?}"))?;
        let (active, total) = if line.contains("raid0") || line.contains("linear") {
            let n = line.matches('[').count() as u64;
            (n, n)
        } else if line.contains("inactive") {
            (0, 0)
        } else {
            // `... [2/1] [U_]`
            status
                .split_ascii_whitespace()
                .find_map(|f| {
                    let (t, a) = f.strip_prefix('[')?.strip_suffix(']')?.split_once('/')?;
                    Some((a.parse::<u64>().ok()?, t.parse::<u64>().ok()?))
                })
                .ok_or_else(|| format!("/proc/mdstat: no [n/m] in {status:?}"))?
        };
        let mut state = fields[2].to_string();
        let mut synced = blocks;
        let mut sync_line = lines.get(i + 2).copied().unwrap_or("");
        if sync_line.contains("bitmap") {
            sync_line = lines.get(i + 3).copied().unwrap_or("");
        }
        let activity = [
            ("recovery", "recovering"),
            ("check", "checking"),
            ("resync", "resyncing"),
        ]
        .iter()
        .find(|(k, _)| sync_line.contains(k));
        if let Some((_, s)) = activity {
            state = (*s).to_string();
            synced = if sync_line.contains("PENDING") || sync_line.contains("DELAYED") {
                0
            } else {
                // `... = 12.6% (37043392/293039104) finish=...`
                sync_line
                    .split_once('(')
                    .and_then(|(_, r)| r.split_once('/'))
                    .and_then(|(n, _)| n.parse().ok())
                    .ok_or_else(|| format!("/proc/mdstat: bad sync line {sync_line:?}"))?
            };
        }
        out.push(MdArray {
            name,
            state,
            active,
            total,
            failed: line.matches("(F)").count() as u64,
            spare: line.matches("(S)").count() as u64,
            blocks,
            synced,
        });
    }
    Ok(out)
}

/// node_exporter's `mdadm`: `node_md_state{device,state}` (one of active, inactive,
/// recovering, resync, check is 1), `node_md_disks{device,state}`, `node_md_disks_required`,
/// `node_md_blocks`, `node_md_blocks_synced`.
pub fn collect_mdadm(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    let text = match root.proc_file("mdstat") {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CollectError::Read {
                path: root.proc.join("mdstat"),
                source,
            });
        }
    };
    for md in parse_mdstat(&text)? {
        let d = md.name.as_str();
        out.add("node_md_disks_required", &[("device", d)], md.total as f64);
        for (state, n) in [
            ("active", md.active),
            ("failed", md.failed),
            ("spare", md.spare),
        ] {
            out.add(
                "node_md_disks",
                &[("device", d), ("state", state)],
                n as f64,
            );
        }
        for (label, activity) in [
            ("active", "active"),
            ("inactive", "inactive"),
            ("recovering", "recovering"),
            ("resync", "resyncing"),
            ("check", "checking"),
        ] {
            let v = f64::from(u8::from(md.state == activity));
            out.add("node_md_state", &[("device", d), ("state", label)], v);
        }
        out.add("node_md_blocks", &[("device", d)], md.blocks as f64);
        out.add("node_md_blocks_synced", &[("device", d)], md.synced as f64);
    }
    Ok(())
}

/// node_exporter's `nvme`: `node_nvme_info{device,firmware_revision,model,serial,state} 1`.
pub fn collect_nvme(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    let Some(devices) = list_dir(&root.sys.join("class/nvme"))? else {
        return Ok(());
    };
    for (dev, _) in devices {
        let a = |f: &str| {
            root.sys_file(&format!("class/nvme/{dev}/{f}"))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        out.add(
            "node_nvme_info",
            &[
                ("device", dev.as_str()),
                ("firmware_revision", &a("firmware_rev")),
                ("model", &a("model")),
                ("serial", &a("serial")),
                ("state", &a("state")),
            ],
            1.0,
        );
    }
    Ok(())
}

/// `(stats line, position, node_xfs_<name>)`: the XFS runtime statistics node_exporter reports.
const XFS: &[(&str, usize, &str)] = &[
    (
        "extent_alloc",
        0,
        "extent_allocation_extents_allocated_total",
    ),
    (
        "extent_alloc",
        1,
        "extent_allocation_blocks_allocated_total",
    ),
    ("extent_alloc", 2, "extent_allocation_extents_freed_total"),
    ("extent_alloc", 3, "extent_allocation_blocks_freed_total"),
    ("abt", 0, "allocation_btree_lookups_total"),
    ("abt", 1, "allocation_btree_compares_total"),
    ("abt", 2, "allocation_btree_records_inserted_total"),
    ("abt", 3, "allocation_btree_records_deleted_total"),
    ("blk_map", 0, "block_mapping_reads_total"),
    ("blk_map", 1, "block_mapping_writes_total"),
    ("blk_map", 2, "block_mapping_unmaps_total"),
    ("blk_map", 3, "block_mapping_extent_list_insertions_total"),
    ("blk_map", 4, "block_mapping_extent_list_deletions_total"),
    ("blk_map", 5, "block_mapping_extent_list_lookups_total"),
    ("blk_map", 6, "block_mapping_extent_list_compares_total"),
    ("bmbt", 0, "block_map_btree_lookups_total"),
    ("bmbt", 1, "block_map_btree_compares_total"),
    ("bmbt", 2, "block_map_btree_records_inserted_total"),
    ("bmbt", 3, "block_map_btree_records_deleted_total"),
    ("dir", 0, "directory_operation_lookup_total"),
    ("dir", 1, "directory_operation_create_total"),
    ("dir", 2, "directory_operation_remove_total"),
    ("dir", 3, "directory_operation_getdents_total"),
    ("ig", 0, "inode_operation_attempts_total"),
    ("ig", 1, "inode_operation_found_total"),
    ("ig", 2, "inode_operation_recycled_total"),
    ("ig", 3, "inode_operation_missed_total"),
    ("ig", 4, "inode_operation_duplicates_total"),
    ("ig", 5, "inode_operation_reclaims_total"),
    ("ig", 6, "inode_operation_attribute_changes_total"),
    ("rw", 0, "write_calls_total"),
    ("rw", 1, "read_calls_total"),
    ("vnodes", 0, "vnode_active_total"),
    ("vnodes", 1, "vnode_allocate_total"),
    ("vnodes", 2, "vnode_get_total"),
    ("vnodes", 3, "vnode_hold_total"),
    ("vnodes", 4, "vnode_release_total"),
    ("vnodes", 5, "vnode_reclaim_total"),
    ("vnodes", 6, "vnode_remove_total"),
];

/// node_exporter's `xfs`: per-filesystem XFS statistics from `/sys/fs/xfs/<device>/stats/stats`
/// as `node_xfs_*_total{device}` (RHEL's default filesystem; hosts without XFS have no such
/// directory).
pub fn collect_xfs(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    let Some(devices) = list_dir(&root.sys.join("fs/xfs"))? else {
        return Ok(());
    };
    for (dev, _) in devices {
        // `stats` (the directory of all filesystems summed) has no stats/stats below it.
        let Ok(text) = root.sys_file(&format!("fs/xfs/{dev}/stats/stats")) else {
            continue;
        };
        for line in text.lines() {
            let mut f = line.split_ascii_whitespace();
            let Some(key) = f.next() else { continue };
            let vals: Vec<&str> = f.collect();
            for (_, i, name) in XFS.iter().filter(|(k, _, _)| *k == key) {
                let Some(v) = vals.get(*i) else {
                    return Err(CollectError::Parse(format!(
                        "xfs {dev}: short {key} line {line:?}"
                    )));
                };
                let v: f64 = v
                    .parse()
                    .map_err(|_| format!("xfs {dev}: bad {key} value {v:?}"))?;
                out.add(&format!("node_xfs_{name}"), &[("device", &dev)], v);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MDSTAT: &str = "\
Personalities : [raid1] [raid6] [raid5] [raid4] [raid0]
md127 : active raid1 sdb1[1] sda1[0]
      1953382464 blocks super 1.2 [2/2] [UU]
      bitmap: 0/15 pages [0KB], 65536KB chunk

md1 : active raid5 sdd1[3](S) sdc1[2] sdb1[1](F) sda1[0]
      585936000 blocks level 5, 64k chunk, algorithm 2 [3/2] [U_U]
      [==>..................]  recovery = 12.6% (37043392/293039104) finish=127.5min speed=33440K/sec

md2 : active raid0 sde1[1] sdf1[0]
      1000 blocks super 1.2 512k chunks

md3 : inactive sdg1[0](S)
      2000 blocks super 1.2

md4 : active raid1 sdh1[1] sdi1[0]
      4000 blocks super 1.2 [2/2] [UU]
      \tresync=DELAYED

unused devices: <none>
";

    #[test]
    fn mdstat_arrays_states_and_sync_progress() {
        let md = parse_mdstat(MDSTAT).unwrap();
        assert_eq!(md.len(), 5);
        assert_eq!(
            md[0],
            MdArray {
                name: "md127".into(),
                state: "active".into(),
                active: 2,
                total: 2,
                failed: 0,
                spare: 0,
                blocks: 1_953_382_464,
                synced: 1_953_382_464,
            }
        );
        assert_eq!(md[1].state, "recovering");
        assert_eq!((md[1].active, md[1].total), (2, 3));
        assert_eq!((md[1].failed, md[1].spare), (1, 1));
        assert_eq!(md[1].synced, 37_043_392);
        assert_eq!((md[2].active, md[2].total), (2, 2));
        assert_eq!((md[3].state.as_str(), md[3].total), ("inactive", 0));
        assert_eq!((md[4].state.as_str(), md[4].synced), ("resyncing", 0));
        assert!(parse_mdstat("md0 : active raid1\n      x blocks\n").is_err());
    }

    #[test]
    fn xfs_statistics_per_device() {
        let dir = tempfile::tempdir().unwrap();
        let root = crate::sources::host::fixtures::tree(dir.path());
        let mut out = Out::new(0);
        collect_xfs(&root, &mut out).unwrap();
        assert!(out.series.is_empty());
        let d = root.sys.join("fs/xfs/dm-0/stats");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::create_dir_all(root.sys.join("fs/xfs/stats")).unwrap();
        std::fs::write(
            d.join("stats"),
            "extent_alloc 92447 97589 92448 93751\nabt 0 0 0 0\n\
             blk_map 1767055 188820 184891 92447 92448 2140766 0\nbmbt 0 0 0 0\n\
             dir 185039 92447 92444 136422\ntrans 706 944304 0\n\
             ig 185045 58807 0 126238 0 33637 22\nrw 107 94045\n\
             vnodes 4294967295 0 0 0 33637 33637 33637 0\nxpc 399724544 92823103 86219234\n",
        )
        .unwrap();
        collect_xfs(&root, &mut out).unwrap();
        let text = crate::sources::host::exposition(&out.series);
        for line in [
            "node_xfs_extent_allocation_blocks_allocated_total{device=\"dm-0\"} 97589",
            "node_xfs_block_mapping_extent_list_lookups_total{device=\"dm-0\"} 2140766",
            "node_xfs_write_calls_total{device=\"dm-0\"} 107",
            "node_xfs_read_calls_total{device=\"dm-0\"} 94045",
            "node_xfs_vnode_active_total{device=\"dm-0\"} 4294967295",
            "node_xfs_inode_operation_attribute_changes_total{device=\"dm-0\"} 22",
            "# TYPE node_xfs_read_calls_total counter",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert_eq!(text.matches("node_xfs_").count(), 2 * XFS.len());
    }

    #[test]
    fn md_and_nvme_series() {
        let dir = tempfile::tempdir().unwrap();
        let root = crate::sources::host::fixtures::tree(dir.path());
        let mut out = Out::new(0);
        collect_mdadm(&root, &mut out).unwrap();
        collect_nvme(&root, &mut out).unwrap();
        assert!(out.series.is_empty());
        std::fs::create_dir_all(&root.proc).unwrap();
        std::fs::write(root.proc.join("mdstat"), MDSTAT).unwrap();
        let nvme = root.sys.join("class/nvme/nvme0");
        std::fs::create_dir_all(&nvme).unwrap();
        for (f, v) in [
            ("model", "Samsung SSD 970 EVO 1TB                 \n"),
            ("serial", "S1\n"),
            ("firmware_rev", "2B2QEXE7\n"),
            ("state", "live\n"),
        ] {
            std::fs::write(nvme.join(f), v).unwrap();
        }
        collect_mdadm(&root, &mut out).unwrap();
        collect_nvme(&root, &mut out).unwrap();
        let text = crate::sources::host::exposition(&out.series);
        for line in [
            "node_md_state{device=\"md1\",state=\"recovering\"} 1",
            "node_md_state{device=\"md1\",state=\"active\"} 0",
            "node_md_state{device=\"md4\",state=\"resync\"} 1",
            "node_md_disks{device=\"md1\",state=\"failed\"} 1",
            "node_md_disks_required{device=\"md1\"} 3",
            "node_md_blocks_synced{device=\"md1\"} 37043392",
            "node_nvme_info{device=\"nvme0\",firmware_revision=\"2B2QEXE7\",model=\"Samsung SSD 970 EVO 1TB\",serial=\"S1\",state=\"live\"} 1",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
