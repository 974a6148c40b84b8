//! The incident archive (`[clickhouse] incidents`, on by default): the aggregator keeps a
//! resolved incident for 7 days, long enough for the API and the week's report; a quarterly
//! incidents report needs more. Every `incidents_interval` the archive inserts each incident
//! that is new or changed (opened, grown, acknowledged, remediated, resolved) since
//! ClickHouse last acknowledged it into `<database>.incidents`, a `ReplacingMergeTree` that
//! keeps the newest version (`archived_ms`) per `(source, id)`; `source` is the aggregator's
//! `[alerting] external_url`, so the incidents of several aggregators in one database are
//! told apart.
//!
//! What was sent is remembered in memory (a hash of each incident); after a restart every
//! incident the aggregator holds is sent once more, which the table folds into one version.
//! So nothing is lost while ClickHouse is down for less than those 7 days: an incident
//! stays unsent, and on the aggregator, until an insert holding it is acknowledged. Reports
//! read the archive back with [`Archive::read`].

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};

use super::ClickHouseOptions;
use crate::clickhouse::{self, RequestError, Table};

/// What the archive counts (`telltale_aggregator_clickhouse_*{table="incidents"}`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Incident versions ClickHouse acknowledged.
    pub rows_sent: AtomicU64,
    /// Inserts (or the schema's creation) that failed; retried at the next sync.
    pub failures: AtomicU64,
    /// Body bytes acknowledged.
    pub bytes_sent: AtomicU64,
}

/// The incident archive of one aggregator.
pub struct Archive {
    opts: ClickHouseOptions,
    source: String,
    /// Incident id → the hash of the version ClickHouse acknowledged.
    sent: Mutex<HashMap<String, u64>>,
    schema_ready: AtomicBool,
    /// Its counters.
    pub counters: Counters,
}

fn ms(v: &Value, ptr: &str) -> i64 {
    clickhouse::ms(v.pointer(ptr)) as i64
}

/// A ClickHouse string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The archive row of an incident (as `/api/v1/incidents` shows it) from `source`, archived
/// at `archived_ms`.
pub fn row(incident: &Value, source: &str, archived_ms: i64) -> Value {
    let opened = ms(incident, "/openedAt");
    let mut r = Map::new();
    r.insert("timestamp".into(), json!(opened / 1000));
    r.insert("source".into(), json!(source));
    let id: u64 = incident["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    r.insert("id".into(), json!(id));
    r.insert("opened_ms".into(), json!(opened));
    r.insert("updated_ms".into(), json!(ms(incident, "/updatedAt")));
    r.insert("archived_ms".into(), json!(archived_ms));
    r.insert(
        "acknowledged_ms".into(),
        json!(ms(incident, "/acknowledged/at")),
    );
    r.insert("resolved_ms".into(), json!(ms(incident, "/resolvedAt")));
    r.insert(
        "status".into(),
        incident.get("status").cloned().unwrap_or(json!("")),
    );
    r.insert(
        "root_cause".into(),
        incident
            .pointer("/rootCause/alertname")
            .cloned()
            .unwrap_or(json!("")),
    );
    r.insert(
        "alerts".into(),
        json!(incident["alerts"].as_array().map_or(0, Vec::len)),
    );
    r.insert("body".into(), json!(incident.to_string()));
    Value::Object(r)
}

/// Incident ids and their versions.
type Versions = Vec<(String, u64)>;

/// An incident's version: its JSON without what changes by itself (`ageSeconds`).
fn version(incident: &Value) -> u64 {
    let mut v = incident.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("ageSeconds");
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    h.finish()
}

/// The incidents whose version is not the one in `sent`, as JSONEachRow, with their ids and
/// versions (to remember once acknowledged); `None` when none changed.
pub fn changed_rows(
    incidents: &[Value],
    source: &str,
    sent: &HashMap<String, u64>,
    now_ms: i64,
) -> Option<(Vec<u8>, Versions)> {
    let mut out = Vec::new();
    let mut versions = Vec::new();
    for i in incidents {
        let Some(id) = i["id"].as_str() else { continue };
        let v = version(i);
        if sent.get(id) == Some(&v) {
            continue;
        }
        versions.push((id.to_string(), v));
        let _ = serde_json::to_writer(&mut out, &row(i, source, now_ms));
        out.push(b'\n');
    }
    (!out.is_empty()).then_some((out, versions))
}

impl Archive {
    /// The archive of the aggregator `source`.
    pub fn new(opts: ClickHouseOptions, source: String) -> Archive {
        Archive {
            opts,
            source,
            sent: Mutex::new(HashMap::new()),
            schema_ready: AtomicBool::new(false),
            counters: Counters::default(),
        }
    }

    /// Archives what `incidents` (called each time) returns, every `incidents_interval`,
    /// until the process ends.
    pub async fn run(self: Arc<Self>, incidents: impl Fn() -> Vec<Value> + Send + 'static) {
        loop {
            tokio::time::sleep(self.opts.incidents_interval).await;
            if let Err(e) = self.sync(&incidents()).await {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "clickhouse: cannot archive incidents; retrying at the next sync");
            }
        }
    }

    async fn ensure_schema(&self) -> Result<(), RequestError> {
        if self.opts.create_tables && !self.schema_ready.load(Ordering::Relaxed) {
            clickhouse::create_schema(
                &self.opts.client,
                &self.opts.url,
                self.opts.authorization.as_deref(),
                &self.opts.database,
                &[Table::Incidents],
            )
            .await?;
        }
        self.schema_ready.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Inserts the incidents that are new or changed since ClickHouse last acknowledged
    /// them, and remembers them once it did; ids no longer in `incidents` (expired on the
    /// aggregator) are forgotten. Returns how many were inserted.
    pub async fn sync(&self, incidents: &[Value]) -> Result<usize, RequestError> {
        let changed = {
            let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
            let held: std::collections::HashSet<&str> =
                incidents.iter().filter_map(|i| i["id"].as_str()).collect();
            sent.retain(|id, _| held.contains(id.as_str()));
            changed_rows(
                incidents,
                &self.source,
                &sent,
                telltale_common::model::now_ms(),
            )
        };
        let Some((body, versions)) = changed else {
            return Ok(0);
        };
        self.ensure_schema().await?;
        let len = body.len() as u64;
        clickhouse::execute(
            &self.opts.client,
            &self.opts.url,
            self.opts.authorization.as_deref(),
            &Table::Incidents.insert(&self.opts.database),
            body,
        )
        .await?;
        let n = versions.len();
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(versions);
        self.counters
            .rows_sent
            .fetch_add(n as u64, Ordering::Relaxed);
        self.counters.bytes_sent.fetch_add(len, Ordering::Relaxed);
        Ok(n)
    }

    /// The archived incidents of this aggregator opened in `(start_ms, end_ms]`, newest
    /// version of each, as `/api/v1/incidents` showed them.
    pub async fn read(&self, start_ms: i64, end_ms: i64) -> Result<Vec<Value>, RequestError> {
        self.ensure_schema().await?;
        let query = format!(
            "SELECT body FROM {}.{} FINAL WHERE source = {} AND opened_ms > {} AND opened_ms <= {} \
             ORDER BY opened_ms FORMAT JSONEachRow",
            self.opts.database,
            Table::Incidents.name(),
            literal(&self.source),
            start_ms.max(0),
            end_ms.max(0)
        );
        let text = clickhouse::execute(
            &self.opts.client,
            &self.opts.url,
            self.opts.authorization.as_deref(),
            &query,
            Vec::new(),
        )
        .await?;
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|r| {
                r["body"]
                    .as_str()
                    .and_then(|b| serde_json::from_str(b).ok())
            })
            .collect())
    }
}

/// `state` (what the aggregator holds) and `archived` merged: an incident the aggregator
/// still holds is taken from there (it may have changed since it was archived).
pub fn merge(mut state: Vec<Value>, archived: Vec<Value>) -> Vec<Value> {
    let held: std::collections::HashSet<String> = state
        .iter()
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect();
    state.extend(
        archived
            .into_iter()
            .filter(|i| i["id"].as_str().is_some_and(|id| !held.contains(id))),
    );
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(id: u64, opened: &str, updated: &str, resolved: Option<&str>) -> Value {
        json!({
            "id": id.to_string(),
            "status": if resolved.is_some() { "resolved" } else { "open" },
            "openedAt": opened,
            "updatedAt": updated,
            "resolvedAt": resolved,
            "rootCause": {"alertname": "DiskFull"},
            "acknowledged": {"by": "ann", "at": "2026-01-01T00:05:00.000Z"},
            "alerts": [{}, {}],
        })
    }

    #[test]
    fn rows_carry_the_times_and_the_whole_incident() {
        let i = incident(
            7,
            "2026-01-01T00:00:00.000Z",
            "2026-01-01T01:00:00.250Z",
            Some("2026-01-01T01:00:00.250Z"),
        );
        let r = row(&i, "http://agg-1:9470", 5);
        assert_eq!(r["id"], 7);
        assert_eq!(r["source"], "http://agg-1:9470");
        assert_eq!(r["timestamp"], 1_767_225_600);
        assert_eq!(r["opened_ms"], 1_767_225_600_000i64);
        assert_eq!(r["updated_ms"], 1_767_229_200_250i64);
        assert_eq!(r["archived_ms"], 5);
        assert_eq!(r["acknowledged_ms"], 1_767_225_900_000i64);
        assert_eq!(r["resolved_ms"], 1_767_229_200_250i64);
        assert_eq!(r["root_cause"], "DiskFull");
        assert_eq!(r["alerts"], 2);
        let back: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        assert_eq!(back, i);
        // Open, never acknowledged: zeros.
        let open = json!({"id": "8", "openedAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z", "resolvedAt": null, "acknowledged": null});
        let r = row(&open, "s", 5);
        assert_eq!(
            (r["resolved_ms"].clone(), r["acknowledged_ms"].clone()),
            (json!(0), json!(0))
        );
    }

    #[test]
    fn only_new_and_changed_incidents_are_sent() {
        let mut list = vec![
            incident(1, "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", None),
            incident(2, "2026-01-01T00:00:00Z", "2026-01-01T00:00:03Z", None),
        ];
        list[0]["ageSeconds"] = json!(5);
        let mut sent = HashMap::new();
        let (body, versions) = changed_rows(&list, "s", &sent, 9).unwrap();
        assert_eq!(body.iter().filter(|&&b| b == b'\n').count(), 2);
        assert!(
            String::from_utf8(body)
                .unwrap()
                .contains("\"archived_ms\":9")
        );
        sent.extend(versions);
        // Time passing alone changes nothing.
        list[0]["ageSeconds"] = json!(500);
        assert!(changed_rows(&list, "s", &sent, 10).is_none());
        // An acknowledgement (which leaves updatedAt alone) is a new version.
        list[1]["acknowledged"] = json!({"by": "bob", "at": "2026-01-01T00:09:00Z"});
        let (body, versions) = changed_rows(&list, "s", &sent, 11).unwrap();
        assert_eq!(versions.len(), 1);
        assert!(String::from_utf8(body).unwrap().contains("\"id\":2"));
    }

    #[test]
    fn what_the_aggregator_holds_wins_over_the_archive() {
        let state = vec![incident(
            1,
            "2026-01-01T00:00:00Z",
            "2026-01-02T00:00:00Z",
            None,
        )];
        let archived = vec![
            incident(1, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", None),
            incident(0, "2025-10-01T00:00:00Z", "2025-10-01T00:00:00Z", None),
        ];
        let m = merge(state, archived);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0]["updatedAt"], "2026-01-02T00:00:00Z");
        assert_eq!(m[1]["id"], "0");
    }

    #[test]
    fn sources_are_quoted_as_clickhouse_literals() {
        assert_eq!(literal("http://a:9470"), "'http://a:9470'");
        assert_eq!(literal(r"it's\"), r"'it\'s\\'");
    }
}
