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

#[test]
fn storage_check_and_stats_read_a_data_directory() {
    use telltale_aggregator::metrics::storage::{AppendData, AppendRequest, Appender};
    use telltale_aggregator::metrics::tsdb::{Tsdb, now_ms};
    use telltale_common::model::{Labels, Sample, SeriesSamples};

    let dir = tempfile::tempdir().unwrap();
    {
        let db = Tsdb::open(dir.path()).unwrap();
        let now = now_ms();
        let series: Vec<SeriesSamples> = (0..20)
            .map(|i| SeriesSamples {
                labels: Labels::from_pairs([("__name__", "m"), ("i", &i.to_string())]),
                samples: (0..360)
                    .map(|k| Sample(now - 3_600_000 + k * 10_000, (k * i) as f64))
                    .collect(),
            })
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(db.append(AppendRequest {
            origin: None,
            data: AppendData::Series(series),
        }))
        .unwrap();
        db.flush_and_compact(now).unwrap();
    }
    let out = agg()
        .args(["storage", "stats", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("series           20"), "{text}");
    assert!(text.contains("samples          7200 in blocks"), "{text}");
    assert!(text.contains("bytes/sample"), "{text}");
    let out = agg()
        .args(["storage", "check", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Damage a block: check names it and exits 1.
    let blk = std::fs::read_dir(dir.path().join("blocks"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut b = std::fs::read(&blk).unwrap();
    b[20] ^= 0xff;
    std::fs::write(&blk, &b).unwrap();
    let out = agg()
        .args(["storage", "check", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("DAMAGED") && text.contains("checksum mismatch"),
        "{text}"
    );
    let out = agg()
        .args(["storage", "check", "--data-dir", "/nonexistent/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
