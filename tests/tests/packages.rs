//! The deb and rpm packages: built with packaging/build.sh, then installed, run as the
//! `telltale` user, upgraded, removed and purged on this machine by packaging/test-packages.sh.
//! It changes the system (a user, /usr, /etc, /var/lib), so it runs in CI (`CI=true`, where the
//! machine is disposable) or when `TELLTALE_PACKAGE_TESTS=1`; elsewhere it prints why it skipped.

use std::path::Path;
use std::process::Command;

#[test]
fn packages_install_run_upgrade_and_purge_like_a_well_kept_package() {
    let wanted = std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("TELLTALE_PACKAGE_TESTS").is_ok_and(|v| v == "1");
    if !wanted {
        eprintln!(
            "skipped: installs packages system-wide; set TELLTALE_PACKAGE_TESTS=1 (CI sets CI=true)"
        );
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash")
        .arg(root.join("packaging/test-packages.sh"))
        .output()
        .expect("run packaging/test-packages.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "package checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all package checks passed"), "{stdout}");
}
