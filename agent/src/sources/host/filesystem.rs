//! Filesystems: space and inodes of every mounted filesystem, via `statvfs(2)`, with
//! node_exporter's default exclusions of pseudo filesystems and system mount points.

use super::CollectError;
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
    /// The device (the mount source, as /proc/mounts's first field).
    pub device: String,
    /// Where it is mounted, with the kernel's octal escapes decoded.
    pub mountpoint: String,
    /// Its type.
    pub fstype: String,
    /// Whether it is read-only (see [`View`]).
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

/// Whose mount table was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// PID 1's (`/proc/1/mountinfo`): the host's mounts as an operator sees them, whatever
    /// mount namespace the agent runs in (systemd's ProtectSystem, PrivateTmp, ProtectHome and
    /// PrivateMounts give the service its own). Read-only is the mount's flag or the
    /// superblock's, as `/proc/mounts` shows it and node_exporter reports it.
    Host,
    /// The agent's own (`/proc/self/mountinfo`), when PID 1's is hidden (`hidepid`,
    /// ProtectProc=invisible). Its per-mount flags are the sandbox's (ProtectSystem=strict
    /// remounts everything read-only), so read-only is the superblock's flag alone: a
    /// filesystem the kernel made read-only (errors=remount-ro, a full thin pool) still shows.
    Own,
}

/// Parses `mountinfo` (proc(5)), keeping what node_exporter keeps; later mounts on the same
/// point win. Malformed lines are skipped.
pub fn mounts(text: &str, view: View) -> Vec<Mount> {
    let mut out: Vec<Mount> = Vec::new();
    for line in text.lines() {
        // id parent major:minor root mountpoint mount-options [optional...] - fstype source super-options
        let Some((head, tail)) = line.split_once(" - ") else {
            continue;
        };
        let h: Vec<&str> = head.split_ascii_whitespace().collect();
        let t: Vec<&str> = tail.split_ascii_whitespace().collect();
        if h.len() < 6 || t.len() < 3 {
            continue;
        }
        let ro = |opts: &str| opts.split(',').any(|o| o == "ro");
        let m = Mount {
            device: unescape(t[1]),
            mountpoint: unescape(h[4]),
            fstype: t[0].to_string(),
            readonly: ro(t[2]) || (view == View::Host && ro(h[5])),
        };
        if IGNORED_FSTYPES.contains(&m.fstype.as_str()) || ignored_mountpoint(&m.mountpoint) {
            continue;
        }
        out.retain(|o| o.mountpoint != m.mountpoint);
        out.push(m);
    }
    out
}

/// The mount table to report: PID 1's when readable, else the agent's own.
fn mount_table(root: &Root) -> Result<(String, View), CollectError> {
    match root.proc_file("1/mountinfo") {
        Ok(t) if !t.is_empty() => Ok((t, View::Host)),
        _ => read(root, "self/mountinfo").map(|t| (t, View::Own)),
    }
}

/// `node_filesystem_{size,free,avail}_bytes`, `node_filesystem_files{,_free}`,
/// `node_filesystem_readonly`, `node_filesystem_device_error`, all `{device,fstype,mountpoint}`.
pub fn collect(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    let (text, view) = mount_table(root)?;
    for m in mounts(&text, view) {
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
    use crate::sources::host::fixtures;

    #[test]
    fn pseudo_filesystems_are_skipped_and_escapes_decoded() {
        let text = fixtures::root().proc_file("1/mountinfo").unwrap();
        let m = mounts(&text, View::Host);
        let points: Vec<_> = m.iter().map(|m| m.mountpoint.as_str()).collect();
        assert_eq!(points, vec!["/", "/run", "/data", "/mnt/my disk", "/srv"]);
        assert_eq!(m[0].device, "/dev/vda1");
        assert_eq!(m[0].fstype, "ext4");
        assert!(!m[0].readonly);
        // Mounted read-only (-o ro): its superblock is read-only too.
        assert!(m[2].readonly);
        // A read-only bind of a writable filesystem: read-only from the host's view, as
        // /proc/mounts shows it and node_exporter reports it.
        assert!(m[4].readonly);
    }

    #[test]
    fn in_the_agents_own_namespace_only_the_superblock_counts() {
        // ProtectSystem=strict: every mount read-only in the service's namespace.
        let text = "\
            25 1 254:1 / / ro,relatime - ext4 /dev/vda1 rw,errors=remount-ro\n\
            26 25 254:17 / /data ro,relatime - xfs /dev/vdb1 ro,attr2\n\
            27 25 0:40 / /tmp rw,nosuid - tmpfs tmpfs rw\n\
            garbage line\n";
        let m = mounts(text, View::Own);
        assert_eq!(m.len(), 3);
        assert!(!m[0].readonly, "the sandbox's remount is not the host's");
        assert!(m[1].readonly, "the kernel's read-only superblock shows");
        assert!(!m[2].readonly);
        assert!(mounts(text, View::Host)[0].readonly);
    }

    #[test]
    fn hidden_pid_1_falls_back_to_the_agents_own_table() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root {
            proc: dir.path().into(),
            sys: dir.path().into(),
            rootfs: dir.path().into(),
        };
        std::fs::create_dir_all(dir.path().join("self")).unwrap();
        std::fs::write(
            dir.path().join("self/mountinfo"),
            "25 1 254:1 / / ro - ext4 /dev/vda1 rw\n",
        )
        .unwrap();
        let (text, view) = mount_table(&root).unwrap();
        assert_eq!(view, View::Own);
        assert!(!mounts(&text, view)[0].readonly);
    }
}
