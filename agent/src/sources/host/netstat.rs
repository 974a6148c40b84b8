//! Protocol counters from `/proc/net/{netstat,snmp,snmp6}`, socket usage from
//! `/proc/net/sockstat`, and TCP connection states from `/proc/net/tcp{,6}`.

use super::CollectError;
use super::{Out, Root, num, read};

/// node_exporter's default netstat field filter, written out instead of as a regex.
fn wanted(proto: &str, field: &str) -> bool {
    if field.ends_with("InErrors") || field.ends_with("InErrs") {
        return true;
    }
    match proto {
        "Ip" => field == "Forwarding",
        "Ip6" | "IpExt" => field == "InOctets" || field == "OutOctets",
        "Icmp" | "Icmp6" => field == "InMsgs" || field == "OutMsgs",
        "TcpExt" => {
            field.starts_with("Listen")
                || field.starts_with("Syncookies")
                || matches!(
                    field,
                    "TCPSynRetrans" | "TCPTimeouts" | "TCPOFOQueue" | "TCPRcvQDrop"
                )
        }
        "Tcp" => matches!(
            field,
            "ActiveOpens"
                | "InSegs"
                | "OutSegs"
                | "OutRsts"
                | "PassiveOpens"
                | "RetransSegs"
                | "CurrEstab"
        ),
        "Udp" | "Udp6" => matches!(
            field,
            "InDatagrams" | "OutDatagrams" | "NoPorts" | "RcvbufErrors" | "SndbufErrors"
        ),
        _ => false,
    }
}

/// Pairs of lines `Proto: names...` / `Proto: values...`.
fn paired(text: &str, out: &mut Out, file: &str) -> Result<(), CollectError> {
    let mut lines = text.lines();
    while let (Some(h), Some(v)) = (lines.next(), lines.next()) {
        let (Some((proto, names)), Some((proto2, vals))) = (h.split_once(':'), v.split_once(':'))
        else {
            return Err(CollectError::Parse(format!(
                "{file}: unexpected line {h:?}"
            )));
        };
        if proto != proto2 {
            return Err(CollectError::Parse(format!(
                "{file}: header {proto} followed by {proto2}"
            )));
        }
        for (n, val) in names
            .split_ascii_whitespace()
            .zip(vals.split_ascii_whitespace())
        {
            if wanted(proto, n) {
                out.add(&format!("node_netstat_{proto}_{n}"), &[], num(val, n)?);
            }
        }
    }
    Ok(())
}

/// `node_netstat_<Proto>_<Field>`.
pub fn collect(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    paired(&read(root, "net/netstat")?, out, "/proc/net/netstat")?;
    paired(&read(root, "net/snmp")?, out, "/proc/net/snmp")?;
    // IPv6 may be disabled: then snmp6 is missing, which is not an error.
    if let Ok(text) = root.proc_file("net/snmp6") {
        for line in text.lines() {
            let mut f = line.split_ascii_whitespace();
            let (Some(k), Some(v)) = (f.next(), f.next()) else {
                continue;
            };
            let split = ["Ip6", "Icmp6", "UdpLite6", "Udp6"]
                .iter()
                .find_map(|p| k.strip_prefix(p).map(|rest| (*p, rest)));
            if let Some((proto, field)) = split
                && wanted(proto, field)
            {
                out.add(&format!("node_netstat_{proto}_{field}"), &[], num(v, k)?);
            }
        }
    }
    Ok(())
}

/// `node_sockstat_*` from `/proc/net/sockstat` (and `sockstat6`).
pub fn collect_sockstat(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    let page = 4096.0;
    let text = read(root, "net/sockstat")?;
    let text6 = root.proc_file("net/sockstat6").unwrap_or_default();
    for line in text.lines().chain(text6.lines()) {
        let Some((proto, rest)) = line.split_once(':') else {
            continue;
        };
        let f: Vec<&str> = rest.split_ascii_whitespace().collect();
        for kv in f.chunks(2) {
            let [k, v] = kv else { continue };
            let v = num(v, k)?;
            if proto == "sockets" {
                out.add(&format!("node_sockstat_sockets_{k}"), &[], v);
                continue;
            }
            out.add(&format!("node_sockstat_{proto}_{k}"), &[], v);
            if *k == "mem" {
                out.add(&format!("node_sockstat_{proto}_mem_bytes"), &[], v * page);
            }
        }
    }
    Ok(())
}

/// TCP states as `/proc/net/tcp` encodes them (hex), named as node_exporter's tcpstat.
const STATES: [(u8, &str); 12] = [
    (0x01, "established"),
    (0x02, "syn_sent"),
    (0x03, "syn_recv"),
    (0x04, "fin_wait1"),
    (0x05, "fin_wait2"),
    (0x06, "time_wait"),
    (0x07, "close"),
    (0x08, "close_wait"),
    (0x09, "last_ack"),
    (0x0A, "listen"),
    (0x0B, "closing"),
    (0x0C, "new_syn_recv"),
];

/// `node_tcp_connection_states{state}`, counted over IPv4 and IPv6 sockets.
pub fn collect_tcp_states(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    let mut counts = [0u64; 13];
    let mut any = false;
    for file in ["net/tcp", "net/tcp6"] {
        let Ok(text) = root.proc_file(file) else {
            continue;
        };
        any = true;
        for line in text.lines().skip(1) {
            let Some(st) = line.split_ascii_whitespace().nth(3) else {
                continue;
            };
            if let Ok(s) = u8::from_str_radix(st, 16)
                && (s as usize) < counts.len()
            {
                counts[s as usize] += 1;
            }
        }
    }
    if !any {
        return Err("/proc/net/tcp: not readable".into());
    }
    for (code, name) in STATES {
        out.add(
            "node_tcp_connection_states",
            &[("state", name)],
            counts[code as usize] as f64,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::host::fixtures;

    fn get(out: &Out, n: &str) -> Option<f64> {
        out.series
            .iter()
            .find(|s| s.labels.metric_name() == Some(n))
            .map(|s| s.samples[0].1)
    }

    #[test]
    fn netstat_snmp_and_sockstat_follow_node_exporter() {
        let root = fixtures::root();
        let mut out = Out::new(0);
        collect(&root, &mut out).unwrap();
        collect_sockstat(&root, &mut out).unwrap();
        collect_tcp_states(&root, &mut out).unwrap();
        assert_eq!(get(&out, "node_netstat_Tcp_RetransSegs"), Some(17.0));
        assert_eq!(get(&out, "node_netstat_Tcp_OutRsts"), Some(5.0));
        assert_eq!(get(&out, "node_netstat_TcpExt_ListenDrops"), Some(2.0));
        assert_eq!(get(&out, "node_netstat_Udp_InErrors"), Some(0.0));
        assert_eq!(get(&out, "node_netstat_Tcp_RtoMin"), None);
        assert_eq!(get(&out, "node_sockstat_TCP_inuse"), Some(4.0));
        assert_eq!(get(&out, "node_sockstat_TCP_mem_bytes"), Some(3.0 * 4096.0));
        assert_eq!(get(&out, "node_sockstat_sockets_used"), Some(120.0));
        let est = out.series.iter().find(|s| {
            s.labels.metric_name() == Some("node_tcp_connection_states")
                && s.labels.get("state") == Some("listen")
        });
        assert_eq!(est.map(|s| s.samples[0].1), Some(1.0));
    }
}
