//! A small in-memory engine behind the storage traits: no files, no limits, no rollups of
//! its own (the trait's default computes them from raw samples). PromQL's script tests run on
//! it, and it is the reference a new engine can be compared with: what it answers is what the
//! traits mean, with nothing of the TSDB's chunking, caching or compaction in the way.
//!
//! Semantics shared with the TSDB: agent batches are de-duplicated by origin and stamped
//! with [`stamp_agent_labels`]; a sample for a timestamp the series already has replaces it
//! (and counts as overwritten); a series without a metric name is not stored; a malformed
//! payload is [`AppendOutcome::Invalid`] and stores nothing.

use std::collections::{BTreeMap, HashSet};
use std::sync::RwLock;

use telltale_common::codec;
use telltale_common::model::{Labels, METRIC_NAME, Sample};
use telltale_common::wire::{ClientMessageRef, Event};

use super::{
    Admin, AppendData, AppendOutcome, AppendRequest, Appender, BoxFuture, Matcher, Origin, Querier,
    SeriesData, StorageError, StorageStats, stamp_agent_labels,
};
use crate::metrics::remote_write;

#[derive(Default)]
struct State {
    /// Series by their (sorted) label set, samples ordered by time.
    series: BTreeMap<Labels, BTreeMap<i64, f64>>,
    events: Vec<Event>,
    seen: HashSet<Origin>,
    samples: u64,
    overwritten: u64,
}

/// The in-memory engine.
#[derive(Default)]
pub struct MemStorage {
    state: RwLock<State>,
}

impl MemStorage {
    /// An empty engine.
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// Stores samples synchronously (what [`Appender::append`] does, without the future).
    pub fn append_now(&self, req: AppendRequest) -> AppendOutcome {
        let (series, events) = match decode(&req) {
            Ok(x) => x,
            Err(reason) => return AppendOutcome::Invalid { reason },
        };
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        if let Some(o) = &req.origin
            && !st.seen.insert(o.clone())
        {
            return AppendOutcome::Duplicate;
        }
        let mut stored = 0;
        for (labels, samples) in series {
            let row = st.series.entry(labels).or_default();
            let mut overwritten = 0;
            for s in &samples {
                if row.insert(s.0, s.1).is_some() {
                    overwritten += 1;
                }
            }
            st.overwritten += overwritten;
            st.samples += samples.len() as u64 - overwritten;
            stored += samples.len();
        }
        st.events.extend(events);
        AppendOutcome::Stored { samples: stored }
    }
}

type Decoded = (Vec<(Labels, Vec<Sample>)>, Vec<Event>);

/// The request's series as sorted label sets (stamped for agents), and its events.
fn decode(req: &AppendRequest) -> Result<Decoded, String> {
    let agent = req.origin.as_ref().map(|o| o.agent.as_str());
    fn finish<'a>(
        agent: Option<&'a str>,
        mut pairs: Vec<(&'a str, &'a str)>,
        samples: Vec<Sample>,
    ) -> Option<(Labels, Vec<Sample>)> {
        let keep = match agent {
            Some(a) => stamp_agent_labels(&mut pairs, a),
            None => {
                pairs.retain(|(_, v)| !v.is_empty());
                pairs.sort_by(|a, b| a.0.cmp(b.0));
                pairs.dedup_by(|later, earlier| later.0 == earlier.0);
                pairs.iter().any(|(k, _)| *k == METRIC_NAME)
            }
        };
        keep.then(|| (Labels::from_pairs(pairs), samples))
    }
    match &req.data {
        AppendData::Series(series) => Ok((
            series
                .iter()
                .filter_map(|s| finish(agent, s.labels.iter().collect(), s.samples.clone()))
                .collect(),
            Vec::new(),
        )),
        AppendData::RemoteWrite(raw) => {
            let sc = remote_write::scan(raw).map_err(|e| e.to_string())?;
            let mut out = Vec::with_capacity(sc.series.len());
            for s in &sc.series {
                let pairs = remote_write::labels(&s.key).map_err(|e| e.to_string())?;
                out.extend(finish(agent, pairs, sc.samples[s.samples.clone()].to_vec()));
            }
            Ok((out, Vec::new()))
        }
        AppendData::Encoded(bytes) => {
            match codec::decode_borrowed::<ClientMessageRef>(bytes).map_err(|e| e.to_string())? {
                ClientMessageRef::Batch(b) => Ok((
                    b.series
                        .into_iter()
                        .filter_map(|s| finish(agent, s.labels, s.samples))
                        .collect(),
                    b.events,
                )),
                ClientMessageRef::Hello(_) | ClientMessageRef::CommandResult(_) => {
                    Err("not a batch".into())
                }
            }
        }
    }
}

impl Appender for MemStorage {
    fn append(&self, req: AppendRequest) -> BoxFuture<'_, Result<AppendOutcome, StorageError>> {
        let out = self.append_now(req);
        Box::pin(async move { Ok(out) })
    }
}

impl Querier for MemStorage {
    fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        max_samples: usize,
    ) -> Result<Vec<SeriesData>, StorageError> {
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        let mut total = 0usize;
        if start_ms > end_ms {
            return Ok(out);
        }
        for (labels, row) in &st.series {
            if !matchers.iter().all(|m| m.matches_labels(labels)) {
                continue;
            }
            let samples: Vec<Sample> = row
                .range(start_ms..=end_ms)
                .map(|(&t, &v)| Sample(t, v))
                .collect();
            if samples.is_empty() {
                continue;
            }
            total += samples.len();
            if total > max_samples {
                return Err(StorageError::TooManySamples { limit: max_samples });
            }
            out.push(SeriesData {
                labels: labels.clone(),
                samples,
            });
        }
        Ok(out)
    }

    fn series(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<Labels> {
        self.select(matchers, start_ms, end_ms, usize::MAX)
            .map(|d| d.into_iter().map(|s| s.labels).collect())
            .unwrap_or_default()
    }

    fn events(&self, matchers: &[Matcher], since_ms: i64, limit: usize) -> Vec<Event> {
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        let mut hits: Vec<Event> = st
            .events
            .iter()
            .filter(|e| e.t_ms >= since_ms)
            .filter(|e| {
                matchers.iter().all(|m| {
                    let v = if m.name == "kind" {
                        Some(e.kind.as_str())
                    } else {
                        e.labels
                            .iter()
                            .find(|(k, _)| *k == m.name)
                            .map(|(_, v)| v.as_str())
                    };
                    m.matches(v.unwrap_or(""))
                })
            })
            .cloned()
            .collect();
        hits.sort_by_key(|e| e.t_ms);
        let drop = hits.len().saturating_sub(limit);
        hits.drain(..drop);
        hits
    }
}

impl Admin for MemStorage {
    fn delete_series(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<u64, StorageError> {
        // The TSDB's meaning: what is stored now, so the end is clamped to now.
        let end = end.min(telltale_common::model::now_ms());
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        st.series.retain(|labels, row| {
            if matchers.iter().all(|m| m.matches_labels(labels)) {
                n += 1;
                if start <= end {
                    row.retain(|t, _| *t < start || *t > end);
                }
            }
            !row.is_empty()
        });
        Ok(n)
    }

    fn stats(&self) -> StorageStats {
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        StorageStats {
            series: st.series.len() as u64,
            samples: st.samples,
            overwritten: st.overwritten,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::storage::{Storage, rollup};
    use telltale_common::model::SeriesSamples;

    fn series(pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> SeriesSamples {
        SeriesSamples {
            labels: Labels::from_pairs(pairs.iter().copied()),
            samples: samples.iter().map(|&(t, v)| Sample(t, v)).collect(),
        }
    }

    #[test]
    fn stores_selects_overwrites_and_deduplicates() {
        let m = MemStorage::new();
        let req = |origin: Option<Origin>, s| AppendRequest {
            origin,
            data: AppendData::Series(s),
        };
        let o = Origin {
            agent: "web-1".into(),
            epoch: 1,
            sequence: 7,
        };
        let s = vec![series(
            &[("__name__", "up"), ("instance", "liar")],
            &[(1000, 1.0), (2000, 0.0)],
        )];
        assert_eq!(
            m.append_now(req(Some(o.clone()), s.clone())),
            AppendOutcome::Stored { samples: 2 }
        );
        assert_eq!(m.append_now(req(Some(o), s)), AppendOutcome::Duplicate);
        // No metric name: not stored. A repeated timestamp replaces the sample.
        m.append_now(req(None, vec![series(&[("a", "1")], &[(1, 1.0)])]));
        m.append_now(req(
            None,
            vec![series(&[("__name__", "x")], &[(1000, 1.0), (1000, 2.0)])],
        ));
        let st = m.stats();
        assert_eq!((st.series, st.samples, st.overwritten), (2, 3, 1));
        let up = m
            .select(&[Matcher::equal("__name__", "up")], 0, 1500, 10)
            .unwrap();
        assert_eq!(up.len(), 1);
        assert_eq!(up[0].labels.get("instance"), Some("web-1"));
        assert_eq!(
            up[0].labels.get("job"),
            Some(crate::metrics::storage::AGENT_JOB)
        );
        assert_eq!(up[0].samples, vec![Sample(1000, 1.0)]);
        let x = m
            .select(&[Matcher::equal("__name__", "x")], 0, 5000, 10)
            .unwrap();
        assert_eq!(x[0].samples, vec![Sample(1000, 2.0)]);
        assert!(matches!(
            m.select(&[], 0, 5000, 2),
            Err(StorageError::TooManySamples { limit: 2 })
        ));
    }

    #[test]
    fn malformed_payloads_are_invalid_and_store_nothing() {
        let m = MemStorage::new();
        for data in [
            AppendData::Encoded(vec![0xc1, 0x00]),
            AppendData::RemoteWrite(vec![0x0a, 0xff]),
        ] {
            let out = m.append_now(AppendRequest { origin: None, data });
            assert!(matches!(out, AppendOutcome::Invalid { .. }), "{out:?}");
        }
        assert_eq!(m.stats(), StorageStats::default());
    }

    #[test]
    fn remote_write_and_rollups_through_the_traits() {
        let m = MemStorage::new();
        let s: Vec<(i64, f64)> = (0..=24).map(|i| (i * 300_000, i as f64)).collect();
        let body = remote_write::encode_raw(&[series(&[("__name__", "m")], &s)]);
        let out = m.append_now(AppendRequest {
            origin: None,
            data: AppendData::RemoteWrite(body),
        });
        assert_eq!(out, AppendOutcome::Stored { samples: 25 });
        // Through `dyn Storage`, as the aggregator holds an engine.
        let dynamic: &dyn Storage = &m;
        let r = dynamic
            .select_rollup(&[], 3_600_000, 7_200_000, 3_600_000, 100)
            .unwrap();
        assert_eq!(r.len(), 1);
        let b = &r[0].buckets;
        assert_eq!(
            b.iter().map(|b| b.end).collect::<Vec<_>>(),
            [3_600_000, 7_200_000]
        );
        assert_eq!(
            rollup::window(b, 7_200_000, 3_600_000, rollup::Agg::Count),
            Some(13.0)
        );
        assert_eq!(
            dynamic.label_values("__name__", &[], 0, 1),
            vec!["m".to_string()]
        );
    }
}
