//! `/proc/meminfo` (memory and swap) and `/proc/vmstat` (paging, swapping, faults, OOM kills).

use super::CollectError;
use super::{Out, Root, num, read};

/// `node_memory_<Field>_bytes` for every kB field, `node_memory_<Field>` for counts
/// (HugePages_*), with `(` `)` turned into `_` like node_exporter (`Active(anon)` →
/// `Active_anon`).
pub fn collect(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    let text = read(root, "meminfo")?;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut f = rest.split_ascii_whitespace();
        let Some(v) = f.next() else { continue };
        let mut v = num(v, key)?;
        let key = key.replace('(', "_").replace(')', "");
        let name = if f.next() == Some("kB") {
            v *= 1024.0;
            format!("node_memory_{key}_bytes")
        } else {
            format!("node_memory_{key}")
        };
        out.add(&name, &[], v);
    }
    Ok(())
}

/// node_exporter's default vmstat fields: `oom_kill`, `pgpg*`, `pswp*`, `pg*fault*`.
fn wanted_vmstat(k: &str) -> bool {
    k.starts_with("oom_kill")
        || k.starts_with("pgpg")
        || k.starts_with("pswp")
        || (k.starts_with("pg") && k.contains("fault"))
}

/// `node_vmstat_<field>`.
pub fn collect_vmstat(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    let text = read(root, "vmstat")?;
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(k), Some(v)) = (f.next(), f.next()) else {
            continue;
        };
        if wanted_vmstat(k) {
            out.add(&format!("node_vmstat_{k}"), &[], num(v, k)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::host::fixtures;

    #[test]
    fn meminfo_names_and_units_follow_node_exporter() {
        let mut out = Out::new(0);
        collect(&fixtures::root(), &mut out).unwrap();
        collect_vmstat(&fixtures::root(), &mut out).unwrap();
        let get = |n: &str| {
            out.series
                .iter()
                .find(|s| s.labels.metric_name() == Some(n))
                .map(|s| s.samples[0].1)
        };
        assert_eq!(get("node_memory_MemAvailable_bytes"), Some(2048.0 * 1024.0));
        assert_eq!(get("node_memory_Active_anon_bytes"), Some(1024.0));
        assert_eq!(get("node_memory_SwapFree_bytes"), Some(0.0));
        assert_eq!(get("node_memory_HugePages_Total"), Some(0.0));
        assert_eq!(get("node_vmstat_pgmajfault"), Some(7.0));
        assert_eq!(get("node_vmstat_oom_kill"), Some(1.0));
        assert_eq!(get("node_vmstat_nr_free_pages"), None);
    }
}
