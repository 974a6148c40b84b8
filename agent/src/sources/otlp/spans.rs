//! Spans on their way to the aggregator: a per-service rate limit (the agent's only safety
//! valve: it cannot know whether a span belongs to a trace worth keeping, so it never
//! samples) and the cutting of what passes into wire batches.

use std::collections::HashMap;
use std::time::Instant;

use telltale_common::trace::Span;
use telltale_common::wire::Batch;

use crate::sources::logbatch::BATCH_BYTES;

/// Where services past the limit's table size share one budget.
const OTHERS: &str = "__overflow__";

/// A token bucket per service: `rate` spans a second, bursts up to one second's worth.
#[derive(Debug)]
pub struct Limit {
    rate: u64,
    max_services: usize,
    buckets: HashMap<String, (f64, Instant)>,
}

impl Limit {
    /// `rate` spans a second per service (0: no limit), for at most `max_services` services
    /// tracked apart (the rest share one budget, so the table stays bounded).
    pub fn new(rate: u64, max_services: usize) -> Limit {
        Limit {
            rate,
            max_services: max_services.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Keeps the spans within their service's budget at `now`, in order.
    pub fn admit(&mut self, spans: &mut Vec<Span>, now: Instant) {
        if self.rate == 0 {
            return;
        }
        let rate = self.rate as f64;
        spans.retain(|s| {
            let key = if self.buckets.contains_key(&s.service)
                || self.buckets.len() < self.max_services
            {
                s.service.as_str()
            } else {
                OTHERS
            };
            let (tokens, at) = self.buckets.entry(key.to_string()).or_insert((rate, now));
            let refill = now.saturating_duration_since(*at).as_secs_f64() * rate;
            *tokens = (*tokens + refill).min(rate);
            *at = now;
            if *tokens >= 1.0 {
                *tokens -= 1.0;
                true
            } else {
                false
            }
        });
    }
}

/// A rough size of a span on the wire (what cuts batches; the frame limit has headroom).
fn wire_size(s: &Span) -> usize {
    let pairs =
        |p: &[(String, String)]| p.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>();
    120 + s.service.len()
        + s.name.len()
        + s.status_message.len()
        + pairs(&s.attributes)
        + pairs(&s.resource)
        + s.events
            .iter()
            .map(|e| 24 + e.name.len() + pairs(&e.attributes))
            .sum::<usize>()
        + 40 * s.links.len()
}

/// Wire batches of about [`BATCH_BYTES`] each carrying `spans` (the buffer gives each its
/// sequence).
pub fn batches(spans: Vec<Span>) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut bytes = 0;
    for s in spans {
        bytes += wire_size(&s);
        cur.push(s);
        if bytes >= BATCH_BYTES {
            out.push(batch_of(std::mem::take(&mut cur)));
            bytes = 0;
        }
    }
    if !cur.is_empty() {
        out.push(batch_of(cur));
    }
    out
}

fn batch_of(spans: Vec<Span>) -> Batch {
    Batch {
        sequence: 0,
        created_ms: telltale_common::model::now_ms(),
        series: Vec::new(),
        events: Vec::new(),
        logs: Vec::new(),
        spans,
        exemplars: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use telltale_common::trace::{SpanKind, SpanStatus};

    fn span(service: &str, i: u64) -> Span {
        Span {
            trace_id: [1; 16],
            span_id: (i + 1).to_be_bytes(),
            parent: None,
            service: service.into(),
            name: "op".into(),
            kind: SpanKind::Server,
            start_ns: 1,
            end_ns: 2,
            status: SpanStatus::Unset,
            status_message: String::new(),
            attributes: vec![("k".into(), "v".repeat(100))],
            resource: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
        }
    }

    #[test]
    fn each_service_gets_its_own_budget_refilled_with_time() {
        let mut l = Limit::new(100, 10);
        let t0 = Instant::now();
        let mut spans: Vec<Span> = (0..250).map(|i| span("a", i)).collect();
        spans.extend((0..50).map(|i| span("b", i)));
        l.admit(&mut spans, t0);
        assert_eq!(spans.iter().filter(|s| s.service == "a").count(), 100);
        assert_eq!(spans.iter().filter(|s| s.service == "b").count(), 50);
        // Half a second later: half a budget back.
        let mut more: Vec<Span> = (0..200).map(|i| span("a", i)).collect();
        l.admit(&mut more, t0 + Duration::from_millis(500));
        assert_eq!(more.len(), 50);
        // Never more than one second's worth, however long it was quiet.
        let mut later: Vec<Span> = (0..500).map(|i| span("a", i)).collect();
        l.admit(&mut later, t0 + Duration::from_secs(3600));
        assert_eq!(later.len(), 100);
        // No limit.
        let mut all: Vec<Span> = (0..5000).map(|i| span("a", i)).collect();
        Limit::new(0, 1).admit(&mut all, t0);
        assert_eq!(all.len(), 5000);
    }

    #[test]
    fn services_past_the_table_share_one_budget() {
        let mut l = Limit::new(10, 2);
        let t0 = Instant::now();
        let mut spans: Vec<Span> = (0..40).map(|i| span(&format!("s{}", i % 4), i)).collect();
        l.admit(&mut spans, t0);
        // s0 and s1 have 10 each; s2 and s3 share the other 10.
        assert_eq!(spans.len(), 30);
        assert!(l.buckets.len() <= 3);
    }

    #[test]
    fn batches_are_cut_by_size_and_keep_every_span_in_order() {
        let spans: Vec<Span> = (0..3000).map(|i| span("a", i)).collect();
        let bs = batches(spans.clone());
        assert!(bs.len() > 1, "{} batches", bs.len());
        let back: Vec<Span> = bs.into_iter().flat_map(|b| b.spans).collect();
        assert_eq!(back, spans);
        assert!(batches(Vec::new()).is_empty());
    }
}
