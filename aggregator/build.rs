//! Stamps the binary with its git revision and compiler (`telltale_build_info`,
//! `/api/v1/status/buildinfo`): `TELLTALE_REVISION` from the environment (packaging sets it)
//! or `git rev-parse`, else "unknown"; `TELLTALE_RUSTC` from `rustc --version`.

use std::process::Command;

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let revision = std::env::var("TELLTALE_REVISION")
        .ok()
        .or_else(|| output("git", &["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = output(&rustc, &["--version"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TELLTALE_REVISION={revision}");
    println!("cargo:rustc-env=TELLTALE_RUSTC={version}");
    println!("cargo:rerun-if-env-changed=TELLTALE_REVISION");
    // A new commit changes HEAD's target; the build script runs again then only.
    for f in ["../.git/HEAD", "../.git/refs/heads", "../.git/packed-refs"] {
        if std::path::Path::new(f).exists() {
            println!("cargo:rerun-if-changed={f}");
        }
    }
}
