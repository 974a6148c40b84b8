//! Filesystems: space and inodes of every mounted filesystem, via `statvfs(2)`, with
//! node_exporter's default exclusions of pseudo filesystems and system mount points.

use super::{Out, Root, read};

/// Filesystem types node_exporter ignores by default.
const IGNORED_FSTYPES: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "procfs",
    "pstore",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "erofs",
    "sysfs",
    "tracefs",
];

/// Mount points node_exporter ignores by default (and everything under them).
fn ignored_mountpoint(m: &str) -> bool {
    let under = |p: &str| m == p || m.starts_with(&format!("{p}/"));
    under("/dev")
        || under("/proc")
        || under("/sys")
        || m.starts_with("/run/credentials/")
        || m.starts_with("/var/lib/docker/")
        || m.starts_with("/var/lib/containers/storage/")
}

/// A mounted filesystem worth reporting.
#[derive(Debug, PartialEq)]
pub struct Mount {
    /// The device (first field of /proc/mounts).
    pub device: String,
    /// Where it is mounted, with the kernel's octal escapes decoded.
    pub mountpoint: String,
    /// Its type.
    pub fstype: String,
    /// Whether it is mounted read-only.
    pub readonly: bool,
}

/// Decodes the `\040`-style escapes of /proc/mounts.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses /proc/mounts, keeping what node_exporter keeps; later mounts on the same point win.
pub fn mounts(text: &str) -> Vec<Mount> {
    let mut out: Vec<Mount> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let m = Mount {
            device: unescape(f[0]),
            mountpoint: unescape(f[1]),
            fstype: f[2].to_string(),
            readonly: f[3].split(',').any(|o| o == "ro"),
        };
        if IGNORED_FSTYPES.contains(&m.fstype.as_str()) || ignored_mountpoint(&m.mountpoint) {
            continue;
        }
        out.retain(|o| o.mountpoint != m.mountpoint);
        out.push(m);
    }
    out
}

/// `node_filesystem_{size,free,avail}_bytes`, `node_filesystem_files{,_free}`,
/// `node_filesystem_readonly`, `node_filesystem_device_error`, all `{device,fstype,mountpoint}`.
pub fn collect(root: &Root, out: &mut Out) -> Result<(), String> {
    let text = read(root, "mounts")?;
    for m in mounts(&text) {
        let labels = [
            ("device", m.device.as_str()),
            ("fstype", m.fstype.as_str()),
            ("mountpoint", m.mountpoint.as_str()),
        ];
        match rustix::fs::statvfs(m.mountpoint.as_str()) {
            Ok(s) => {
                let bs = s.f_frsize as f64;
                out.add(
                    "node_filesystem_size_bytes",
                    &labels,
                    s.f_blocks as f64 * bs,
                );
                out.add("node_filesystem_free_bytes", &labels, s.f_bfree as f64 * bs);
                out.add(
                    "node_filesystem_avail_bytes",
                    &labels,
                    s.f_bavail as f64 * bs,
                );
                out.add("node_filesystem_files", &labels, s.f_files as f64);
                out.add("node_filesystem_files_free", &labels, s.f_ffree as f64);
                out.add(
                    "node_filesystem_readonly",
                    &labels,
                    f64::from(u8::from(m.readonly)),
                );
                out.add("node_filesystem_device_error", &labels, 0.0);
            }
            Err(_) => out.add("node_filesystem_device_error", &labels, 1.0),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::fixtures;

    #[test]
    fn pseudo_filesystems_are_skipped_and_escapes_decoded() {
        let text = fixtures::root().proc_file("mounts").unwrap();
        let m = mounts(&text);
        let points: Vec<_> = m.iter().map(|m| m.mountpoint.as_str()).collect();
        assert_eq!(points, vec!["/", "/run", "/data", "/mnt/my disk"]);
        assert!(m[2].readonly);
        assert!(!m[0].readonly);
    }
}
