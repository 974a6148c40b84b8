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
    /// TLS for https targets (with a client certificate when configured).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Credentials sent with every scrape.
    pub auth: Option<ScrapeAuth>,
    /// Rules applied to scraped series.
    pub relabel: Arc<[Rule]>,
}

/// How a scrape authenticates. Secrets live in files, read at every scrape so a rotated
/// token is used without a restart (Kubernetes rotates service-account tokens so).
#[derive(Debug, Clone, PartialEq)]
pub enum ScrapeAuth {
    /// HTTP basic authentication.
    Basic {
        /// User name.
        username: String,
        /// File holding the password.
        password_file: std::path::PathBuf,
    },
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// File holding the token.
        token_file: std::path::PathBuf,
    },
}

/// The contents of a secret file without its trailing newline.
fn secret(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Standard base64 with padding (RFC 4648), for basic authentication.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl ScrapeAuth {
    /// The `Authorization` header's value, reading the secret now.
    fn header(&self) -> Result<String, String> {
        match self {
            ScrapeAuth::Basic {
                username,
                password_file,
            } => {
                let pass = secret(password_file)?;
                Ok(format!(
                    "Basic {}",
                    base64(format!("{username}:{pass}").as_bytes())
                ))
            }
            ScrapeAuth::Bearer { token_file } => Ok(format!("Bearer {}", secret(token_file)?)),
        }
    }
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
    let mut headers = vec![
        ("accept", ACCEPT),
        (
            "user-agent",
            concat!("telltale-agent/", env!("CARGO_PKG_VERSION")),
        ),
        ("x-prometheus-scrape-timeout-seconds", timeout_s.as_str()),
    ];
    // A secret that cannot be read fails the scrape, named, without a request.
    let auth = job.auth.as_ref().map(ScrapeAuth::header).transpose();
    if let Ok(Some(a)) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let fetched = match &auth {
        Err(e) => Ok(Err(e.clone())),
        Ok(_) => tokio::time::timeout(
            job.timeout,
            crate::sources::httpc::get(uri, job.tls.as_ref(), &headers, job.body_limit),
        )
        .await
        .map(|r| r.map_err(|e| e.to_string())),
    };
    let result = match fetched {
        Err(_) => Err(format!(
            "scrape timed out after {}",
            humantime::format_duration(job.timeout)
        )),
        Ok(Err(e)) => Err(e),
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
            auth: None,
            relabel: Arc::from(Vec::new()),
        }
    }

    /// A server answering 200 only to `Authorization: <want>`, 401 otherwise.
    async fn serve_auth(want: &'static str) -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                    let ok =
                        req.contains(&format!("authorization: {}\r\n", want.to_ascii_lowercase()));
                    let (status, body) = if ok { (200, "m 1\n") } else { (401, "") };
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

    #[tokio::test]
    async fn credentials_come_from_files_read_at_every_scrape() {
        // RFC 7617's example.
        let addr = serve_auth("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==").await;
        let dir = tempfile::tempdir().unwrap();
        let pass = dir.path().join("pass");
        std::fs::write(&pass, "open sesame\n").unwrap();
        let uri: hyper::Uri = format!("http://{addr}/metrics").parse().unwrap();
        let mut j = job(false);
        j.auth = Some(ScrapeAuth::Basic {
            username: "Aladdin".into(),
            password_file: pass.clone(),
        });
        let r = scrape_once(&j, "t", &uri).await;
        assert_eq!(r.error, None);
        assert_eq!(r.series.len(), 1);
        // A rotated secret is used at the next scrape.
        std::fs::write(&pass, "wrong").unwrap();
        let r = scrape_once(&j, "t", &uri).await;
        assert_eq!(r.error.as_deref(), Some("server returned HTTP status 401"));
        // A secret that cannot be read fails the scrape, named.
        std::fs::remove_file(&pass).unwrap();
        let r = scrape_once(&j, "t", &uri).await;
        assert!(
            r.error.as_deref().is_some_and(|e| e.contains("pass")),
            "{:?}",
            r.error
        );
        let token = dir.path().join("token");
        std::fs::write(&token, "t0k3n\n").unwrap();
        let addr = serve_auth("Bearer t0k3n").await;
        let uri: hyper::Uri = format!("http://{addr}/metrics").parse().unwrap();
        j.auth = Some(ScrapeAuth::Bearer { token_file: token });
        assert_eq!(scrape_once(&j, "t", &uri).await.error, None);
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
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
