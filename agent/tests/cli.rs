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

#[test]
fn scrape_credentials_are_checked_when_the_config_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("agent.toml");
    let f = dir.path().join("secret");
    std::fs::write(&f, "s").unwrap();
    let f = format!("{:?}", f.display().to_string());
    let job = "[[scrape]]\njob = \"a\"\ntargets = [\"127.0.0.1:1\"]\n";
    for (extra, key) in [
        (
            "bearer_token_file = \"/nonexistent/token\"\n".to_string(),
            "scrape[0].bearer_token_file",
        ),
        (
            format!(
                "bearer_token_file = {f}\nbasic_auth = {{ username = \"u\", password_file = {f} }}\n"
            ),
            "scrape[0].bearer_token_file",
        ),
        (format!("cert_file = {f}\n"), "scrape[0].key_file"),
        (
            format!("cert_file = {f}\nkey_file = {f}\n"),
            "scrape[0].cert_file",
        ),
    ] {
        std::fs::write(&p, format!("name = \"x\"\n{job}{extra}")).unwrap();
        let out = agent()
            .args(["check-config", "--config"])
            .arg(&p)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{extra}: {err}");
    }
}
