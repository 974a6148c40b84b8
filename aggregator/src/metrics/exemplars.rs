//! Exemplars: for a series, a few observations with labels that point elsewhere — the trace
//! id of a span counted into a latency bucket — served by `/api/v1/query_exemplars` so
//! Grafana draws them on a histogram panel and links to the trace.
//!
//! Like Prometheus' exemplar storage, a fixed number of the newest exemplars is kept (a
//! circular buffer, [`DEFAULT_CAPACITY`]); unlike samples they are not compressed into
//! blocks. They are written to `exemplars.log` (framed records, synced before the batch that
//! carried them is acknowledged) and read back at start-up, so a restart keeps them; the file
//! is rewritten with the buffer's contents once it holds twice the capacity.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use telltale_common::codec;
use telltale_common::model::Labels;
use telltale_common::wire::ExemplarSeries;

use crate::durable::frames;
use crate::labels::Matcher;
use crate::metrics::storage::stamp_agent_labels;

/// Exemplars kept (Prometheus' `--storage.exemplars.exemplars-limit` default).
pub const DEFAULT_CAPACITY: usize = 100_000;

/// One stored exemplar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// The series it belongs to.
    pub series: Labels,
    /// Its labels (`trace_id`...).
    pub labels: Vec<(String, String)>,
    /// When (ms).
    pub t_ms: i64,
    /// The observed value.
    pub value: f64,
}

struct Ring {
    entries: VecDeque<Stored>,
    /// Exemplars in the file.
    in_file: usize,
}

/// The store.
pub struct Exemplars {
    ring: Mutex<Ring>,
    path: PathBuf,
    capacity: usize,
}

impl Exemplars {
    /// Opens the store in `dir`, reading back what the file holds (a damaged record is
    /// skipped).
    pub fn open(dir: &Path, capacity: usize) -> std::io::Result<Exemplars> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("exemplars.log");
        let f = frames::read_frames(&path)?;
        let mut entries = VecDeque::new();
        for p in &f.payloads {
            if let Ok(list) = codec::decode_payload::<Vec<Stored>>(p) {
                entries.extend(list);
            }
        }
        let in_file = entries.len();
        while entries.len() > capacity {
            entries.pop_front();
        }
        Ok(Exemplars {
            ring: Mutex::new(Ring { entries, in_file }),
            path,
            capacity: capacity.max(1),
        })
    }

    /// Stores an agent's exemplars (series stamped like its samples: `instance` = the agent,
    /// a default `job`); durable when it returns `Ok`.
    pub fn add(&self, agent: &str, list: Vec<ExemplarSeries>) -> std::io::Result<usize> {
        let mut new = Vec::new();
        for s in list {
            let mut pairs: Vec<(&str, &str)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            if !stamp_agent_labels(&mut pairs, agent) {
                continue;
            }
            let series = Labels::from_pairs(pairs);
            for e in s.exemplars {
                new.push(Stored {
                    series: series.clone(),
                    labels: e.labels,
                    t_ms: e.t_ms,
                    value: e.value,
                });
            }
        }
        if new.is_empty() {
            return Ok(0);
        }
        let payload =
            codec::encode_payload(&new).map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        frames::append_frames(&self.path, &[payload])?;
        let n = new.len();
        ring.in_file += n;
        ring.entries.extend(new);
        while ring.entries.len() > self.capacity {
            ring.entries.pop_front();
        }
        // Rewrite the file with what is kept once it has grown past twice the buffer.
        if ring.in_file > self.capacity * 2 {
            let all: Vec<Stored> = ring.entries.iter().cloned().collect();
            let p =
                codec::encode_payload(&all).map_err(|e| std::io::Error::other(e.to_string()))?;
            frames::write_atomic(&self.path, &[p])?;
            ring.in_file = all.len();
        }
        Ok(n)
    }

    /// Exemplars of series matching any of `sets`, with `start_ms <= t <= end_ms`, by series
    /// (sorted), each oldest first.
    pub fn query(
        &self,
        sets: &[Vec<Matcher>],
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<(Labels, Vec<Stored>)> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: BTreeMap<Labels, Vec<Stored>> = BTreeMap::new();
        for e in &ring.entries {
            if e.t_ms < start_ms || e.t_ms > end_ms {
                continue;
            }
            if sets.iter().any(|ms| {
                ms.iter()
                    .all(|m| m.matches(e.series.get(&m.name).unwrap_or("")))
            }) {
                out.entry(e.series.clone()).or_default().push(e.clone());
            }
        }
        for v in out.values_mut() {
            v.sort_by_key(|e| e.t_ms);
        }
        out.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telltale_common::wire::Exemplar;

    fn series(name: &str, service: &str, n: usize, t0: i64) -> ExemplarSeries {
        ExemplarSeries {
            labels: vec![
                ("__name__".into(), name.into()),
                ("service".into(), service.into()),
                ("instance".into(), "liar".into()),
            ],
            exemplars: (0..n)
                .map(|i| Exemplar {
                    labels: vec![("trace_id".into(), format!("{i:032x}"))],
                    t_ms: t0 + i as i64,
                    value: i as f64 / 10.0,
                })
                .collect(),
        }
    }

    #[test]
    fn exemplars_are_found_by_selector_and_time_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("dir");
        let x = Exemplars::open(dir.path(), 1000).expect("open");
        x.add(
            "web-1",
            vec![
                series("lat_bucket", "api", 5, 1000),
                series("lat_bucket", "db", 3, 2000),
            ],
        )
        .expect("add");
        let sel = |svc: &str| {
            vec![vec![
                Matcher::equal("__name__", "lat_bucket"),
                Matcher::equal("service", svc),
            ]]
        };
        let got = x.query(&sel("api"), 0, i64::MAX);
        assert_eq!(got.len(), 1);
        // The series is stamped with the agent's name, not the payload's claim.
        assert_eq!(got[0].0.get("instance"), Some("web-1"));
        assert_eq!(
            got[0].0.get("job"),
            Some(crate::metrics::storage::AGENT_JOB)
        );
        assert_eq!(got[0].1.len(), 5);
        assert_eq!(x.query(&sel("api"), 1001, 1003)[0].1.len(), 3);
        assert!(x.query(&sel("web"), 0, i64::MAX).is_empty());
        drop(x);
        let x = Exemplars::open(dir.path(), 1000).expect("reopen");
        assert_eq!(x.query(&sel("db"), 0, i64::MAX)[0].1.len(), 3);
    }

    #[test]
    fn only_the_newest_are_kept_and_the_file_stays_bounded() {
        let dir = tempfile::tempdir().expect("dir");
        let x = Exemplars::open(dir.path(), 100).expect("open");
        for i in 0..300 {
            x.add("a", vec![series("m", "s", 2, i * 10)]).expect("add");
        }
        let all = x.query(&[vec![Matcher::equal("__name__", "m")]], 0, i64::MAX);
        assert_eq!(all[0].1.len(), 100);
        assert_eq!(all[0].1[0].t_ms, 2500);
        drop(x);
        let x = Exemplars::open(dir.path(), 100).expect("reopen");
        let all = x.query(&[vec![Matcher::equal("__name__", "m")]], 0, i64::MAX);
        assert_eq!(all[0].1.len(), 100);
        assert_eq!(all[0].1.last().map(|e| e.t_ms), Some(2991));
        let f = frames::read_frames(&dir.path().join("exemplars.log")).expect("read");
        let stored: usize = f
            .payloads
            .iter()
            .map(|p| {
                codec::decode_payload::<Vec<Stored>>(p)
                    .map(|v| v.len())
                    .unwrap_or(0)
            })
            .sum();
        assert!(stored <= 200, "{stored} exemplars in the file");
    }
}
