//! The network beyond `/proc/net/dev` and the SNMP counters: interface properties from
//! `/sys/class/net` (node_exporter's `netclass`), the ARP table (`arp`), connection tracking
//! (`conntrack`), per-CPU packet processing (`softnet`) and UDP socket queues (`udp_queues`).

use std::io::ErrorKind;

use super::CollectError;
use super::{Out, Root, list_dir, num, read};

/// `node_arp_entries{device}`: ARP table entries per interface.
pub fn collect_arp(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    let text = read(root, "net/arp")?;
    let mut per_device: Vec<(&str, f64)> = Vec::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_ascii_whitespace().collect();
        if cols.len() < 6 {
            return Err(CollectError::Parse(format!(
                "/proc/net/arp: unexpected line {line:?}"
            )));
        }
        if cols[0] == "IP" {
            continue;
        }
        let dev = cols[cols.len() - 1];
        match per_device.iter_mut().find(|(d, _)| *d == dev) {
            Some((_, n)) => *n += 1.0,
            None => per_device.push((dev, 1.0)),
        }
    }
    for (dev, n) in per_device {
        out.add("node_arp_entries", &[("device", dev)], n);
    }
    Ok(())
}

/// The per-CPU statistics of `/proc/net/stat/nf_conntrack` that node_exporter sums.
const CONNTRACK_STATS: [&str; 8] = [
    "found",
    "invalid",
    "ignore",
    "insert",
    "insert_failed",
    "drop",
    "early_drop",
    "search_restart",
];

/// `node_nf_conntrack_entries`, `_entries_limit` and `node_nf_conntrack_stat_*` (summed over
/// CPUs). A host without the conntrack module has none of these files: nothing, no error.
pub fn collect_conntrack(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    let count = match root.proc_file("sys/net/netfilter/nf_conntrack_count") {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CollectError::Read {
                path: root.proc.join("sys/net/netfilter/nf_conntrack_count"),
                source,
            });
        }
    };
    out.add(
        "node_nf_conntrack_entries",
        &[],
        num(count.trim(), "nf_conntrack_count")?,
    );
    let max = read(root, "sys/net/netfilter/nf_conntrack_max")?;
    out.add(
        "node_nf_conntrack_entries_limit",
        &[],
        num(max.trim(), "nf_conntrack_max")?,
    );
    let text = read(root, "net/stat/nf_conntrack")?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_ascii_whitespace()
        .collect();
    let mut sums = [0.0f64; CONNTRACK_STATS.len()];
    for line in lines {
        let vals: Vec<&str> = line.split_ascii_whitespace().collect();
        if vals.len() != header.len() {
            return Err(CollectError::Parse(format!(
                "/proc/net/stat/nf_conntrack: {} columns, header has {}",
                vals.len(),
                header.len()
            )));
        }
        for (i, stat) in CONNTRACK_STATS.iter().enumerate() {
            if let Some(col) = header.iter().position(|h| h == stat) {
                sums[i] += hex(vals[col], "nf_conntrack")?;
            }
        }
    }
    for (stat, v) in CONNTRACK_STATS.iter().zip(sums) {
        out.add(&format!("node_nf_conntrack_stat_{stat}"), &[], v);
    }
    Ok(())
}

fn hex(s: &str, what: &str) -> Result<f64, String> {
    u64::from_str_radix(s, 16)
        .map(|v| v as f64)
        .map_err(|_| format!("cannot parse {what} value {s:?} as hexadecimal"))
}

/// `node_softnet_{processed,dropped,times_squeezed}_total{cpu}` from `/proc/net/softnet_stat`
/// (one line per CPU, numbered by line as node_exporter numbers them).
pub fn collect_softnet(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    let text = read(root, "net/softnet_stat")?;
    for (i, line) in text.lines().enumerate() {
        let cols: Vec<&str> = line.split_ascii_whitespace().collect();
        if cols.len() < 9 {
            return Err(CollectError::Parse(format!(
                "/proc/net/softnet_stat: {} columns, at least 9 expected",
                cols.len()
            )));
        }
        let cpu = i.to_string();
        for (col, name) in [
            (0, "node_softnet_processed_total"),
            (1, "node_softnet_dropped_total"),
            (2, "node_softnet_times_squeezed_total"),
        ] {
            out.add(name, &[("cpu", &cpu)], hex(cols[col], "softnet_stat")?);
        }
        // Columns 10 and 11 (kernels from 2.6.36 and 3.11), reported by node_exporter from 1.6.
        for (col, name) in [
            (9, "node_softnet_received_rps_total"),
            (10, "node_softnet_flow_limit_count_total"),
        ] {
            if let Some(v) = cols.get(col) {
                out.add(name, &[("cpu", &cpu)], hex(v, "softnet_stat")?);
            }
        }
    }
    Ok(())
}

/// `node_udp_queues{ip,queue}`: bytes queued in all UDP sockets, per IP version.
pub fn collect_udp_queues(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    for (file, ip) in [("net/udp", "v4"), ("net/udp6", "v6")] {
        let text = match root.proc_file(file) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(CollectError::Read {
                    path: root.proc.join(file),
                    source,
                });
            }
        };
        let (mut tx, mut rx) = (0.0, 0.0);
        for line in text.lines().skip(1) {
            let Some(queues) = line.split_ascii_whitespace().nth(4) else {
                return Err(CollectError::Parse(format!(
                    "/proc/{file}: short line {line:?}"
                )));
            };
            let Some((t, r)) = queues.split_once(':') else {
                return Err(CollectError::Parse(format!(
                    "/proc/{file}: bad queue field {queues:?}"
                )));
            };
            tx += hex(t, file)?;
            rx += hex(r, file)?;
        }
        out.add("node_udp_queues", &[("ip", ip), ("queue", "rx")], rx);
        out.add("node_udp_queues", &[("ip", ip), ("queue", "tx")], tx);
    }
    Ok(())
}

/// `/sys/class/net/<dev>` attributes reported as `node_network_<metric>{device}`, as
/// node_exporter's `netclass` collector names them.
const NETCLASS_GAUGES: [(&str, &str); 14] = [
    ("addr_assign_type", "node_network_address_assign_type"),
    ("carrier", "node_network_carrier"),
    ("carrier_changes", "node_network_carrier_changes_total"),
    ("carrier_up_count", "node_network_carrier_up_changes_total"),
    (
        "carrier_down_count",
        "node_network_carrier_down_changes_total",
    ),
    ("dev_id", "node_network_device_id"),
    ("dormant", "node_network_dormant"),
    ("flags", "node_network_flags"),
    ("ifindex", "node_network_iface_id"),
    ("iflink", "node_network_iface_link"),
    ("link_mode", "node_network_iface_link_mode"),
    ("mtu", "node_network_mtu_bytes"),
    ("name_assign_type", "node_network_name_assign_type"),
    ("netdev_group", "node_network_net_dev_group"),
];

/// Reads one sysfs attribute: `None` where the kernel has none for this device (a missing
/// file, EINVAL for the carrier of a down link, EOPNOTSUPP, no permission), like node_exporter.
fn attr(root: &Root, rel: &str) -> Result<Option<String>, String> {
    match root.sys_file(rel) {
        Ok(t) => Ok(Some(t.trim().to_string())),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::NotFound | ErrorKind::PermissionDenied | ErrorKind::InvalidInput
            ) || e.raw_os_error() == Some(95) =>
        {
            Ok(None)
        }
        Err(e) => Err(format!("{}: {e}", root.sys.join(rel).display())),
    }
}

/// An integer as Go's `ParseInt(s, 0, 64)` reads sysfs values: `0x` hexadecimal or decimal.
fn int(s: &str) -> Option<f64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let v = match body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        Some(h) => i64::from_str_radix(h, 16).ok()?,
        None => body.parse::<i64>().ok()?,
    };
    Some(if neg { -v } else { v } as f64)
}

/// node_exporter's `netclass`: `node_network_{up,info}` and the attributes above per interface,
/// plus `node_network_speed_bytes` (Mbit/s × 125 000; −1 Mbit/s, "unknown", stays −125 000 as
/// node_exporter 1.x reports it) and `node_network_transmit_queue_length`,
/// `node_network_protocol_type`.
pub fn collect_netclass(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    let Some(entries) = list_dir(&root.sys.join("class/net"))? else {
        return Ok(());
    };
    // Interfaces are symlinks to directories; `bonding_masters` is a plain file.
    for (dev, _) in entries.iter().filter(|(_, p)| !p.is_file()) {
        let a = |f: &str| attr(root, &format!("class/net/{dev}/{f}"));
        let operstate = a("operstate")?.unwrap_or_default();
        let d = [("device", dev.as_str())];
        out.add(
            "node_network_up",
            &d,
            f64::from(u8::from(operstate == "up")),
        );
        let (address, broadcast) = (a("address")?, a("broadcast")?);
        let (duplex, ifalias) = (a("duplex")?, a("ifalias")?);
        out.add(
            "node_network_info",
            &[
                ("address", address.as_deref().unwrap_or_default()),
                ("broadcast", broadcast.as_deref().unwrap_or_default()),
                ("device", dev),
                ("duplex", duplex.as_deref().unwrap_or_default()),
                ("ifalias", ifalias.as_deref().unwrap_or_default()),
                ("operstate", &operstate),
            ],
            1.0,
        );
        for (file, metric) in NETCLASS_GAUGES {
            if let Some(v) = a(file)?.as_deref().and_then(int) {
                out.add(metric, &d, v);
            }
        }
        if let Some(mbit) = a("speed")?.as_deref().and_then(int) {
            out.add("node_network_speed_bytes", &d, mbit * 1000.0 * 1000.0 / 8.0);
        }
        for (file, metric) in [
            ("tx_queue_len", "node_network_transmit_queue_length"),
            ("type", "node_network_protocol_type"),
        ] {
            if let Some(v) = a(file)?.as_deref().and_then(int) {
                out.add(metric, &d, v);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::host::exposition;

    fn tree() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        let root = crate::sources::host::fixtures::tree(dir.path());
        (dir, root)
    }

    fn write(path: std::path::PathBuf, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn arp_entries_are_counted_per_device() {
        let (_d, root) = tree();
        write(
            root.proc.join("net/arp"),
            "IP address       HW type     Flags       HW address            Mask     Device\n\
             192.0.2.1        0x1         0x2         02:fc:00:00:00:05     *        eth0\n\
             192.0.2.7        0x1         0x2         02:fc:00:00:00:07     *        eth0\n\
             10.0.0.1         0x1         0x2         02:fc:00:00:00:09     *        br-1\n",
        );
        let mut out = Out::new(0);
        collect_arp(&root, &mut out).unwrap();
        assert_eq!(
            exposition(&out.series),
            "# TYPE node_arp_entries gauge\nnode_arp_entries{device=\"br-1\"} 1\n\
             node_arp_entries{device=\"eth0\"} 2\n"
        );
        write(root.proc.join("net/arp"), "IP address HW\n");
        assert!(collect_arp(&root, &mut out).is_err());
    }

    #[test]
    fn conntrack_sums_cpus_by_header_and_is_silent_without_the_module() {
        let (_d, root) = tree();
        let mut out = Out::new(0);
        collect_conntrack(&root, &mut out).unwrap();
        assert!(out.series.is_empty());
        write(
            root.proc.join("sys/net/netfilter/nf_conntrack_count"),
            "12\n",
        );
        write(
            root.proc.join("sys/net/netfilter/nf_conntrack_max"),
            "262144\n",
        );
        write(
            root.proc.join("net/stat/nf_conntrack"),
            "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
             0000000c  00000000 00000010 00000000 00000001 00000002 00000000 00000000 00000003 00000000 00000000 00000000 00000000  00000000 00000000 00000000 0000000a\n\
             0000000c  00000000 00000001 00000000 00000001 00000000 00000000 00000000 00000000 00000000 00000004 00000000 00000000  00000000 00000000 00000000 00000001\n",
        );
        collect_conntrack(&root, &mut out).unwrap();
        let text = exposition(&out.series);
        for line in [
            "node_nf_conntrack_entries 12",
            "node_nf_conntrack_entries_limit 262144",
            "node_nf_conntrack_stat_found 17",
            "node_nf_conntrack_stat_invalid 2",
            "node_nf_conntrack_stat_drop 4",
            "node_nf_conntrack_stat_search_restart 11",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn softnet_and_udp_queues_read_hexadecimal_columns() {
        let (_d, root) = tree();
        write(
            root.proc.join("net/softnet_stat"),
            "00ef12f3 00000002 00000003 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000\n\
             00000010 00000000 0000000a 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001\n",
        );
        write(
            root.proc.join("net/udp"),
            "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
             \x20 1: 00000000:0202 00000000:0000 07 00000010:00000200 00:00000000 00000000     0        0 1 2 0000000000000000 0\n\
             \x20 2: 00000000:0203 00000000:0000 07 00000001:00000001 00:00000000 00000000     0        0 1 2 0000000000000000 0\n",
        );
        let mut out = Out::new(0);
        collect_softnet(&root, &mut out).unwrap();
        collect_udp_queues(&root, &mut out).unwrap();
        let text = exposition(&out.series);
        for line in [
            "node_softnet_processed_total{cpu=\"0\"} 15667955",
            "node_softnet_dropped_total{cpu=\"0\"} 2",
            "node_softnet_times_squeezed_total{cpu=\"1\"} 10",
            "node_udp_queues{ip=\"v4\",queue=\"rx\"} 513",
            "node_udp_queues{ip=\"v4\",queue=\"tx\"} 17",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        // No udp6 file (IPv6 disabled): only v4.
        assert!(!text.contains("v6"));
    }

    #[test]
    fn netclass_reads_attributes_like_node_exporter() {
        let (_d, root) = tree();
        let eth = root.sys.join("class/net/eth0");
        for (f, v) in [
            ("operstate", "up\n"),
            ("address", "02:fc:00:00:00:01\n"),
            ("broadcast", "ff:ff:ff:ff:ff:ff\n"),
            ("duplex", "full\n"),
            ("ifalias", "\n"),
            ("flags", "0x1003\n"),
            ("mtu", "1400\n"),
            ("speed", "-1\n"),
            ("carrier", "1\n"),
            ("tx_queue_len", "1000\n"),
            ("type", "1\n"),
        ] {
            write(eth.join(f), v);
        }
        write(root.sys.join("class/net/bonding_masters"), "\n");
        let mut out = Out::new(0);
        collect_netclass(&root, &mut out).unwrap();
        let text = exposition(&out.series);
        for line in [
            "node_network_up{device=\"eth0\"} 1",
            "node_network_flags{device=\"eth0\"} 4099",
            "node_network_mtu_bytes{device=\"eth0\"} 1400",
            "node_network_speed_bytes{device=\"eth0\"} -125000",
            "node_network_info{address=\"02:fc:00:00:00:01\",broadcast=\"ff:ff:ff:ff:ff:ff\",device=\"eth0\",duplex=\"full\",operstate=\"up\"} 1",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        // An empty ifalias is an absent label, as Prometheus stores it; attributes the device
        // lacks are left out, not reported as zero.
        assert!(!text.contains("node_network_dormant"));
        assert!(!text.contains("bonding_masters"));
    }
}
