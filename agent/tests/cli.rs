//! The agent's command line: bad flags and config give one clear line and exit code 2.

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_telltale-agent"))
}

#[test]
fn a_bad_config_key_is_named_with_the_file_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("agent.toml");
    std::fs::write(&p, "name = \"x\"\ninterval = \"often\"\n").unwrap();
    let out = agent().args(["run", "--config"]).arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("agent.toml: interval: line 2, column 12: invalid duration"),
        "{err}"
    );
}

#[test]
fn an_unknown_flag_or_bad_interval_exits_2() {
    let out = agent().args(["run", "--bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = agent()
        .args(["run", "--interval", "fast"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--interval"));
}

#[test]
fn check_config_names_a_missing_tls_file() {
    let out = agent()
        .args(["check-config", "--name", "a", "--ca", "/nonexistent/ca.crt"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ca.crt"));
}

#[test]
fn version_is_printed() {
    let out = agent().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}
