//! ClickHouse, the column store observability stacks use at scale (the "OLAP system" of the
//! design): the tables Telltale writes, the rows it inserts and the requests that do it, over
//! ClickHouse's HTTP interface (`INSERT … FORMAT JSONEachRow`). Used by the exporters
//! (`forward::clickhouse` for log lines and spans, its incident archive, the alerting outbox's
//! `clickhouse_configs` for alert and incident events).
//!
//! The schema works on every ClickHouse from 18.16 (Debian 12's package) on: `DateTime`
//! seconds with a `UInt64` nanosecond (or millisecond) column beside it rather than
//! `DateTime64` (20.1), label sets as two parallel arrays rather than `Map` (21.1). On servers
//! with column codecs (19.1 and later) every column is compressed with `CODEC(ZSTD(1))`; on
//! older ones compression is the server's `<compression>` setting (set its method to `zstd`,
//! as the tests do). Tables are partitioned by day (`toYYYYMMDD`), so a time-to-live or a
//! `DROP PARTITION` expires whole days.
//!
//! ```sql
//! CREATE TABLE telltale.logs (
//!   date Date DEFAULT toDate(timestamp),  -- the partition key's source
//!   timestamp DateTime,                   -- the line's time, seconds
//!   timestamp_ns UInt64,                  -- the same, nanoseconds
//!   instance String,                      -- the agent that sent it ('' for pushes)
//!   stream String,                        -- the stream's labels, {k="v", ...}
//!   label_names Array(String), label_values Array(String),
//!   metadata_names Array(String), metadata_values Array(String),  -- structured metadata
//!   line String
//! ) ENGINE = MergeTree PARTITION BY toYYYYMMDD(timestamp) ORDER BY (stream, timestamp_ns)
//!
//! CREATE TABLE telltale.spans (               -- spans of the traces tail sampling kept
//!   date Date DEFAULT toDate(timestamp),
//!   timestamp DateTime,                       -- the span's start, seconds
//!   start_ns UInt64, duration_ns UInt64,
//!   trace_id String, span_id String, parent_span_id String,  -- lower-case hex ('' for a root)
//!   service String, name String,
//!   kind String,                              -- server, client, producer, consumer, internal, unspecified
//!   status String, status_message String,     -- unset, ok or error
//!   attribute_names Array(String), attribute_values Array(String),
//!   resource_names Array(String), resource_values Array(String),
//!   events String, links String               -- JSON arrays
//! ) ENGINE = MergeTree PARTITION BY toYYYYMMDD(timestamp) ORDER BY (service, start_ns)
//!
//! CREATE TABLE telltale.events (
//!   date Date DEFAULT toDate(timestamp),
//!   timestamp DateTime, timestamp_ms UInt64,  -- when the notification was sent
//!   kind String,                              -- 'alert' or 'incident'
//!   status String,                            -- 'firing' or 'resolved'
//!   receiver String, group_key String,
//!   alertname String, severity String, instance String, fingerprint String,
//!   starts_at UInt64, ends_at UInt64,         -- ms; ends_at 0 while firing
//!   incident String,                          -- the incident's id (incident pages)
//!   label_names Array(String), label_values Array(String),
//!   annotation_names Array(String), annotation_values Array(String),
//!   body String                               -- the whole notification (JSON), once per row
//! ) ENGINE = MergeTree PARTITION BY toYYYYMMDD(timestamp) ORDER BY (timestamp, alertname)
//!
//! CREATE TABLE telltale.incidents (
//!   date Date DEFAULT toDate(timestamp),
//!   timestamp DateTime,                       -- when the incident opened
//!   source String,                            -- the aggregator ([alerting] external_url)
//!   id UInt64,                                -- the incident's id on that aggregator
//!   opened_ms UInt64, updated_ms UInt64,      -- ms; updated: its alerts' last change
//!   archived_ms UInt64,                       -- ms; the version: the newest one is kept
//!   acknowledged_ms UInt64, resolved_ms UInt64, -- ms; 0 until then
//!   status String,                            -- 'open' or 'resolved'
//!   root_cause String,                        -- the root cause's alertname
//!   alerts UInt32,
//!   body String                               -- the incident as /api/v1/incidents shows it
//! ) ENGINE = ReplacingMergeTree(archived_ms) PARTITION BY toYYYYMM(timestamp) ORDER BY (source, id)
//! ```

use serde_json::{Map, Value, json};

/// A ClickHouse server's version, as `SELECT version()` prints it (`18.16.1`, `24.3.2.23`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32);

impl Version {
    /// Parses `major.minor[.…]`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Version> {
        let mut it = s.trim().split('.');
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        Some(Version(major, minor))
    }

    /// Whether columns take `CODEC(…)` (ClickHouse 19.1 and later).
    pub fn has_codecs(self) -> bool {
        self >= Version(19, 1)
    }
}

/// The tables Telltale writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Log lines.
    Logs,
    /// Spans of kept traces.
    Spans,
    /// Alert and incident notifications, a row per alert.
    Events,
    /// Incidents as `/api/v1/incidents` shows them, a row per version (the archive that
    /// long-range reports read; see [`crate::forward::clickhouse::incidents`]).
    Incidents,
}

impl Table {
    /// The table's name in its database.
    pub fn name(self) -> &'static str {
        match self {
            Table::Logs => "logs",
            Table::Spans => "spans",
            Table::Events => "events",
            Table::Incidents => "incidents",
        }
    }

    fn columns(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Table::Logs => &[
                ("timestamp", "DateTime"),
                ("timestamp_ns", "UInt64"),
                ("instance", "String"),
                ("stream", "String"),
                ("label_names", "Array(String)"),
                ("label_values", "Array(String)"),
                ("metadata_names", "Array(String)"),
                ("metadata_values", "Array(String)"),
                ("line", "String"),
            ],
            Table::Spans => &[
                ("timestamp", "DateTime"),
                ("start_ns", "UInt64"),
                ("duration_ns", "UInt64"),
                ("trace_id", "String"),
                ("span_id", "String"),
                ("parent_span_id", "String"),
                ("service", "String"),
                ("name", "String"),
                ("kind", "String"),
                ("status", "String"),
                ("status_message", "String"),
                ("attribute_names", "Array(String)"),
                ("attribute_values", "Array(String)"),
                ("resource_names", "Array(String)"),
                ("resource_values", "Array(String)"),
                ("events", "String"),
                ("links", "String"),
            ],
            Table::Events => &[
                ("timestamp", "DateTime"),
                ("timestamp_ms", "UInt64"),
                ("kind", "String"),
                ("status", "String"),
                ("receiver", "String"),
                ("group_key", "String"),
                ("alertname", "String"),
                ("severity", "String"),
                ("instance", "String"),
                ("fingerprint", "String"),
                ("starts_at", "UInt64"),
                ("ends_at", "UInt64"),
                ("incident", "String"),
                ("label_names", "Array(String)"),
                ("label_values", "Array(String)"),
                ("annotation_names", "Array(String)"),
                ("annotation_values", "Array(String)"),
                ("body", "String"),
            ],
            Table::Incidents => &[
                ("timestamp", "DateTime"),
                ("source", "String"),
                ("id", "UInt64"),
                ("opened_ms", "UInt64"),
                ("updated_ms", "UInt64"),
                ("archived_ms", "UInt64"),
                ("acknowledged_ms", "UInt64"),
                ("resolved_ms", "UInt64"),
                ("status", "String"),
                ("root_cause", "String"),
                ("alerts", "UInt32"),
                ("body", "String"),
            ],
        }
    }

    fn order_by(self) -> &'static str {
        match self {
            Table::Logs => "(stream, timestamp_ns)",
            Table::Spans => "(service, start_ns)",
            Table::Events => "(timestamp, alertname)",
            Table::Incidents => "(source, id)",
        }
    }

    /// The engine and partitioning: incidents keep their newest version (`archived_ms`) per
    /// `(source, id)`, in monthly partitions (an incident's opening time never changes, so its
    /// versions share one); the others are append-only, daily.
    fn engine(self) -> &'static str {
        match self {
            Table::Incidents => "ReplacingMergeTree(archived_ms) PARTITION BY toYYYYMM(timestamp)",
            _ => "MergeTree PARTITION BY toYYYYMMDD(timestamp)",
        }
    }

    /// `CREATE TABLE IF NOT EXISTS` for `database` on a server of `version`.
    pub fn create(self, database: &str, version: Version) -> String {
        let codec = if version.has_codecs() {
            " CODEC(ZSTD(1))"
        } else {
            ""
        };
        let cols: Vec<String> = std::iter::once("date Date DEFAULT toDate(timestamp)".to_string())
            .chain(
                self.columns()
                    .iter()
                    .map(|(n, t)| format!("{n} {t}{codec}")),
            )
            .collect();
        format!(
            "CREATE TABLE IF NOT EXISTS {database}.{} ({}) ENGINE = {} ORDER BY {}",
            self.name(),
            cols.join(", "),
            self.engine(),
            self.order_by()
        )
    }

    /// The query of an insert of JSONEachRow rows (sent as the `query` URL parameter, the
    /// rows as the body).
    pub fn insert(self, database: &str) -> String {
        let cols: Vec<&str> = self.columns().iter().map(|(n, _)| *n).collect();
        format!(
            "INSERT INTO {database}.{} ({}) FORMAT JSONEachRow",
            self.name(),
            cols.join(", ")
        )
    }
}

/// A failed request to ClickHouse.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No answer (connection refused, timeout, TLS).
    #[error("ClickHouse at {url}: {message}")]
    Network {
        /// The server.
        url: String,
        /// What failed.
        message: String,
    },
    /// ClickHouse answered with an error.
    #[error("ClickHouse at {url}: HTTP {status}: {text}")]
    Refused {
        /// The server.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of ClickHouse's message (`Code: N, e.displayText() = …`).
        text: String,
    },
}

impl RequestError {
    /// Whether trying again later may succeed (no answer, 5xx, 429); ClickHouse answers 500
    /// to most of its errors, so an exporter that must not lose rows retries every error.
    pub fn retryable(&self) -> bool {
        match self {
            RequestError::Network { .. } => true,
            RequestError::Refused { status, .. } => *status >= 500 || *status == 429,
        }
    }
}

/// Runs `query` with `body` as its data (the rows of an insert); returns ClickHouse's answer.
pub async fn execute(
    client: &reqwest::Client,
    url: &reqwest::Url,
    authorization: Option<&str>,
    query: &str,
    body: Vec<u8>,
) -> Result<String, RequestError> {
    // A query without data goes as the body (ClickHouse wants a length on every POST, and an
    // empty body is sent without one); an insert's query goes in the URL, its rows as the body.
    let req = if body.is_empty() {
        client.post(url.clone()).body(query.to_string())
    } else {
        let mut u = url.clone();
        u.query_pairs_mut().append_pair("query", query);
        client.post(u).body(body)
    };
    let mut req = req;
    if let Some(a) = authorization {
        req = req.header(reqwest::header::AUTHORIZATION, a);
    }
    let network = |e: reqwest::Error| RequestError::Network {
        url: url.to_string(),
        message: e.to_string(),
    };
    let resp = req.send().await.map_err(network)?;
    let status = resp.status();
    let text = resp.text().await.map_err(network)?;
    if status.is_success() {
        Ok(text)
    } else {
        Err(RequestError::Refused {
            url: url.to_string(),
            status: status.as_u16(),
            text: text.trim().chars().take(300).collect(),
        })
    }
}

/// Asks the server's version, then creates `database` and `tables` if they do not exist.
pub async fn create_schema(
    client: &reqwest::Client,
    url: &reqwest::Url,
    authorization: Option<&str>,
    database: &str,
    tables: &[Table],
) -> Result<Version, RequestError> {
    let answer = execute(client, url, authorization, "SELECT version()", Vec::new()).await?;
    let version = Version::parse(&answer).unwrap_or(Version(0, 0));
    execute(
        client,
        url,
        authorization,
        &create_database(database),
        Vec::new(),
    )
    .await?;
    for t in tables {
        execute(
            client,
            url,
            authorization,
            &t.create(database, version),
            Vec::new(),
        )
        .await?;
    }
    Ok(version)
}

/// `CREATE DATABASE IF NOT EXISTS`.
pub fn create_database(database: &str) -> String {
    format!("CREATE DATABASE IF NOT EXISTS {database}")
}

/// Whether `name` is a database name used unquoted here (letters, digits, `_`; not starting
/// with a digit).
pub fn valid_database(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Renders labels as a stream selector, `{k="v", ...}`, as Loki and LogQL print them.
pub fn selector(labels: &[(String, String)]) -> String {
    let parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}=\"{}\"",
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            )
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

fn split(pairs: &[(String, String)]) -> (Vec<&str>, Vec<&str>) {
    pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).unzip()
}

/// Appends one log line's row (and a newline) to a JSONEachRow body.
pub fn log_row(
    out: &mut Vec<u8>,
    labels: &[(String, String)],
    stream: &str,
    t_ns: i64,
    line: &str,
    metadata: &[(String, String)],
) {
    let ns = t_ns.max(0) as u64;
    let instance = labels
        .iter()
        .find(|(k, _)| k == "instance")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let (ln, lv) = split(labels);
    let (mn, mv) = split(metadata);
    let row = json!({
        "timestamp": ns / 1_000_000_000,
        "timestamp_ns": ns,
        "instance": instance,
        "stream": stream,
        "label_names": ln,
        "label_values": lv,
        "metadata_names": mn,
        "metadata_values": mv,
        "line": line,
    });
    // Serialising a `Value` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &row);
    out.push(b'\n');
}

/// Appends one span's row (and a newline) to a JSONEachRow body.
pub fn span_row(out: &mut Vec<u8>, s: &telltale_common::trace::Span) {
    use telltale_common::trace::hex;
    let (an, av) = split(&s.attributes);
    let (rn, rv) = split(&s.resource);
    let events: Vec<Value> = s
        .events
        .iter()
        .map(|e| {
            let attrs: Map<String, Value> = e
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            json!({"t_ns": e.t_ns, "name": e.name, "attributes": attrs})
        })
        .collect();
    let links: Vec<Value> = s
        .links
        .iter()
        .map(|l| json!({"trace_id": hex(&l.trace_id), "span_id": hex(&l.span_id)}))
        .collect();
    let row = json!({
        "timestamp": s.start_ns / 1_000_000_000,
        "start_ns": s.start_ns,
        "duration_ns": s.duration_ns(),
        "trace_id": hex(&s.trace_id),
        "span_id": hex(&s.span_id),
        "parent_span_id": s.parent.map(|p| hex(&p)).unwrap_or_default(),
        "service": s.service,
        "name": s.name,
        "kind": format!("{:?}", s.kind).to_lowercase(),
        "status": format!("{:?}", s.status).to_lowercase(),
        "status_message": s.status_message,
        "attribute_names": an,
        "attribute_values": av,
        "resource_names": rn,
        "resource_values": rv,
        "events": Value::Array(events).to_string(),
        "links": Value::Array(links).to_string(),
    });
    let _ = serde_json::to_writer(&mut *out, &row);
    out.push(b'\n');
}

fn pairs(v: Option<&Value>) -> (Vec<String>, Vec<String>) {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .unzip()
        })
        .unwrap_or_default()
}

/// An RFC 3339 time as Unix milliseconds; 0 when absent, unparsable or Go's zero time.
pub fn ms(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_str)
        .and_then(|s| humantime::parse_rfc3339(s).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .filter(|&m| m > 0)
        .unwrap_or(0)
}

/// The rows of one notification (Alertmanager's webhook v4 body, or an incident page: a v4
/// body with a `telltale.incident` key), a row per alert, as a JSONEachRow body; `now_ms` is
/// when it is sent. A body without alerts makes no rows.
pub fn event_rows(body: &Value, receiver: &str, now_ms: u64) -> Vec<u8> {
    let incident = body
        .pointer("/telltale/incident/id")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = if incident.is_empty() {
        "alert"
    } else {
        "incident"
    };
    let text = body.to_string();
    let group_key = body.get("groupKey").and_then(Value::as_str).unwrap_or("");
    let mut out = Vec::new();
    for a in body
        .get("alerts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let labels = a.get("labels");
        let label = |k: &str| {
            labels
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        let (ln, lv) = pairs(labels);
        let (an, av) = pairs(a.get("annotations"));
        let mut row = Map::new();
        row.insert("timestamp".into(), json!(now_ms / 1000));
        row.insert("timestamp_ms".into(), json!(now_ms));
        row.insert("kind".into(), json!(kind));
        row.insert(
            "status".into(),
            a.get("status").cloned().unwrap_or(json!("")),
        );
        row.insert("receiver".into(), json!(receiver));
        row.insert("group_key".into(), json!(group_key));
        row.insert("alertname".into(), json!(label("alertname")));
        row.insert("severity".into(), json!(label("severity")));
        row.insert("instance".into(), json!(label("instance")));
        row.insert(
            "fingerprint".into(),
            a.get("fingerprint").cloned().unwrap_or(json!("")),
        );
        row.insert("starts_at".into(), json!(ms(a.get("startsAt"))));
        row.insert("ends_at".into(), json!(ms(a.get("endsAt"))));
        row.insert("incident".into(), json!(incident));
        row.insert("label_names".into(), json!(ln));
        row.insert("label_values".into(), json!(lv));
        row.insert("annotation_names".into(), json!(an));
        row.insert("annotation_values".into(), json!(av));
        row.insert("body".into(), json!(text));
        let _ = serde_json::to_writer(&mut out, &Value::Object(row));
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_gate_codecs() {
        assert_eq!(Version::parse("18.16.1"), Some(Version(18, 16)));
        assert_eq!(Version::parse("24.3.2.23\n"), Some(Version(24, 3)));
        assert_eq!(Version::parse("garbage"), None);
        assert!(!Version(18, 16).has_codecs());
        assert!(Version(19, 1).has_codecs());
        let old = Table::Logs.create("telltale", Version(18, 16));
        assert!(!old.contains("CODEC"), "{old}");
        let new = Table::Logs.create("telltale", Version(23, 8));
        assert!(new.contains("line String CODEC(ZSTD(1))"), "{new}");
    }

    #[test]
    fn database_names_are_checked() {
        assert!(valid_database("telltale"));
        assert!(valid_database("obs_2"));
        for bad in ["", "2obs", "a.b", "a;DROP", "a b", "ä"] {
            assert!(!valid_database(bad), "{bad}");
        }
    }

    #[test]
    fn a_log_row_is_one_json_line_with_every_column() {
        let labels = vec![
            ("instance".to_string(), "web-1".to_string()),
            ("job".to_string(), "nginx".to_string()),
        ];
        let mut out = Vec::new();
        let stream = selector(&labels);
        log_row(
            &mut out,
            &labels,
            &stream,
            1_700_000_000_123_456_789,
            "GET / 200\n\"quoted\"",
            &[("trace_id".into(), "abc".into())],
        );
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["timestamp"], 1_700_000_000);
        assert_eq!(v["timestamp_ns"], 1_700_000_000_123_456_789u64);
        assert_eq!(v["instance"], "web-1");
        assert_eq!(v["stream"], "{instance=\"web-1\", job=\"nginx\"}");
        assert_eq!(v["line"], "GET / 200\n\"quoted\"");
        assert_eq!(v["metadata_values"][0], "abc");
        let cols: Vec<&str> = Table::Logs.columns().iter().map(|c| c.0).collect();
        assert_eq!(v.as_object().unwrap().len(), cols.len());
        for c in cols {
            assert!(v.get(c).is_some(), "{c}");
        }
    }

    #[test]
    fn a_span_row_has_every_column_in_hex_and_names() {
        use telltale_common::trace::{Span, SpanEvent, SpanKind, SpanLink, SpanStatus};
        let s = Span {
            trace_id: [0xab; 16],
            span_id: [1; 8],
            parent: Some([2; 8]),
            service: "checkout".into(),
            name: "POST /pay".into(),
            kind: SpanKind::Server,
            start_ns: 1_700_000_000_500_000_000,
            end_ns: 1_700_000_000_750_000_000,
            status: SpanStatus::Error,
            status_message: "card declined".into(),
            attributes: vec![("http.status_code".into(), "402".into())],
            resource: vec![("host.name".into(), "web-1".into())],
            events: vec![SpanEvent {
                t_ns: 1_700_000_000_600_000_000,
                name: "retry".into(),
                attributes: vec![],
            }],
            links: vec![SpanLink {
                trace_id: [3; 16],
                span_id: [4; 8],
            }],
        };
        let mut out = Vec::new();
        span_row(&mut out, &s);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["timestamp"], 1_700_000_000);
        assert_eq!(v["duration_ns"], 250_000_000);
        assert_eq!(v["trace_id"], "ab".repeat(16));
        assert_eq!(v["parent_span_id"], "02".repeat(8));
        assert_eq!(
            (v["kind"].as_str(), v["status"].as_str()),
            (Some("server"), Some("error"))
        );
        let events: Value = serde_json::from_str(v["events"].as_str().unwrap()).unwrap();
        assert_eq!(events[0]["name"], "retry");
        let links: Value = serde_json::from_str(v["links"].as_str().unwrap()).unwrap();
        assert_eq!(links[0]["span_id"], "04".repeat(8));
        let cols = Table::Spans.columns();
        assert_eq!(v.as_object().unwrap().len(), cols.len());
        for (c, _) in cols {
            assert!(v.get(*c).is_some(), "{c}");
        }
    }

    #[test]
    fn a_notification_makes_a_row_per_alert() {
        let body = json!({
            "version": "4", "groupKey": "{}:{alertname=\"HostDown\"}", "status": "firing",
            "alerts": [
                {"status": "firing", "labels": {"alertname": "HostDown", "instance": "a", "severity": "page"},
                 "annotations": {"summary": "a is down"}, "startsAt": "2026-12-05T08:00:00Z",
                 "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "0123"},
                {"status": "resolved", "labels": {"alertname": "HostDown", "instance": "b"},
                 "annotations": {}, "startsAt": "2026-12-05T07:00:00Z",
                 "endsAt": "2026-12-05T07:30:00Z", "fingerprint": "4567"}
            ],
            "telltale": {"incident": {"id": "inc-1"}}
        });
        let rows = event_rows(&body, "ops", 1_780_000_000_000);
        let rows: Vec<Value> = rows
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["kind"], "incident");
        assert_eq!(rows[0]["incident"], "inc-1");
        assert_eq!(rows[0]["severity"], "page");
        assert_eq!(rows[0]["ends_at"], 0);
        assert_eq!(rows[1]["status"], "resolved");
        assert_eq!(rows[1]["ends_at"], 1_796_455_800_000u64);
        assert_eq!(rows[0]["starts_at"], 1_796_457_600_000u64);
        let cols = Table::Events.columns();
        assert_eq!(rows[0].as_object().unwrap().len(), cols.len());
        assert!(event_rows(&json!({"alerts": []}), "ops", 1).is_empty());
    }
}
