//! Small host facts: load averages, uname, file descriptors, entropy, the OS release, SELinux.

use super::CollectError;
use super::{Out, Root, num, read};
use crate::pipeline::hostinfo::os_release_value;

/// `node_load1`, `node_load5`, `node_load15`, and `node_processes_threads` (the number of
/// scheduling entities the kernel reports after the slash in `/proc/loadavg`).
pub fn collect_loadavg(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    let text = read(root, "loadavg")?;
    let f: Vec<&str> = text.split_ascii_whitespace().collect();
    if f.len() < 4 {
        return Err(CollectError::Parse(format!(
            "/proc/loadavg: unexpected content {text:?}"
        )));
    }
    out.add("node_load1", &[], num(f[0], "load1")?);
    out.add("node_load5", &[], num(f[1], "load5")?);
    out.add("node_load15", &[], num(f[2], "load15")?);
    if let Some((_, total)) = f[3].split_once('/') {
        out.add("node_processes_threads", &[], num(total, "threads")?);
    }
    Ok(())
}

/// `node_uname_info{sysname,release,version,machine,nodename,domainname} 1`.
pub fn collect_uname(root: &Root, out: &mut Out) -> Result<(), CollectError> {
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
pub fn collect_filefd(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    let text = read(root, "sys/fs/file-nr")?;
    let f: Vec<&str> = text.split_ascii_whitespace().collect();
    if f.len() < 3 {
        return Err(CollectError::Parse(format!(
            "/proc/sys/fs/file-nr: unexpected content {text:?}"
        )));
    }
    out.add("node_filefd_allocated", &[], num(f[0], "file-nr")?);
    out.add("node_filefd_maximum", &[], num(f[2], "file-nr")?);
    Ok(())
}

/// `node_entropy_available_bits`, `node_entropy_pool_size_bits` (node_exporter's `entropy`).
pub fn collect_entropy(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    for (file, metric) in [
        ("entropy_avail", "node_entropy_available_bits"),
        ("poolsize", "node_entropy_pool_size_bits"),
    ] {
        let text = read(root, &format!("sys/kernel/random/{file}"))?;
        out.add(metric, &[], num(text.trim(), file)?);
    }
    Ok(())
}

/// The leading `major[.minor]` of a version id, as node_exporter's `^[0-9]+\.?[0-9]*`.
fn major_minor(v: &str) -> Option<f64> {
    let int_end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    if int_end == 0 {
        return None;
    }
    let rest = &v[int_end..];
    let end = match rest.strip_prefix('.') {
        Some(frac) => {
            int_end
                + 1
                + frac
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(frac.len())
        }
        None => int_end,
    };
    v[..end].trim_end_matches('.').parse().ok()
}

/// `node_os_info{...} 1` and `node_os_version{id,id_like,name}` from `/etc/os-release` (or
/// `/usr/lib/os-release`), node_exporter's `os` collector. No file: nothing, no error.
pub fn collect_os(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    let text = ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|f| std::fs::read_to_string(root.rootfs.join(f)).ok());
    let Some(text) = text else {
        return Ok(());
    };
    let v = |k: &str| os_release_value(&text, k).unwrap_or_default();
    let (id, id_like, name) = (v("ID"), v("ID_LIKE"), v("NAME"));
    let version_id = v("VERSION_ID");
    out.add(
        "node_os_info",
        &[
            ("build_id", &v("BUILD_ID")),
            ("id", &id),
            ("id_like", &id_like),
            ("image_id", &v("IMAGE_ID")),
            ("image_version", &v("IMAGE_VERSION")),
            ("name", &name),
            ("pretty_name", &v("PRETTY_NAME")),
            ("variant", &v("VARIANT")),
            ("variant_id", &v("VARIANT_ID")),
            ("version", &v("VERSION")),
            ("version_codename", &v("VERSION_CODENAME")),
            ("version_id", &version_id),
        ],
        1.0,
    );
    if let Some(ver) = major_minor(&version_id).filter(|v| *v > 0.0) {
        out.add(
            "node_os_version",
            &[("id", &id), ("id_like", &id_like), ("name", &name)],
            ver,
        );
    }
    Ok(())
}

/// `node_selinux_enabled`, and when enabled `node_selinux_config_mode` (/etc/selinux/config:
/// enforcing 1, permissive 0, disabled −1) and `node_selinux_current_mode` (the kernel's
/// `enforce`), as node_exporter's `selinux` collector.
pub fn collect_selinux(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    let enforce = root.sys_file("fs/selinux/enforce").ok();
    let context = root.proc_file("self/attr/current").unwrap_or_default();
    let enabled =
        enforce.is_some() && !context.is_empty() && context.trim_end_matches('\0') != "kernel";
    out.add("node_selinux_enabled", &[], f64::from(u8::from(enabled)));
    if let (true, Some(current)) = (enabled, enforce) {
        let config =
            std::fs::read_to_string(root.rootfs.join("etc/selinux/config")).unwrap_or_default();
        let mode = match os_release_value(&config, "SELINUX").as_deref() {
            Some("enforcing") => 1.0,
            Some("permissive") => 0.0,
            _ => -1.0,
        };
        out.add("node_selinux_config_mode", &[], mode);
        out.add(
            "node_selinux_current_mode",
            &[],
            num(current.trim(), "selinux enforce")?,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_versions_become_numbers() {
        assert_eq!(major_minor("22.04.3"), Some(22.04));
        assert_eq!(major_minor("12"), Some(12.0));
        assert_eq!(major_minor("9."), Some(9.0));
        assert_eq!(major_minor("rolling"), None);
        assert_eq!(major_minor(""), None);
    }

    #[test]
    fn os_collector_reports_info_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let root = crate::sources::host::fixtures::tree(dir.path());
        let mut out = Out::new(0);
        collect_os(&root, &mut out).unwrap();
        assert!(out.series.is_empty());
        std::fs::create_dir_all(dir.path().join("usr/lib")).unwrap();
        std::fs::write(
            dir.path().join("usr/lib/os-release"),
            "NAME=\"Ubuntu\"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"22.04\"\n",
        )
        .unwrap();
        collect_os(&root, &mut out).unwrap();
        let text = super::super::exposition(&out.series);
        assert!(
            text.contains(
                "node_os_version{id=\"ubuntu\",id_like=\"debian\",name=\"Ubuntu\"} 22.04"
            ),
            "{text}"
        );
        assert!(text.contains("version_id=\"22.04\""), "{text}");
        collect_selinux(&root, &mut out).unwrap();
        assert!(super::super::exposition(&out.series).contains("node_selinux_enabled 0"));
    }
}
