//! What the aggregator knows about each agent: connection state, last batch, counters.
//! Served at `/api/v1/agents`; the source of the `up` series.
//!
//! An agent with several aggregators that leaves this one for another of its list closes its
//! connection saying so ([`telltale_common::wire::agent_close::MOVED`]): it is marked as moved
//! away — its `up` series ends (a staleness marker, not 0) and the ticker writes none for it,
//! so no `AgentDown` fires here for an agent that is up elsewhere. Moved agents are kept in
//! `DATA_DIR/agents-moved.json`, so a restart does not call them down either; a connection
//! of the agent clears the mark.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::Serialize;

/// One agent's state.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AgentInfo {
    /// The name from its certificate.
    pub name: String,
    /// The address of its last connection.
    pub address: Option<String>,
    /// Whether it is connected now.
    pub connected: bool,
    /// Agent software version from its hello.
    pub version: Option<String>,
    /// When it last connected (ms since the epoch).
    pub connected_since_ms: Option<i64>,
    /// When its last batch was stored (ms since the epoch).
    pub last_batch_ms: Option<i64>,
    /// Sequence number of its last stored batch.
    pub last_sequence: Option<u64>,
    /// Batches stored since the aggregator started.
    pub batches: u64,
    /// Samples stored since the aggregator started.
    pub samples: u64,
    /// Its sources as its hello named them (`host`, `scrape:<job>`, `logs:file`…; empty
    /// until it connects, and from agents that do not say).
    pub sources: Vec<String>,
    /// It left for another aggregator of its list (not down: no `up` is written for it).
    pub moved_away: bool,
}

/// The registry of agents. Connection counts handle an agent that reconnects before its old
/// connection has timed out: it is connected while any of its connections is open.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<BTreeMap<String, (AgentInfo, u32)>>,
    /// Agents moved away, and the file they are kept in (none: not kept).
    moved: Mutex<(BTreeSet<String>, Option<PathBuf>)>,
}

impl Registry {
    /// A registry that keeps the agents that moved away in `path` (read now; a missing or
    /// unreadable file is an empty list).
    pub fn keeping_moved(path: PathBuf) -> Registry {
        let set: BTreeSet<String> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Registry {
            inner: Mutex::default(),
            moved: Mutex::new((set, Some(path))),
        }
    }

    /// Marks or clears an agent as moved away, and saves the list if it changed.
    fn set_moved(&self, name: &str, moved: bool) {
        let mut g = self.moved.lock().unwrap_or_else(|e| e.into_inner());
        let changed = if moved {
            g.0.insert(name.to_string())
        } else {
            g.0.remove(name)
        };
        if let (true, Some(path)) = (changed, &g.1) {
            let tmp = path.with_extension("tmp");
            let res = serde_json::to_vec(&g.0)
                .map_err(std::io::Error::other)
                .and_then(|b| std::fs::write(&tmp, b))
                .and_then(|_| std::fs::rename(&tmp, path));
            if let Err(e) = res {
                tracing::warn!(path = %path.display(), error = %e, "cannot save the agents that moved away");
            }
        }
    }

    /// Records that an agent left for another aggregator of its list.
    pub fn moved(&self, name: &str) {
        self.set_moved(name, true);
        self.with(name, |i, _| i.moved_away = true);
    }

    fn with<R>(&self, name: &str, f: impl FnOnce(&mut AgentInfo, &mut u32) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (info, conns) = g.entry(name.to_string()).or_insert_with(|| {
            (
                AgentInfo {
                    name: name.to_string(),
                    address: None,
                    connected: false,
                    version: None,
                    connected_since_ms: None,
                    last_batch_ms: None,
                    last_sequence: None,
                    batches: 0,
                    samples: 0,
                    sources: Vec::new(),
                    moved_away: false,
                },
                0,
            )
        });
        f(info, conns)
    }

    /// Records a known agent (from stored data) without connecting it.
    pub fn know(&self, name: &str) {
        let moved = self
            .moved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .contains(name);
        self.with(name, |i, _| i.moved_away = moved);
    }

    /// Records a new connection.
    pub fn connected(
        &self,
        name: &str,
        addr: SocketAddr,
        version: &str,
        sources: &[String],
        now_ms: i64,
    ) {
        // Bounded: the list is only shown (an agent with hundreds of scrape jobs is listed by
        // its first 256), whatever a client sends.
        let sources: Vec<String> = sources
            .iter()
            .take(256)
            .map(|s| s.chars().take(200).collect())
            .collect();
        self.set_moved(name, false);
        self.with(name, |i, c| {
            i.sources = sources;
            *c += 1;
            i.connected = true;
            i.moved_away = false;
            i.address = Some(addr.to_string());
            i.version = Some(version.to_string());
            i.connected_since_ms = Some(now_ms);
        });
    }

    /// Records a closed connection; returns whether the agent is now disconnected.
    pub fn disconnected(&self, name: &str) -> bool {
        self.with(name, |i, c| {
            *c = c.saturating_sub(1);
            i.connected = *c > 0;
            !i.connected
        })
    }

    /// Records a stored batch.
    pub fn batch(&self, name: &str, seq: u64, samples: usize, now_ms: i64) {
        self.with(name, |i, _| {
            i.last_batch_ms = Some(now_ms);
            i.last_sequence = Some(i.last_sequence.map_or(seq, |s| s.max(seq)));
            i.batches += 1;
            i.samples += samples as u64;
        });
    }

    /// All agents, by name.
    pub fn list(&self) -> Vec<AgentInfo> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.values().map(|(i, _)| i.clone()).collect()
    }

    /// Number of connected agents.
    pub fn connected_count(&self) -> usize {
        self.list().iter().filter(|a| a.connected).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_that_moved_away_are_remembered_across_restarts_until_they_connect() {
        let d = tempfile::tempdir().expect("dir");
        let path = d.path().join("agents-moved.json");
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let r = Registry::keeping_moved(path.clone());
        r.connected("a", addr, "1", &[], 1);
        r.connected("b", addr, "1", &[], 1);
        assert!(r.disconnected("a") && r.disconnected("b"));
        r.moved("a");
        let state = |r: &Registry| -> Vec<(String, bool)> {
            r.list()
                .into_iter()
                .map(|i| (i.name, i.moved_away))
                .collect()
        };
        assert_eq!(state(&r), vec![("a".into(), true), ("b".into(), false)]);
        // A restart knows both from stored data: a is still away, b is down.
        let r = Registry::keeping_moved(path.clone());
        r.know("a");
        r.know("b");
        assert_eq!(state(&r), vec![("a".into(), true), ("b".into(), false)]);
        // a comes back: no longer away, here or after the next restart.
        r.connected("a", addr, "1", &[], 2);
        let r = Registry::keeping_moved(path);
        r.know("a");
        assert_eq!(state(&r), vec![("a".into(), false)]);
    }

    #[test]
    fn an_agent_is_connected_while_any_connection_is_open() {
        let r = Registry::default();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        r.connected("x", a, "1", &[], 1);
        r.connected("x", a, "1", &["host".into()], 2);
        assert!(!r.disconnected("x"));
        assert!(r.list()[0].connected);
        assert!(r.disconnected("x"));
        r.batch("x", 5, 10, 3);
        r.batch("x", 4, 10, 4);
        let i = &r.list()[0];
        assert_eq!(
            (i.connected, i.last_sequence, i.samples),
            (false, Some(5), 20)
        );
        assert_eq!(i.sources, ["host"], "the newest hello's sources are kept");
        let many: Vec<String> = (0..300)
            .map(|k| format!("scrape:{}", "j".repeat(k)))
            .collect();
        r.connected("y", a, "1", &many, 5);
        let y = r.list().into_iter().find(|x| x.name == "y").unwrap();
        assert_eq!(y.sources.len(), 256);
        assert!(y.sources.iter().all(|s| s.chars().count() <= 200));
    }
}
