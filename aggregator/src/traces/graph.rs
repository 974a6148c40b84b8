//! Calls between services, matched span by span as kept spans arrive: a span whose parent
//! was seen under another service is a call from that service to the span's. A trace's spans
//! come from several hosts in any order and may straddle a block cut, so parents are looked
//! up among the recently seen spans (not within one batch or block), and children that came
//! before their parent wait for it. Both memories are bounded (oldest forgotten first).
//! Every span received is observed, before sampling (so counts are the real traffic, as for
//! the RED metrics). Calls are counted per minute of the child span's start, so a time range
//! can be asked; and as running totals with the child (server) span's duration, written as
//! Tempo's service graph series ([`Graph::series`]). The hosts each service's spans came
//! through (`instance`) are noted too: with the calls, that is the topology incident
//! correlation learns ([`Graph::topology`]).
//! The memory (spans remembered, children waiting, running totals, hosts) is written into the
//! trace WAL at each block cut ([`Memory`]) and restored when the WAL is replayed, so a call
//! whose parent came before a restart and its child after is counted, and the totals go on
//! instead of starting from zero.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use telltale_common::model::{Labels, Sample, SeriesSamples};
use telltale_common::trace::{Span, SpanId, SpanStatus, TraceId, id_bytes};

/// Calls and errors by (minute, parent service, child service).
pub type Edges = BTreeMap<(u64, String, String), (u64, u64)>;

/// Spans remembered for parent lookups (and children waiting), each.
const REMEMBERED: usize = 200_000;

/// A child seen before its parent: its service, whether it failed, its minute, its duration
/// (s).
type Waiting = (String, bool, u64, f64);

/// Upper bounds of the call duration buckets (s): Tempo's service graph defaults.
pub const BUCKETS: [f64; 8] = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8];

/// Most service pairs and services with hosts tracked (new ones past it are not).
const MAX_PAIRS: usize = 10_000;

/// Running totals of the calls from one service to another.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Calls.
    pub calls: u64,
    /// Calls whose child span failed.
    pub failed: u64,
    /// Calls at or under each bound (not cumulative).
    pub buckets: [u64; BUCKETS.len()],
    /// Sum of the child spans' durations (s).
    pub sum_s: f64,
}

/// What correlation learns from traces.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Topology {
    /// (caller, called) services.
    pub calls: Vec<(String, String)>,
    /// (service, host) pairs.
    pub hosts: Vec<(String, String)>,
}

/// A span remembered by the matcher: trace and span id.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Key(
    #[serde(with = "id_bytes")] TraceId,
    #[serde(with = "id_bytes")] SpanId,
);

/// The matcher's state, oldest remembered first (see the module doc).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Memory {
    seen: Vec<(Key, String)>,
    waiting: Vec<(Key, Vec<Waiting>)>,
    totals: Vec<((String, String), Totals)>,
    hosts: Vec<(String, Vec<String>)>,
}

/// The matcher.
#[derive(Debug, Default)]
pub struct Graph {
    seen: HashMap<(TraceId, SpanId), String>,
    seen_order: VecDeque<(TraceId, SpanId)>,
    waiting: HashMap<(TraceId, SpanId), Vec<Waiting>>,
    waiting_order: VecDeque<(TraceId, SpanId)>,
    totals: BTreeMap<(String, String), Totals>,
    hosts: BTreeMap<String, std::collections::BTreeSet<String>>,
}

impl Graph {
    /// Its state, to be restored by [`Graph::restore`].
    pub fn memory(&self) -> Memory {
        Memory {
            seen: self
                .seen_order
                .iter()
                .filter_map(|k| Some((Key(k.0, k.1), self.seen.get(k)?.clone())))
                .collect(),
            waiting: self
                .waiting_order
                .iter()
                .filter_map(|k| Some((Key(k.0, k.1), self.waiting.get(k)?.clone())))
                .collect(),
            totals: self
                .totals
                .iter()
                .map(|(k, t)| (k.clone(), t.clone()))
                .collect(),
            hosts: self
                .hosts
                .iter()
                .map(|(s, hs)| (s.clone(), hs.iter().cloned().collect()))
                .collect(),
        }
    }

    /// A matcher in the state `m` describes (bounds applied again).
    pub fn restore(m: Memory) -> Graph {
        let mut g = Graph::default();
        for (Key(t, s), service) in m.seen.into_iter().rev().take(REMEMBERED) {
            if g.seen.insert((t, s), service).is_none() {
                g.seen_order.push_front((t, s));
            }
        }
        for (Key(t, s), children) in m.waiting.into_iter().rev().take(REMEMBERED) {
            if g.waiting.insert((t, s), children).is_none() {
                g.waiting_order.push_front((t, s));
            }
        }
        g.totals = m.totals.into_iter().take(MAX_PAIRS).collect();
        g.hosts = m
            .hosts
            .into_iter()
            .take(MAX_PAIRS)
            .map(|(s, hs)| (s, hs.into_iter().take(1000).collect()))
            .collect();
        g
    }

    /// Whether it remembers nothing.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty() && self.waiting.is_empty() && self.totals.is_empty()
    }

    fn count(&mut self, out: &mut Edges, parent: &str, child: &Waiting) {
        let (service, error, minute, secs) = child;
        if parent == service {
            return;
        }
        let e = out
            .entry((*minute, parent.to_string(), service.clone()))
            .or_default();
        e.0 += 1;
        e.1 += u64::from(*error);
        let key = (parent.to_string(), service.clone());
        if !self.totals.contains_key(&key) && self.totals.len() >= MAX_PAIRS {
            return;
        }
        let t = self.totals.entry(key).or_default();
        t.calls += 1;
        t.failed += u64::from(*error);
        t.sum_s += secs;
        if let Some(b) = BUCKETS.iter().position(|le| secs <= le) {
            t.buckets[b] += 1;
        }
    }

    /// Takes a received span; the calls it completes are counted into `out` (by minute)
    /// and the running totals.
    pub fn observe(&mut self, s: &Span, out: &mut Edges) {
        if let Some((_, host)) = s.resource.iter().find(|(k, _)| k == "instance")
            && (self.hosts.contains_key(&s.service) || self.hosts.len() < MAX_PAIRS)
        {
            let set = self.hosts.entry(s.service.clone()).or_default();
            if !set.contains(host) && set.len() < 1000 {
                set.insert(host.clone());
            }
        }
        let me: Waiting = (
            s.service.clone(),
            s.status == SpanStatus::Error,
            s.start_ns / 60_000_000_000,
            s.duration_ns() as f64 / 1e9,
        );
        if let Some(p) = s.parent {
            match self.seen.get(&(s.trace_id, p)).cloned() {
                Some(parent) => self.count(out, &parent, &me),
                None => {
                    let w = self.waiting.entry((s.trace_id, p)).or_default();
                    if w.is_empty() {
                        self.waiting_order.push_back((s.trace_id, p));
                    }
                    w.push(me);
                    while self.waiting_order.len() > REMEMBERED {
                        if let Some(k) = self.waiting_order.pop_front() {
                            self.waiting.remove(&k);
                        }
                    }
                }
            }
        }
        let key = (s.trace_id, s.span_id);
        if let Some(children) = self.waiting.remove(&key) {
            for child in children {
                self.count(out, &s.service, &child);
            }
        }
        if self.seen.insert(key, s.service.clone()).is_none() {
            self.seen_order.push_back(key);
        }
        while self.seen_order.len() > REMEMBERED {
            if let Some(k) = self.seen_order.pop_front() {
                self.seen.remove(&k);
            }
        }
    }

    /// The calls seen since start, and the hosts of each service.
    pub fn topology(&self) -> Topology {
        Topology {
            calls: self.totals.keys().cloned().collect(),
            hosts: self
                .hosts
                .iter()
                .flat_map(|(s, hs)| hs.iter().map(move |h| (s.clone(), h.clone())))
                .collect(),
        }
    }

    /// The running totals as Tempo's service graph series at `t_ms`:
    /// `traces_service_graph_request_total{client, server}`, `..._failed_total`, and
    /// `traces_service_graph_request_server_seconds_{bucket,sum,count}`.
    pub fn series(&self, t_ms: i64) -> Vec<SeriesSamples> {
        let mut out = Vec::new();
        for ((client, server), t) in &self.totals {
            let mut one = |name: &str, le: Option<String>, v: f64| {
                let mut pairs = vec![
                    ("__name__".to_string(), name.to_string()),
                    ("client".to_string(), client.clone()),
                    ("server".to_string(), server.clone()),
                ];
                if let Some(le) = le {
                    pairs.push(("le".to_string(), le));
                }
                out.push(SeriesSamples {
                    labels: Labels::from_pairs(pairs),
                    samples: vec![Sample(t_ms, v)],
                });
            };
            one("traces_service_graph_request_total", None, t.calls as f64);
            one(
                "traces_service_graph_request_failed_total",
                None,
                t.failed as f64,
            );
            let mut cumulative = 0;
            for (le, n) in BUCKETS.iter().zip(t.buckets) {
                cumulative += n;
                one(
                    "traces_service_graph_request_server_seconds_bucket",
                    Some(le.to_string()),
                    cumulative as f64,
                );
            }
            one(
                "traces_service_graph_request_server_seconds_bucket",
                Some("+Inf".into()),
                t.calls as f64,
            );
            one(
                "traces_service_graph_request_server_seconds_sum",
                None,
                t.sum_s,
            );
            one(
                "traces_service_graph_request_server_seconds_count",
                None,
                t.calls as f64,
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telltale_common::trace::SpanKind;

    fn span(t: u8, id: u64, parent: Option<u64>, svc: &str) -> Span {
        Span {
            trace_id: [t; 16],
            span_id: id.to_be_bytes(),
            parent: parent.map(u64::to_be_bytes),
            service: svc.into(),
            name: "x".into(),
            kind: SpanKind::Server,
            start_ns: 120_000_000_000,
            end_ns: 120_000_000_001,
            status: if svc == "db" {
                SpanStatus::Error
            } else {
                SpanStatus::Unset
            },
            status_message: String::new(),
            attributes: Vec::new(),
            resource: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
        }
    }

    #[test]
    fn calls_are_matched_in_any_arrival_order() {
        let trace = [
            span(1, 1, None, "web"),
            span(1, 2, Some(1), "api"),
            span(1, 3, Some(2), "db"),
            span(1, 4, Some(2), "api"),
            span(1, 5, Some(1), "web"),
        ];
        let orders: [[usize; 5]; 4] = [
            [0, 1, 2, 3, 4],
            [4, 3, 2, 1, 0],
            [2, 0, 4, 1, 3],
            [1, 2, 3, 4, 0],
        ];
        for order in orders {
            let (mut g, mut out) = (Graph::default(), Edges::new());
            for i in order {
                g.observe(&trace[i], &mut out);
            }
            let want: Edges = [
                ((2, "api".to_string(), "db".to_string()), (1, 1)),
                ((2, "web".to_string(), "api".to_string()), (1, 0)),
            ]
            .into_iter()
            .collect();
            assert_eq!(out, want, "{order:?}");
        }
        // Another trace with the same span ids is not confused with the first.
        let (mut g, mut out) = (Graph::default(), Edges::new());
        g.observe(&span(1, 1, None, "web"), &mut out);
        g.observe(&span(2, 2, Some(1), "api"), &mut out);
        assert!(out.is_empty());
    }

    /// A matcher restored from its memory (through MessagePack, as in the WAL) matches and
    /// counts exactly as the one that wrote it would have, whatever was cut where.
    #[test]
    fn a_restored_matcher_goes_on_like_the_original() {
        let trace = [
            span(1, 1, None, "web"),
            span(1, 2, Some(1), "api"),
            span(1, 3, Some(2), "db"),
            span(1, 4, Some(2), "api"),
            span(1, 5, Some(1), "web"),
            span(2, 1, Some(9), "api"),
            span(2, 9, None, "web"),
        ];
        for cut in 0..=trace.len() {
            let (mut whole, mut want) = (Graph::default(), Edges::new());
            for s in &trace {
                whole.observe(s, &mut want);
            }
            let (mut first, mut got) = (Graph::default(), Edges::new());
            for s in &trace[..cut] {
                first.observe(s, &mut got);
            }
            let bytes = rmp_serde::to_vec_named(&first.memory()).expect("encode");
            let m: Memory = rmp_serde::from_slice(&bytes).expect("decode");
            let mut second = Graph::restore(m);
            for s in &trace[cut..] {
                second.observe(s, &mut got);
            }
            assert_eq!(got, want, "cut at {cut}");
            assert_eq!(second.series(5), whole.series(5), "cut at {cut}");
            assert_eq!(second.topology(), whole.topology(), "cut at {cut}");
        }
    }

    #[test]
    fn totals_become_service_graph_series_and_a_topology() {
        let (mut g, mut out) = (Graph::default(), Edges::new());
        let mut web = span(1, 1, None, "web");
        web.resource = vec![("instance".into(), "host-a".into())];
        let mut db = span(1, 2, Some(1), "db");
        db.resource = vec![("instance".into(), "host-b".into())];
        db.end_ns = db.start_ns + 300_000_000;
        g.observe(&db, &mut out);
        g.observe(&web, &mut out);
        let t = &g.totals[&("web".to_string(), "db".to_string())];
        assert_eq!((t.calls, t.failed), (1, 1));
        assert_eq!(t.buckets[2], 1, "300 ms is in the 0.4 s bucket");
        let series = g.series(1000);
        let get = |name: &str, le: Option<&str>| {
            series
                .iter()
                .find(|s| s.labels.get("__name__") == Some(name) && s.labels.get("le") == le)
                .map(|s| s.samples[0].1)
        };
        assert_eq!(get("traces_service_graph_request_total", None), Some(1.0));
        assert_eq!(
            get("traces_service_graph_request_failed_total", None),
            Some(1.0)
        );
        assert_eq!(
            get(
                "traces_service_graph_request_server_seconds_bucket",
                Some("0.2")
            ),
            Some(0.0)
        );
        assert_eq!(
            get(
                "traces_service_graph_request_server_seconds_bucket",
                Some("0.4")
            ),
            Some(1.0)
        );
        assert_eq!(
            get(
                "traces_service_graph_request_server_seconds_bucket",
                Some("+Inf")
            ),
            Some(1.0)
        );
        assert_eq!(series[0].labels.get("client"), Some("web"));
        assert_eq!(series[0].labels.get("server"), Some("db"));
        let topo = g.topology();
        assert_eq!(topo.calls, vec![("web".to_string(), "db".to_string())]);
        assert_eq!(
            topo.hosts,
            vec![
                ("db".to_string(), "host-b".to_string()),
                ("web".to_string(), "host-a".to_string())
            ]
        );
    }
}
