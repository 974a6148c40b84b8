//! Scraping Prometheus / OpenMetrics endpoints on the agent's host, as Prometheus does:
//! per target `up`, `scrape_duration_seconds`, `scrape_samples_scraped`; `honor_labels` and
//! `honor_timestamps`; stale markers when a series disappears or the target goes down; the
//! job's relabel rules applied to the scraped series (not to `up` and the other synthetic
//! series, like Prometheus' `metric_relabel_configs`).
//!
//! Labels: `job` is the job's name and `target` the target's address. `instance` is always the
//! agent's name (the aggregator enforces it from the certificate, so a host can only speak for
//! itself); with `honor_labels = false` a scraped `job`, `target` or `instance` label is kept
//! as `exported_<name>`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use telltale_common::model::{Labels, STALE_NAN_BITS, Sample, SeriesSamples, now_ms};
use tokio::sync::mpsc;

use crate::pipeline::SourceBatch;
use crate::pipeline::relabel::Rule;
use crate::sources::expfmt::{self, Dialect};

/// One job.
#[derive(Debug, Clone)]
pub struct ScrapeJob {
    /// The `job` label.
    pub job: String,
    /// `http://host:port/path` per target.
    pub targets: Vec<(String, hyper::Uri)>,
    /// Scrape interval.
    pub interval: Duration,
    /// Scrape timeout.
    pub timeout: Duration,
    /// Keep the scraped labels on conflict.
    pub honor_labels: bool,
    /// Use the timestamps the target exposes.
    pub honor_timestamps: bool,
    /// Largest body read.
    pub body_limit: usize,
    /// Limits checked while the body is parsed.
    pub limits: expfmt::Limits,
    /// TLS for https targets.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Rules applied to scraped series.
    pub relabel: Arc<[Rule]>,
}

const ACCEPT: &str =
    "text/plain;version=0.0.4;q=1,application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1";

/// The result of one scrape, before the pipeline.
pub struct Scraped {
    /// Scraped series (to be relabelled).
    pub series: Vec<SeriesSamples>,
    /// `up`, `scrape_duration_seconds`, `scrape_samples_scraped` (never relabelled).
    pub meta: Vec<SeriesSamples>,
    /// Why the scrape failed, if it did.
    pub error: Option<String>,
}

fn target_labels(job: &ScrapeJob, target: &str) -> [(&'static str, String); 2] {
    [("job", job.job.clone()), ("target", target.to_string())]
}

/// Scrapes one target once.
pub async fn scrape_once(job: &ScrapeJob, target: &str, uri: &hyper::Uri) -> Scraped {
    let t = now_ms();
    let started = std::time::Instant::now();
    let timeout_s = format!("{}", job.timeout.as_secs_f64());
    let headers = [
        ("accept", ACCEPT),
        (
            "user-agent",
            concat!("telltale-agent/", env!("CARGO_PKG_VERSION")),
        ),
        ("x-prometheus-scrape-timeout-seconds", timeout_s.as_str()),
    ];
    let result = match tokio::time::timeout(
        job.timeout,
        crate::sources::httpc::get(uri, job.tls.as_ref(), &headers, job.body_limit),
    )
    .await
    {
        Err(_) => Err(format!(
            "scrape timed out after {}",
            humantime::format_duration(job.timeout)
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(r)) if r.status != 200 => Err(format!("server returned HTTP status {}", r.status)),
        Ok(Ok(r)) => {
            let text = String::from_utf8_lossy(&r.body);
            expfmt::parse_limited(
                &text,
                Dialect::from_content_type(&r.content_type),
                &job.limits,
            )
            .map_err(|e| format!("invalid exposition: {e}"))
        }
    };
    let tl = target_labels(job, target);
    let mut series = Vec::new();
    let error = match result {
        Ok((lines, _types)) => {
            series.reserve(lines.len());
            for line in lines {
                let mut pairs: Vec<(String, String)> = Vec::with_capacity(line.labels.len() + 3);
                let mut seen = [false; 2];
                for (k, v) in line.labels {
                    if let Some(i) = tl.iter().position(|(n, _)| *n == k) {
                        seen[i] = true;
                        if job.honor_labels {
                            pairs.push((k, v));
                        } else {
                            pairs.push((format!("exported_{k}"), v));
                        }
                    } else if k == "instance" && !job.honor_labels {
                        pairs.push(("exported_instance".into(), v));
                    } else {
                        pairs.push((k, v));
                    }
                }
                for (i, (k, v)) in tl.iter().enumerate() {
                    if !(seen[i] && job.honor_labels) {
                        pairs.push((k.to_string(), v.clone()));
                    }
                }
                pairs.push(("__name__".into(), line.name));
                let ts = match line.t_ms {
                    Some(ts) if job.honor_timestamps => ts,
                    _ => t,
                };
                series.push(SeriesSamples {
                    labels: Labels::from_pairs(pairs),
                    samples: vec![Sample(ts, line.value)],
                });
            }
            None
        }
        Err(e) => Some(e),
    };
    let meta_series = |name: &str, v: f64| {
        let mut l = Labels::from_pairs(tl.iter().map(|(k, v)| (*k, v.as_str())));
        l.set("__name__", name);
        SeriesSamples {
            labels: l,
            samples: vec![Sample(t, v)],
        }
    };
    let meta = vec![
        meta_series("up", if error.is_none() { 1.0 } else { 0.0 }),
        meta_series("scrape_duration_seconds", started.elapsed().as_secs_f64()),
        meta_series("scrape_samples_scraped", series.len() as f64),
    ];
    Scraped {
        series,
        meta,
        error,
    }
}

/// Scrapes one target every interval until the channel closes. The first scrape is offset by
/// a hash of the target so many targets do not fire in the same instant.
pub async fn run_target(job: Arc<ScrapeJob>, idx: usize, tx: mpsc::Sender<SourceBatch>) {
    let (target, uri) = job.targets[idx].clone();
    let source: Arc<str> = Arc::from(format!("scrape:{}", job.job));
    let no_rules: Arc<[Rule]> = Arc::from(Vec::new());
    let offset = target.bytes().fold(idx as u64, |h, b| {
        h.wrapping_mul(31).wrapping_add(u64::from(b))
    }) % (job.interval.as_millis().max(1) as u64);
    tokio::time::sleep(Duration::from_millis(offset)).await;
    let mut tick = tokio::time::interval(job.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut previous: HashSet<Labels> = HashSet::new();
    let mut last_error: Option<String> = None;
    loop {
        tick.tick().await;
        let mut s = scrape_once(&job, &target, &uri).await;
        if s.error != last_error {
            match &s.error {
                Some(e) => {
                    tracing::warn!(job = %job.job, target = %target, error = %e, "scrape failed")
                }
                None => tracing::info!(job = %job.job, target = %target, "scrape succeeded"),
            }
            last_error = s.error.clone();
        }
        // Series that were there last time and are gone now get a stale marker.
        let now: HashSet<Labels> = s.series.iter().map(|x| x.labels.clone()).collect();
        let t = s.meta[0].samples[0].0;
        for gone in previous.difference(&now) {
            s.series.push(SeriesSamples {
                labels: gone.clone(),
                samples: vec![Sample(t, f64::from_bits(STALE_NAN_BITS))],
            });
        }
        previous = now;
        let scraped = SourceBatch {
            exemplars: Vec::new(),
            source: source.clone(),
            relabel: job.relabel.clone(),
            series: s.series,
            events: Vec::new(),
        };
        let meta = SourceBatch {
            exemplars: Vec::new(),
            source: source.clone(),
            relabel: no_rules.clone(),
            series: s.meta,
            events: Vec::new(),
        };
        if tx.send(scraped).await.is_err() || tx.send(meta).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-route HTTP server answering every request with `body`.
    async fn serve(body: &'static str, status: u16) -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        addr
    }

    fn job(honor: bool) -> ScrapeJob {
        ScrapeJob {
            job: "app".into(),
            targets: Vec::new(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            honor_labels: honor,
            honor_timestamps: true,
            body_limit: 1 << 20,
            limits: expfmt::Limits::DEFAULT,
            tls: None,
            relabel: Arc::from(Vec::new()),
        }
    }

    /// A target answering more than the job's limits fails that scrape (up = 0, a message
    /// naming the limit) instead of costing the agent its memory.
    #[tokio::test]
    async fn limits_fail_the_scrape_while_reading() {
        let many: String = (0..150).map(|i| format!("m{{i=\"{i}\"}} 1\n")).collect();
        let wide = format!(
            "m{{{}}} 1\n",
            (0..10)
                .map(|i| format!("l{i}=\"x\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        let long_value = format!("m{{a=\"{}\"}} 1\n", "v".repeat(300));
        let long_name = format!("m{{{}=\"x\"}} 1\n", "n".repeat(300));
        let big = "x 1\n".repeat(1000);
        let limits = expfmt::Limits {
            sample_limit: 100,
            label_limit: 5,
            label_name_length_limit: 100,
            label_value_length_limit: 100,
        };
        for (body, want) in [
            (many, "sample_limit exceeded"),
            (wide, "label_limit exceeded"),
            (long_value, "label_value_length_limit exceeded"),
            (long_name, "label_name_length_limit exceeded"),
            (big, "body larger than 2000 bytes"),
        ] {
            let addr = serve(Box::leak(body.into_boxed_str()), 200).await;
            let target = addr.to_string();
            let uri: hyper::Uri = format!("http://{target}/metrics").parse().unwrap();
            let mut j = job(false);
            j.limits = limits;
            j.body_limit = 2000;
            let s = scrape_once(&j, &target, &uri).await;
            assert!(
                s.error.as_deref().unwrap_or("").contains(want),
                "{:?}",
                s.error
            );
            assert!(s.series.is_empty());
            assert_eq!(s.meta[0].samples[0].1, 0.0, "up is 0");
        }
    }

    #[tokio::test]
    async fn honor_labels_decides_who_wins_a_conflict() {
        let addr = serve(
            "m{job=\"inner\",instance=\"i\"} 1 1700000000000\nn 2\n",
            200,
        )
        .await;
        let target = addr.to_string();
        let uri: hyper::Uri = format!("http://{target}/metrics").parse().unwrap();
        let s = scrape_once(&job(false), &target, &uri).await;
        assert_eq!(s.error, None);
        let m = &s.series[0].labels;
        assert_eq!(m.get("job"), Some("app"));
        assert_eq!(m.get("exported_job"), Some("inner"));
        assert_eq!(m.get("exported_instance"), Some("i"));
        assert_eq!(m.get("target"), Some(target.as_str()));
        assert_eq!(s.series[0].samples[0].0, 1_700_000_000_000);
        let s = scrape_once(&job(true), &target, &uri).await;
        assert_eq!(s.series[0].labels.get("job"), Some("inner"));
        assert_eq!(s.meta[0].labels.get("__name__"), Some("up"));
        assert_eq!(s.meta[0].samples[0].1, 1.0);
        assert_eq!(s.meta[2].samples[0].1, 2.0);
    }

    #[tokio::test]
    async fn failures_set_up_to_zero_and_say_why() {
        let bad = serve("not a metric line at all\n", 200).await;
        let err = serve("x 1\n", 500).await;
        for (addr, want) in [
            (bad.to_string(), "invalid exposition: line 1"),
            (err.to_string(), "HTTP status 500"),
            ("127.0.0.1:1".to_string(), "connect"),
        ] {
            let uri: hyper::Uri = format!("http://{addr}/metrics").parse().unwrap();
            let s = scrape_once(&job(false), &addr, &uri).await;
            assert!(
                s.error.as_deref().unwrap_or("").contains(want),
                "{:?}",
                s.error
            );
            assert_eq!(s.meta[0].samples[0].1, 0.0);
            assert!(s.series.is_empty());
        }
    }
}
