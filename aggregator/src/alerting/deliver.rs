//! Delivery to receivers' integrations: webhook (HTTP POST of the v4 JSON), Alertmanager
//! (POST to its `/api/v2/alerts`), NATS JetStream (publish, wait for the stream's ack; the
//! delivery id goes in `Nats-Msg-Id` so a redelivery after a crash is dropped by the stream's
//! duplicate window) and log (a JSON line).
//!
//! A failure is [`SendError::Retry`] (network, 5xx, 429, no stream ack) or
//! [`SendError::Permanent`] (other 4xx: the receiver refuses this body; retrying would not
//! help). The service retries with backoff; this module only tries once.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use super::config::Integration;

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth retrying.
    #[error("{0}")]
    Retry(String),
    /// Never going to work.
    #[error("{0}")]
    Permanent(String),
}

/// Sends bodies to integrations; keeps HTTP and NATS connections.
pub struct Deliverer {
    http: reqwest::Client,
    nats: tokio::sync::Mutex<HashMap<String, async_nats::jetstream::Context>>,
    log_lock: std::sync::Mutex<()>,
    /// ClickHouse servers (URL and database) whose events table exists.
    clickhouse_ready: tokio::sync::Mutex<std::collections::HashSet<String>>,
}

impl Deliverer {
    /// A deliverer (installs ring as the process' TLS provider if none is).
    pub fn new() -> Result<Deliverer, reqwest::Error> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("telltale-aggregator/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Deliverer {
            http,
            nats: tokio::sync::Mutex::new(HashMap::new()),
            log_lock: std::sync::Mutex::new(()),
            clickhouse_ready: tokio::sync::Mutex::new(Default::default()),
        })
    }

    /// Sends `body` (already shaped for the integration) once.
    pub async fn send(&self, integ: &Integration, body: &[u8], id: &str) -> Result<(), SendError> {
        match integ {
            Integration::Webhook { url, timeout, .. } => self.post(url, body, *timeout).await,
            Integration::Alertmanager { url, .. } => {
                let u = format!("{}/api/v2/alerts", url.trim_end_matches('/'));
                self.post(&u, body, Duration::from_secs(10)).await
            }
            Integration::Nats {
                url,
                subject,
                stream,
                ..
            } => {
                self.publish(url, subject, stream.as_deref(), body, id)
                    .await
            }
            Integration::ClickHouse {
                url,
                database,
                authorization,
                ..
            } => {
                self.insert_events(url, database, authorization.as_deref(), body)
                    .await
            }
            Integration::Log { path, .. } => {
                let line = String::from_utf8_lossy(body);
                match path {
                    None => {
                        tracing::info!(target: "telltale::notification", notification = %line, "notification");
                        Ok(())
                    }
                    Some(p) => {
                        let _g = self.log_lock.lock().unwrap_or_else(|e| e.into_inner());
                        std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(p)
                            .and_then(|mut f| {
                                f.write_all(body)?;
                                f.write_all(b"\n")?;
                                f.sync_data()
                            })
                            .map_err(|e| SendError::Retry(format!("{}: {e}", p.display())))
                    }
                }
            }
        }
    }

    async fn post(&self, url: &str, body: &[u8], timeout: Duration) -> Result<(), SendError> {
        let resp = self
            .http
            .post(url)
            .timeout(timeout)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| SendError::Retry(format!("POST {url}: {e}")))?;
        let st = resp.status();
        if st.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        let msg = format!(
            "POST {url}: HTTP {st}: {}",
            text.chars().take(200).collect::<String>()
        );
        if st.is_server_error() || st.as_u16() == 429 {
            Err(SendError::Retry(msg))
        } else {
            Err(SendError::Permanent(msg))
        }
    }

    /// Inserts a notification's rows into `<database>.events`, creating the table the first
    /// time a server is written to.
    async fn insert_events(
        &self,
        url: &str,
        database: &str,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Result<(), SendError> {
        use crate::clickhouse::{self, Table};
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| SendError::Permanent(format!("ClickHouse event: not JSON: {e}")))?;
        let receiver = value
            .get("receiver")
            .and_then(|r| r.as_str())
            .unwrap_or_default();
        let now = telltale_common::model::now_ms().max(0) as u64;
        let rows = clickhouse::event_rows(&value, receiver, now);
        if rows.is_empty() {
            return Ok(());
        }
        let u = reqwest::Url::parse(url)
            .map_err(|e| SendError::Permanent(format!("ClickHouse URL {url:?}: {e}")))?;
        let class = |e: clickhouse::RequestError| {
            if e.retryable() {
                SendError::Retry(e.to_string())
            } else {
                SendError::Permanent(e.to_string())
            }
        };
        let key = format!("{url}\u{0}{database}");
        if !self.clickhouse_ready.lock().await.contains(&key) {
            clickhouse::create_schema(&self.http, &u, authorization, database, &[Table::Events])
                .await
                .map_err(class)?;
            self.clickhouse_ready.lock().await.insert(key);
        }
        let query = Table::Events.insert(database);
        let insert = clickhouse::execute(&self.http, &u, authorization, &query, rows);
        tokio::time::timeout(Duration::from_secs(30), insert)
            .await
            .map_err(|_| SendError::Retry(format!("ClickHouse at {url}: no answer in 30s")))?
            .map_err(class)?;
        Ok(())
    }

    async fn publish(
        &self,
        url: &str,
        subject: &str,
        stream: Option<&str>,
        body: &[u8],
        id: &str,
    ) -> Result<(), SendError> {
        let ctx = {
            let mut m = self.nats.lock().await;
            match m.get(url) {
                Some(c) => c.clone(),
                None => {
                    let client = async_nats::ConnectOptions::new()
                        .connection_timeout(Duration::from_secs(5))
                        .name("telltale-aggregator")
                        .connect(url)
                        .await
                        .map_err(|e| SendError::Retry(format!("NATS {url}: {e}")))?;
                    let ctx = async_nats::jetstream::new(client);
                    if let Some(s) = stream {
                        ctx.get_or_create_stream(async_nats::jetstream::stream::Config {
                            name: s.to_string(),
                            subjects: vec![subject.to_string()],
                            ..Default::default()
                        })
                        .await
                        .map_err(|e| SendError::Retry(format!("NATS stream {s}: {e}")))?;
                    }
                    m.insert(url.to_string(), ctx.clone());
                    ctx
                }
            }
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        let ack = ctx
            .publish_with_headers(subject.to_string(), headers, body.to_vec().into())
            .await
            .map_err(|e| SendError::Retry(format!("NATS publish to {subject}: {e}")))?;
        tokio::time::timeout(Duration::from_secs(10), ack)
            .await
            .map_err(|_| SendError::Retry(format!("NATS publish to {subject}: no ack in 10s")))?
            .map_err(|e| SendError::Retry(format!("NATS publish to {subject}: {e}")))?;
        Ok(())
    }
}
