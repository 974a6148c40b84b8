//! Tail sampling, where every span of a trace meets: a trace waits `decision_wait` from its
//! first span, then the whole trace is kept or dropped at once —
//!
//! 1. kept when any span failed (status error);
//! 2. kept when any span took at least its threshold: the most specific `[[traces.slow]]`
//!    rule for its service and operation, else `slow_threshold`;
//! 3. otherwise kept with probability `ratio`, by its trace id: the same id gets the same
//!    answer on every aggregator and after every restart.
//!
//! Memory is bounded: past `max_pending_spans` waiting spans, the traces waiting longest are
//! decided early (counted). A span arriving after its trace was decided follows the decision
//! (remembered for the last `max_decided` traces; older ones are decided again, alone).
//! With `ratio = 1` (the default) every trace is kept and nothing waits.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use telltale_common::trace::{Span, SpanStatus, TraceId};

/// A threshold for spans of a service (and an operation).
#[derive(Debug, Clone, PartialEq)]
pub struct SlowRule {
    /// The service (any when `None`).
    pub service: Option<String>,
    /// The span name (any when `None`).
    pub operation: Option<String>,
    /// Spans at least this long make their trace slow.
    pub threshold: Duration,
}

/// `[traces.sampling]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingOptions {
    /// Share of the traces neither failed nor slow that are kept (0..=1).
    pub ratio: f64,
    /// How long a trace waits for its spans before the decision.
    pub decision_wait: Duration,
    /// Most spans waiting; past it the oldest traces are decided early.
    pub max_pending_spans: usize,
    /// Spans at least this long make a trace slow, where no rule is more specific.
    pub slow_threshold: Option<Duration>,
    /// Per service and operation thresholds.
    pub slow: Vec<SlowRule>,
    /// Decisions remembered for late spans.
    pub max_decided: usize,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        SamplingOptions {
            ratio: 1.0,
            decision_wait: Duration::from_secs(10),
            max_pending_spans: 500_000,
            slow_threshold: None,
            slow: Vec::new(),
            max_decided: 200_000,
        }
    }
}

/// Why a trace was kept or dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A span failed.
    Error,
    /// A span was slower than its threshold.
    Slow,
    /// Within the probabilistic share.
    Sampled,
    /// None of the above: dropped.
    Dropped,
}

impl Reason {
    /// Whether the trace is stored.
    pub fn kept(self) -> bool {
        self != Reason::Dropped
    }

    /// The label value in `telltale_aggregator_traces_decisions_total{reason}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Error => "error",
            Reason::Slow => "slow",
            Reason::Sampled => "sampled",
            Reason::Dropped => "dropped",
        }
    }
}

/// Whether a trace id falls in the kept share `ratio` (a mix of its last 8 bytes, which
/// W3C trace context makes random).
pub fn in_share(id: &TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let mut z = u64::from_be_bytes([id[8], id[9], id[10], id[11], id[12], id[13], id[14], id[15]]);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    ((z >> 11) as f64 / (1u64 << 53) as f64) < ratio
}

impl SamplingOptions {
    /// Whether every trace is kept (then nothing waits).
    pub fn keeps_all(&self) -> bool {
        self.ratio >= 1.0
    }

    /// The threshold for a span: the rule naming its service and operation, then its
    /// service, then its operation, then `slow_threshold`.
    fn threshold(&self, s: &Span) -> Option<Duration> {
        let score = |r: &SlowRule| -> Option<u8> {
            let svc = match &r.service {
                Some(x) if *x == s.service => 2,
                Some(_) => return None,
                None => 0,
            };
            let op = match &r.operation {
                Some(x) if *x == s.name => 1,
                Some(_) => return None,
                None => 0,
            };
            Some(svc + op)
        };
        self.slow
            .iter()
            .filter_map(|r| score(r).map(|k| (k, r.threshold)))
            .max_by_key(|(k, _)| *k)
            .map(|(_, t)| t)
            .or(self.slow_threshold)
    }

    /// The decision for a whole trace.
    pub fn decide(&self, id: &TraceId, spans: &[Span]) -> Reason {
        if spans.iter().any(|s| s.status == SpanStatus::Error) {
            return Reason::Error;
        }
        if spans.iter().any(|s| {
            self.threshold(s)
                .is_some_and(|t| s.duration_ns() >= t.as_nanos() as u64)
        }) {
            return Reason::Slow;
        }
        if in_share(id, self.ratio) {
            Reason::Sampled
        } else {
            Reason::Dropped
        }
    }
}

/// A trace's decision and spans.
#[derive(Debug)]
pub struct Decision {
    /// The trace.
    pub id: TraceId,
    /// Why.
    pub reason: Reason,
    /// Its spans.
    pub spans: Vec<Span>,
    /// Decided before its wait was over, for lack of room.
    pub early: bool,
}

/// Traces waiting for their decision, and the recent decisions.
#[derive(Debug)]
pub struct Sampler {
    opts: SamplingOptions,
    pending: HashMap<TraceId, Vec<Span>>,
    order: VecDeque<(Instant, TraceId)>,
    pending_spans: usize,
    decided: HashMap<TraceId, bool>,
    decided_order: VecDeque<TraceId>,
}

/// What became of offered spans at once.
#[derive(Debug, Default)]
pub struct Offered {
    /// Spans to store now: their trace is kept (all of them when every trace is).
    pub kept: Vec<Span>,
    /// Spans dropped now: their trace was dropped before they came.
    pub dropped: usize,
}

impl Sampler {
    /// A sampler with `opts`.
    pub fn new(opts: SamplingOptions) -> Sampler {
        Sampler {
            opts,
            pending: HashMap::new(),
            order: VecDeque::new(),
            pending_spans: 0,
            decided: HashMap::new(),
            decided_order: VecDeque::new(),
        }
    }

    /// The policy.
    pub fn options(&self) -> &SamplingOptions {
        &self.opts
    }

    /// Spans waiting.
    pub fn pending_spans(&self) -> usize {
        self.pending_spans
    }

    /// Every waiting span (what a WAL roll carries into the new segment).
    pub fn waiting(&self) -> impl Iterator<Item = &Span> {
        self.pending.values().flatten()
    }

    /// Takes spans that arrived at `now`.
    pub fn offer(&mut self, spans: Vec<Span>, now: Instant) -> Offered {
        let mut out = Offered::default();
        if self.opts.keeps_all() {
            out.kept = spans;
            return out;
        }
        for s in spans {
            if let Some(&keep) = self.decided.get(&s.trace_id) {
                if keep {
                    out.kept.push(s);
                } else {
                    out.dropped += 1;
                }
                continue;
            }
            let id = s.trace_id;
            let waiting = self.pending.entry(id).or_default();
            if waiting.is_empty() {
                self.order.push_back((now, id));
            }
            waiting.push(s);
            self.pending_spans += 1;
        }
        out
    }

    /// Decides the traces whose wait is over at `now`, and the oldest ones while more than
    /// `max_pending_spans` spans wait.
    pub fn due(&mut self, now: Instant) -> Vec<Decision> {
        let mut out = Vec::new();
        while let Some(&(at, id)) = self.order.front() {
            let over = now.saturating_duration_since(at) >= self.opts.decision_wait;
            let crowded = self.pending_spans > self.opts.max_pending_spans;
            if !over && !crowded {
                break;
            }
            self.order.pop_front();
            let Some(spans) = self.pending.remove(&id) else {
                continue;
            };
            self.pending_spans -= spans.len();
            let reason = self.opts.decide(&id, &spans);
            self.remember(id, reason.kept());
            out.push(Decision {
                id,
                reason,
                spans,
                early: !over,
            });
        }
        out
    }

    fn remember(&mut self, id: TraceId, keep: bool) {
        if self.decided.insert(id, keep).is_none() {
            self.decided_order.push_back(id);
        }
        while self.decided_order.len() > self.opts.max_decided {
            if let Some(old) = self.decided_order.pop_front() {
                self.decided.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests;
