//! The read side of the engine: traces by id, searches, services and operations, the
//! service graph, and the engine's metrics.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use telltale_common::trace::{Span, SpanKind, TraceId};

use super::TraceEngine;
use crate::traces::block;
use crate::traces::store::{Edge, TraceQuerier, TraceSearch, TraceStoreError};

/// Spans by start, each span once (a trace may sit in the head and in blocks).
fn tidy(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_by_key(|s| (s.start_ns, s.span_id));
    let mut seen = std::collections::HashSet::new();
    spans.retain(|s| seen.insert(s.span_id));
    spans
}

impl TraceQuerier for TraceEngine {
    fn trace(&self, id: &TraceId) -> Result<Vec<Span>, TraceStoreError> {
        let mut out: Vec<Span> = self
            .inner
            .head
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .traces
            .get(id)
            .cloned()
            .unwrap_or_default();
        let blocks = self
            .inner
            .blocks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for b in blocks {
            if let Some(ord) = b.index.find(id) {
                out.extend(b.trace(ord)?);
            }
        }
        Ok(tidy(out))
    }

    fn search(&self, q: &TraceSearch) -> Result<Vec<Vec<Span>>, TraceStoreError> {
        // Candidates: (latest start of a span that may match, trace id), from the head and
        // from each block's rows of the service; tags are checked on the spans afterwards.
        let mut cands: HashMap<TraceId, u64> = HashMap::new();
        {
            let head = self.inner.head.read().unwrap_or_else(|e| e.into_inner());
            for (id, spans) in &head.traces {
                if let Some(t) = spans
                    .iter()
                    .filter(|s| q.matches(s))
                    .map(|s| s.start_ns)
                    .max()
                {
                    cands.insert(*id, t);
                }
            }
        }
        let blocks = self
            .inner
            .blocks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // Newest first: the service's sections by their latest start, rows from the newest.
        // Without tags (checked on the spans), the `limit` newest traces are known once
        // `limit` traces are found newer than every row still to read, so a search for the
        // latest traces reads the newest rows only.
        let mut sections: Vec<(&block::Block, &block::ServiceIndex)> = blocks
            .iter()
            .flat_map(|b| {
                b.index
                    .services
                    .iter()
                    .filter(|s| s.name == q.service)
                    .map(move |s| (b.as_ref(), s))
            })
            .filter(|(_, si)| si.max_ns >= q.start_ns && si.min_ns <= q.end_ns)
            .collect();
        sections.sort_by_key(|(_, si)| std::cmp::Reverse(si.max_ns));
        let early = q.tags.is_empty();
        for (b, si) in sections {
            if early && cands.len() >= q.limit {
                let mut ts: Vec<u64> = cands.values().copied().collect();
                ts.sort_unstable_by(|a, b| b.cmp(a));
                if ts[q.limit - 1] > si.max_ns {
                    break;
                }
            }
            let ops: Vec<bool> = si
                .operations
                .iter()
                .map(|(name, _)| q.operation.as_ref().is_none_or(|o| o == name))
                .collect();
            let rows = b.rows(si)?;
            let mut here = std::collections::HashSet::new();
            for i in (0..rows.trace.len()).rev() {
                let (t, d) = (rows.start_ns[i], rows.duration_ns[i]);
                if !ops.get(rows.op[i] as usize).copied().unwrap_or(false)
                    || t < q.start_ns
                    || t > q.end_ns
                    || q.min_duration_ns.is_some_and(|m| d < m)
                    || q.max_duration_ns.is_some_and(|m| d > m)
                {
                    continue;
                }
                // Rows come newest first: a trace's first row is its latest match, and once
                // this section gave `limit` traces its older rows cannot make the cut.
                if early && here.len() >= q.limit && !here.contains(&rows.trace[i]) {
                    break;
                }
                here.insert(rows.trace[i]);
                if let Some(id) = b.index.id(rows.trace[i]) {
                    let e = cands.entry(id).or_insert(t);
                    *e = (*e).max(t);
                }
            }
        }
        // A candidate's time is an upper bound of its latest span matching everything (tags
        // are checked on the spans): take candidates by it, newest first, until `limit`
        // verified traces are at least as new as the next candidate could be.
        let mut order: Vec<(u64, TraceId)> = cands.into_iter().map(|(id, t)| (t, id)).collect();
        order.sort_by(|a, b| b.cmp(a));
        let mut out: Vec<(u64, Vec<Span>)> = Vec::new();
        for (bound, id) in order {
            if out.len() >= q.limit {
                out.sort_by_key(|x| std::cmp::Reverse(x.0));
                out.truncate(q.limit);
                if out[q.limit - 1].0 >= bound {
                    break;
                }
            }
            let spans = self.trace(&id)?;
            if let Some(t) = spans
                .iter()
                .filter(|s| q.matches(s))
                .map(|s| s.start_ns)
                .max()
            {
                out.push((t, spans));
            }
        }
        out.sort_by_key(|x| std::cmp::Reverse(x.0));
        out.truncate(q.limit);
        Ok(out.into_iter().map(|(_, s)| s).collect())
    }

    fn services(&self) -> Vec<String> {
        let mut set: BTreeSet<String> = self
            .inner
            .head
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .operations
            .keys()
            .cloned()
            .collect();
        for b in self
            .inner
            .blocks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            set.extend(b.index.services.iter().map(|s| s.name.clone()));
        }
        set.into_iter().collect()
    }

    fn operations(&self, service: &str) -> Vec<(String, SpanKind)> {
        let mut set: BTreeSet<(String, i32)> = self
            .inner
            .head
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .operations
            .get(service)
            .cloned()
            .unwrap_or_default();
        for b in self
            .inner
            .blocks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            for s in b.index.services.iter().filter(|s| s.name == service) {
                set.extend(s.operations.iter().cloned());
            }
        }
        set.into_iter()
            .map(|(n, k)| (n, SpanKind::from_otlp(k)))
            .collect()
    }

    fn dependencies(&self, start_ns: u64, end_ns: u64) -> Vec<Edge> {
        let (from, to) = (start_ns / 60_000_000_000, end_ns / 60_000_000_000);
        let mut acc: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        let mut add = |m: u64, p: &str, c: &str, n: u64, e: u64| {
            if m >= from && m <= to {
                let x = acc.entry((p.to_string(), c.to_string())).or_default();
                x.0 += n;
                x.1 += e;
            }
        };
        for ((m, p, c), (n, e)) in &self
            .inner
            .head
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .edges
        {
            add(*m, p, c, *n, *e);
        }
        for b in self
            .inner
            .blocks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            for (m, p, c, n, e) in &b.index.edges {
                add(*m, p, c, *n, *e);
            }
        }
        acc.into_iter()
            .map(|((parent, child), (calls, errors))| Edge {
                parent,
                child,
                calls,
                errors,
            })
            .collect()
    }

    fn graph_series(&self, t_ms: i64) -> Vec<telltale_common::model::SeriesSamples> {
        self.inner
            .graph
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .series(t_ms)
    }

    fn topology(&self) -> crate::traces::graph::Topology {
        self.inner
            .graph
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .topology()
    }

    fn render_metrics(&self, out: &mut String) {
        use crate::selfmetrics::{counter, gauge};
        let c = &self.inner.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let plain: [(&str, &str, &AtomicU64); 11] = [
            (
                "spans_received",
                "Spans written to the trace WAL.",
                &c.spans_received,
            ),
            (
                "spans_kept",
                "Spans of traces kept by tail sampling.",
                &c.spans_kept,
            ),
            (
                "spans_dropped",
                "Spans of traces dropped by tail sampling.",
                &c.spans_dropped,
            ),
            (
                "early_decisions",
                "Traces decided before their wait was over, for lack of room.",
                &c.early_decisions,
            ),
            (
                "duplicate_batches",
                "Agent batches of spans stored before.",
                &c.duplicates,
            ),
            (
                "corrupt_records",
                "Damaged trace WAL records skipped at start-up.",
                &c.corrupt_records,
            ),
            (
                "quarantined_blocks",
                "Trace blocks that did not open.",
                &c.quarantined_blocks,
            ),
            ("blocks_written", "Trace blocks written.", &c.blocks_written),
            (
                "expired_blocks",
                "Trace blocks deleted by retention.",
                &c.expired_blocks,
            ),
            (
                "write_errors",
                "Failed trace WAL or block writes.",
                &c.write_errors,
            ),
            (
                "spans_foreign",
                "Spans of agent batches whose trace another member of the pool samples (forwarded to it).",
                &c.spans_foreign,
            ),
        ];
        for (name, help, v) in plain {
            counter(
                out,
                &format!("telltale_aggregator_traces_{name}_total"),
                help,
                n(v),
            );
        }
        out.push_str("# HELP telltale_aggregator_traces_decisions_total Tail-sampling decisions by reason.\n# TYPE telltale_aggregator_traces_decisions_total counter\n");
        for (i, r) in ["error", "slow", "sampled", "dropped"].iter().enumerate() {
            out.push_str(&format!(
                "telltale_aggregator_traces_decisions_total{{reason=\"{r}\"}} {}\n",
                n(&c.decisions[i])
            ));
        }
        let pending = self
            .inner
            .sampler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending_spans();
        gauge(
            out,
            "telltale_aggregator_traces_pending_spans",
            "Spans waiting for their trace's sampling decision.",
            pending as u64,
        );
        let (blocks, bytes) = self.stats();
        gauge(
            out,
            "telltale_aggregator_traces_blocks",
            "Trace blocks.",
            blocks as u64,
        );
        gauge(
            out,
            "telltale_aggregator_traces_block_bytes",
            "Bytes of trace blocks.",
            bytes,
        );
    }
}
