//! The packaged agent reports the host, not its sandbox. The unit's hardening (ProtectSystem=
//! strict, ProtectHome=read-only, PrivateTmp, PrivateDevices, PrivateMounts,
//! ProtectKernelTunables, an unprivileged user) is rebuilt with `unshare` and `mount` (these
//! machines run no systemd), the agent's `collect` runs inside it as an unprivileged user, and
//! its filesystem, process and clock figures are compared with an unconfined run as root.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use telltale_tests::exposition::{Family, families};
use telltale_tests::*;

/// Between the mount namespace's creation and the agent: the unit's settings, one by one.
/// A test harness script (the product runs nothing through a shell).
const SANDBOX: &str = r#"
set -e
scratch="$1"; agent="$2"
# PrivateMounts: nothing done here reaches the host.
mount --make-rslave /
# PrivateTmp: a private directory over /tmp.
mkdir -p "$scratch/private-tmp"
mount --bind "$scratch/private-tmp" /tmp
# PrivateDevices: a fresh /dev with the pseudo devices only.
mount -t tmpfs -o mode=755,nosuid tmpfs /dev
mknod -m 666 /dev/null c 1 3
mknod -m 666 /dev/zero c 1 5
mknod -m 666 /dev/urandom c 1 9
# ProtectSystem=strict and ProtectHome=read-only: every mount outside the API filesystems
# read-only.
for m in $(cut -d' ' -f5 /proc/self/mountinfo); do
  case "$m" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) ;; *) mount -o remount,bind,ro "$m" 2>/dev/null || true ;; esac
done
# ProtectKernelTunables: /proc/sys and /sys read-only.
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
mount -o remount,bind,ro /sys
cat /proc/self/mountinfo
echo '=== agent ==='
exec setpriv --reuid=65534 --regid=65534 --clear-groups "$agent" collect
"#;

fn run_collect(agent: &Path) -> BTreeMap<String, Family> {
    let out = Command::new(agent).arg("collect").output().unwrap();
    assert!(out.status.success());
    families(&String::from_utf8(out.stdout).unwrap())
}

fn value(f: &BTreeMap<String, Family>, name: &str, labels: &BTreeMap<String, String>) -> f64 {
    f[name].series[labels]
}

#[test]
fn the_sandboxed_agent_reports_the_hosts_filesystems_processes_and_clock() {
    let root = Command::new("id").arg("-u").output().unwrap();
    let is_root = String::from_utf8_lossy(&root.stdout).trim() == "0";
    let tools = ["/usr/bin/unshare", "/usr/bin/setpriv"]
        .iter()
        .all(|t| Path::new(t).exists());
    if !is_root || !tools {
        assert!(
            std::env::var("CI").is_err(),
            "CI runs as root with util-linux: the sandbox test must run there"
        );
        eprintln!("skipped: needs root and util-linux's unshare and setpriv");
        return;
    }
    let agent = bin("telltale-agent").unwrap();
    let scratch = tempfile::tempdir().unwrap();

    let before = run_collect(&agent);
    let out = Command::new("unshare")
        .args(["--mount", "--", "sh", "-c", SANDBOX, "sandbox"])
        .arg(scratch.path())
        .arg(&agent)
        .output()
        .unwrap();
    let after = run_collect(&agent);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "sandbox failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (sandbox_mounts, exposition) = stdout.split_once("=== agent ===\n").unwrap();
    let inside = families(exposition);

    // The sandbox is real: the agent's own mount table has `/` read-only and a private /tmp.
    let own: Vec<Vec<&str>> = sandbox_mounts
        .lines()
        .map(|l| l.split(' ').collect())
        .collect();
    let root_mount = own.iter().rev().find(|f| f[4] == "/").unwrap();
    assert!(
        root_mount[5].split(',').any(|o| o == "ro"),
        "/ is not read-only in the sandbox: {root_mount:?}"
    );
    assert!(own.iter().any(|f| f[4] == "/tmp"), "no private /tmp");

    // Every family the unconfined agent reports, the sandboxed one reports.
    let names = |f: &BTreeMap<String, Family>| f.keys().cloned().collect::<BTreeSet<_>>();
    let missing: Vec<_> = names(&before)
        .difference(&names(&inside))
        .cloned()
        .collect();
    assert!(missing.is_empty(), "lost in the sandbox: {missing:?}");

    // Filesystems: the host's mounts (not the sandbox's /tmp), their sizes, inode counts and
    // read-only flags exactly; free space within what moves between three reads a second
    // apart.
    let fs_sets = |f: &BTreeMap<String, Family>| {
        f["node_filesystem_size_bytes"]
            .series
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(fs_sets(&inside), fs_sets(&before), "mount sets differ");
    assert!(!fs_sets(&before).is_empty());
    for labels in fs_sets(&before) {
        for exact in [
            "node_filesystem_size_bytes",
            "node_filesystem_files",
            "node_filesystem_readonly",
            "node_filesystem_device_error",
        ] {
            assert_eq!(
                value(&inside, exact, &labels),
                value(&before, exact, &labels),
                "{exact}{labels:?}"
            );
        }
        let (a, b, x) = (
            value(&before, "node_filesystem_avail_bytes", &labels),
            value(&after, "node_filesystem_avail_bytes", &labels),
            value(&inside, "node_filesystem_avail_bytes", &labels),
        );
        let slack = 0.01 * a.max(b) + 1.0;
        assert!(
            x >= a.min(b) - slack && x <= a.max(b) + slack,
            "avail{labels:?}: {x} outside {a}..{b}"
        );
    }

    // Processes and the clock: kernel-wide figures, not the sandbox user's share.
    let none = BTreeMap::new();
    let forks = |f| value(f, "node_forks_total", &none);
    assert!(forks(&before) <= forks(&inside) && forks(&inside) <= forks(&after));
    let threads = |f| value(f, "node_processes_threads", &none);
    let (t0, t1, tx) = (threads(&before), threads(&after), threads(&inside));
    assert!(
        tx >= 0.8 * t0.min(t1) && tx <= 1.25 * t0.max(t1),
        "threads {tx} vs {t0}..{t1}"
    );
    for name in ["node_timex_status", "node_timex_tick_seconds"] {
        assert_eq!(
            value(&inside, name, &none),
            value(&before, name, &none),
            "{name}"
        );
    }
}
