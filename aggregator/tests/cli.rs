//! The aggregator's command line: certificates, bad config, bad flags.

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn agg() -> Command {
    Command::new(env!("CARGO_BIN_EXE_telltale-aggregator"))
}

#[test]
fn certs_init_and_issue_write_the_documented_files() {
    let dir = tempfile::tempdir().unwrap();
    let st = agg()
        .args(["certs", "init", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(st.status.success());
    for f in ["ca.crt", "ca.key", "server.crt", "server.key"] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    let st = agg()
        .args(["certs", "issue", "--dir"])
        .arg(dir.path())
        .args(["--agent", "web-1"])
        .output()
        .unwrap();
    assert!(st.status.success());
    assert!(dir.path().join("agents/web-1.crt").exists());
    assert!(dir.path().join("agents/web-1.key").exists());
    // A second init must not replace the CA every agent trusts.
    let st = agg()
        .args(["certs", "init", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!st.status.success());
    assert!(String::from_utf8_lossy(&st.stderr).contains("refusing to overwrite"));
}

#[test]
fn a_bad_config_key_is_named_with_the_file_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("aggregator.toml");
    std::fs::write(&p, "http_listen = \"127.0.0.1:9470\"\nretention = \"1d\"\n").unwrap();
    let out = agg().args(["serve", "--config"]).arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("aggregator.toml") && err.contains("retention"),
        "{err}"
    );
}

#[test]
fn a_bad_listen_flag_exits_2() {
    let out = agg()
        .args(["serve", "--http-listen", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
