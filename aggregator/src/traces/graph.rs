//! Calls between services, matched span by span as kept spans arrive: a span whose parent
//! was seen under another service is a call from that service to the span's. A trace's spans
//! come from several hosts in any order and may straddle a block cut, so parents are looked
//! up among the recently seen spans (not within one batch or block), and children that came
//! before their parent wait for it. Both memories are bounded (oldest forgotten first).
//! Calls are counted per minute of the child span's start, so a time range can be asked.
//! The memory is not persisted: a call whose parent span was stored before an aggregator
//! restart and whose child after it is not counted (the spans themselves are all stored).

use std::collections::{BTreeMap, HashMap, VecDeque};

use telltale_common::trace::{Span, SpanId, SpanStatus, TraceId};

/// Calls and errors by (minute, parent service, child service).
pub type Edges = BTreeMap<(u64, String, String), (u64, u64)>;

/// Spans remembered for parent lookups (and children waiting), each.
const REMEMBERED: usize = 200_000;

/// A child seen before its parent: its service, whether it failed, its minute.
type Waiting = (String, bool, u64);

/// The matcher.
#[derive(Debug, Default)]
pub struct Graph {
    seen: HashMap<(TraceId, SpanId), String>,
    seen_order: VecDeque<(TraceId, SpanId)>,
    waiting: HashMap<(TraceId, SpanId), Vec<Waiting>>,
    waiting_order: VecDeque<(TraceId, SpanId)>,
}

fn count(out: &mut Edges, minute: u64, parent: &str, child: &str, error: bool) {
    if parent == child {
        return;
    }
    let e = out
        .entry((minute, parent.to_string(), child.to_string()))
        .or_default();
    e.0 += 1;
    e.1 += u64::from(error);
}

impl Graph {
    /// Takes a kept span; the calls it completes are counted into `out`.
    pub fn observe(&mut self, s: &Span, out: &mut Edges) {
        let minute = s.start_ns / 60_000_000_000;
        let error = s.status == SpanStatus::Error;
        if let Some(p) = s.parent {
            match self.seen.get(&(s.trace_id, p)) {
                Some(parent) => count(out, minute, parent, &s.service, error),
                None => {
                    let w = self.waiting.entry((s.trace_id, p)).or_default();
                    if w.is_empty() {
                        self.waiting_order.push_back((s.trace_id, p));
                    }
                    w.push((s.service.clone(), error, minute));
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
            for (child, error, minute) in children {
                count(out, minute, &s.service, &child, error);
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
}
