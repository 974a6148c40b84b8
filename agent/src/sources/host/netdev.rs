//! `/proc/net/dev`: per-interface traffic, errors and drops.

use super::CollectError;
use super::{Out, Root, num, read};

const RECEIVE: [&str; 8] = [
    "bytes",
    "packets",
    "errs",
    "drop",
    "fifo",
    "frame",
    "compressed",
    "multicast",
];
const TRANSMIT: [&str; 8] = [
    "bytes",
    "packets",
    "errs",
    "drop",
    "fifo",
    "colls",
    "carrier",
    "compressed",
];

/// `node_network_{receive,transmit}_<field>_total{device}`, and
/// `node_network_receive_nohandler_total` from `/sys/class/net/<dev>/statistics/rx_nohandler`
/// (node_exporter reads it over netlink; kernels before 4.6 have none: 0, as netlink says).
pub fn collect(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    let text = read(root, "net/dev")?;
    for line in text.lines().skip(2) {
        let Some((dev, rest)) = line.split_once(':') else {
            continue;
        };
        let dev = dev.trim();
        let vals: Vec<&str> = rest.split_ascii_whitespace().collect();
        if vals.len() < 16 {
            return Err(CollectError::Parse(format!(
                "/proc/net/dev: short line for {dev}"
            )));
        }
        for (i, f) in RECEIVE.iter().enumerate() {
            out.add(
                &format!("node_network_receive_{f}_total"),
                &[("device", dev)],
                num(vals[i], "net/dev")?,
            );
        }
        for (i, f) in TRANSMIT.iter().enumerate() {
            out.add(
                &format!("node_network_transmit_{f}_total"),
                &[("device", dev)],
                num(vals[8 + i], "net/dev")?,
            );
        }
        let nohandler = root
            .sys_file(&format!("class/net/{dev}/statistics/rx_nohandler"))
            .ok()
            .and_then(|t| t.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        out.add(
            "node_network_receive_nohandler_total",
            &[("device", dev)],
            nohandler,
        );
    }
    Ok(())
}
