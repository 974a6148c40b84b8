//! Small host facts: load averages, the clock, uname, file descriptors.

use super::{Out, Root, num, read};

/// `node_load1`, `node_load5`, `node_load15`, and `node_processes_threads` (the number of
/// scheduling entities the kernel reports after the slash in `/proc/loadavg`).
pub fn collect_loadavg(root: &Root, out: &mut Out) -> Result<(), String> {
    let text = read(root, "loadavg")?;
    let f: Vec<&str> = text.split_ascii_whitespace().collect();
    if f.len() < 4 {
        return Err(format!("/proc/loadavg: unexpected content {text:?}"));
    }
    out.add("node_load1", &[], num(f[0], "load1")?);
    out.add("node_load5", &[], num(f[1], "load5")?);
    out.add("node_load15", &[], num(f[2], "load15")?);
    if let Some((_, total)) = f[3].split_once('/') {
        out.add("node_processes_threads", &[], num(total, "threads")?);
    }
    Ok(())
}

/// `node_time_seconds`: the host's clock at collection time.
pub fn collect_time(_root: &Root, out: &mut Out) -> Result<(), String> {
    let t = out.t_ms() as f64 / 1000.0;
    out.add("node_time_seconds", &[], t);
    Ok(())
}

/// `node_uname_info{sysname,release,version,machine,nodename,domainname} 1`.
pub fn collect_uname(root: &Root, out: &mut Out) -> Result<(), String> {
    let k = |f: &str| {
        read(root, &format!("sys/kernel/{f}")).map(|s| s.trim_end_matches('\n').to_string())
    };
    let (sysname, release, version) = (k("ostype")?, k("osrelease")?, k("version")?);
    let (nodename, domainname) = (k("hostname")?, k("domainname")?);
    out.add(
        "node_uname_info",
        &[
            ("sysname", &sysname),
            ("release", &release),
            ("version", &version),
            ("machine", std::env::consts::ARCH),
            ("nodename", &nodename),
            ("domainname", &domainname),
        ],
        1.0,
    );
    Ok(())
}

/// `node_filefd_allocated`, `node_filefd_maximum`.
pub fn collect_filefd(root: &Root, out: &mut Out) -> Result<(), String> {
    let text = read(root, "sys/fs/file-nr")?;
    let f: Vec<&str> = text.split_ascii_whitespace().collect();
    if f.len() < 3 {
        return Err(format!("/proc/sys/fs/file-nr: unexpected content {text:?}"));
    }
    out.add("node_filefd_allocated", &[], num(f[0], "file-nr")?);
    out.add("node_filefd_maximum", &[], num(f[2], "file-nr")?);
    Ok(())
}

/// `node_entropy_available_bits`, `node_entropy_pool_size_bits` (node_exporter's `entropy`).
pub fn collect_entropy(root: &Root, out: &mut Out) -> Result<(), String> {
    for (file, metric) in [
        ("entropy_avail", "node_entropy_available_bits"),
        ("poolsize", "node_entropy_pool_size_bits"),
    ] {
        let text = read(root, &format!("sys/kernel/random/{file}"))?;
        out.add(metric, &[], num(text.trim(), file)?);
    }
    Ok(())
}
