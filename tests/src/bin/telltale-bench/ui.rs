//! `telltale-bench ui [--hosts 100] [--hours 6] [--rounds 5]`: how fast the web UI draws the
//! Overview and the host dashboard in headless Chromium (Debian's chromium + chromium-driver)
//! over `hosts` node_exporter-like hosts × `hours` of history (the dashboard bench's data, sent
//! over remote_write). Reported: the page's own time from route to drawn (API calls and
//! charts; `window.telltaleRenderMs`) and the wall time from navigation to drawn, median and
//! p90 of `rounds`; and the UI's assets, raw and gzipped.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use telltale_tests::webdriver::{Browser, CHROMEDRIVER};
use telltale_tests::*;

use crate::{arg, med_p90};

pub fn bench_ui(args: &[String]) -> anyhow::Result<()> {
    let hosts: usize = arg(args, "--hosts", 100);
    let hours: i64 = arg(args, "--hours", 6);
    let rounds: usize = arg(args, "--rounds", 5);
    let end = telltale_common::model::now_ms() / 60_000 * 60_000;
    let start = end - hours * 3_600_000;
    let data = crate::dashboard::node_data(hosts, start, end);
    let samples: usize = data.iter().map(|s| s.samples.len()).sum();
    let dir = tempfile::tempdir()?;
    let tls = dir.path().join("tls");
    certs_init(&tls)?;
    let cfg = dir.path().join("agg.toml");
    std::fs::write(&cfg, "[rules]\nevaluation_interval = \"5s\"\n")?;
    let cfg_arg = cfg.display().to_string();
    let agg = start_aggregator(
        &tls,
        &dir.path().join("agg"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--config", &cfg_arg, "--api-token", "t"],
    )?;
    eprintln!("{} series, {samples} samples; loading...", data.len());
    for chunk in data.chunks(200) {
        remote_write(agg.http, chunk, Some("t"))?;
    }
    drop(data);
    // The golden-signal rules see every host before the Overview is timed.
    wait_for(Duration::from_secs(120), || {
        let (_, b) = http_get(agg.http, "/api/v1/golden-signals").ok()?;
        let v: serde_json::Value = serde_json::from_str(&b).ok()?;
        (v["data"]["hosts"].as_array()?.len() >= hosts).then_some(())
    })
    .context("golden signals for every host")?;
    let browser = Browser::start(std::path::Path::new(CHROMEDRIVER))?;
    let base = format!("http://{}/", agg.http);
    let pages = [
        ("Overview", String::new(), 0),
        (
            "host dashboard",
            format!("#/dashboard/host?host=host-0000:9100&range={hours}h"),
            8,
        ),
    ];
    println!(
        "\nWeb UI in headless Chromium, {hosts} hosts × 17 series × {hours} h at 60 s ({samples} samples), {rounds} rounds:\n"
    );
    println!(
        "| page | drawn (page's own) median ms | p90 ms | navigation to drawn median ms | p90 ms |"
    );
    println!("|---|---|---|---|---|");
    for (name, hash, charts) in pages {
        let (mut own, mut wall) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            browser.goto("about:blank")?;
            let t = Instant::now();
            browser.goto(&format!("{base}{hash}"))?;
            browser.wait_for(
                &format!(
                    "return window.telltaleReady === true && (window.telltaleCharts || []).length >= {charts} ? window.telltaleRenderMs : null"
                ),
                Duration::from_secs(60),
            )?;
            wall.push(t.elapsed().as_secs_f64() * 1000.0);
            let ms = browser.eval("return window.telltaleRenderMs")?;
            own.push(ms.as_f64().context("no render time")?);
        }
        let (om, op) = med_p90(&mut own);
        let (wm, wp) = med_p90(&mut wall);
        println!("| {name} | {om:.0} | {op:.0} | {wm:.0} | {wp:.0} |");
    }
    let (mut raw, mut gz) = (0usize, 0usize);
    for path in ["/", "/ui/app.js", "/ui/chart.js", "/ui/app.css"] {
        let (st, body) = http_get(agg.http, path)?;
        if st != 200 {
            bail!("{path}: {st}");
        }
        raw += body.len();
        let mut child = std::process::Command::new("gzip")
            .arg("-9c")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        use std::io::Write;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(body.as_bytes())?;
        gz += child.wait_with_output()?.stdout.len();
    }
    println!("\nassets: {raw} bytes, {gz} bytes gzipped (gzip -9)");
    Ok(())
}
