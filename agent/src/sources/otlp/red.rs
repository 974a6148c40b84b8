//! RED metrics from spans (rate, errors, duration), computed on the agent from every span
//! before anything could sample them away, under the names Grafana Tempo's metrics generator
//! uses, so dashboards built for it work unchanged:
//!
//! - `traces_spanmetrics_calls_total{service, span_name, span_kind, status_code}`: spans;
//!   errors are the series with `status_code="STATUS_CODE_ERROR"`;
//! - `traces_spanmetrics_latency_bucket{..., le}`, `_sum` and `_count`: a histogram of span
//!   durations in seconds, Tempo's default buckets (2 ms doubling to 16.384 s, then `+Inf`),
//!   with an exemplar per bucket (the latest span counted into it: `trace_id`, `span_id`),
//!   sent once each ([`Red::take_exemplars`]).
//!
//! Label values: `span_kind` is `SPAN_KIND_SERVER`, `SPAN_KIND_CLIENT`...; `status_code` is
//! `STATUS_CODE_UNSET`, `STATUS_CODE_OK` or `STATUS_CODE_ERROR`. Counters are cumulative
//! from the agent's start. At most `max_series` label sets are kept: spans of new ones after
//! that are counted under `service="__overflow__", span_name="__overflow__"` (their kind and
//! status kept), so totals stay right while the series count stays bounded.

use std::collections::HashMap;

use telltale_common::model::{Labels, Sample, SeriesSamples};
use telltale_common::trace::{Span, SpanId, SpanKind, SpanStatus, TraceId, hex};
use telltale_common::wire::{Exemplar, ExemplarSeries};

/// Upper bounds of the duration buckets, in seconds (Tempo's defaults).
pub const BUCKETS: [f64; 14] = [
    0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192,
    16.384,
];

/// Where spans of label sets past the cap are counted.
pub const OVERFLOW: &str = "__overflow__";

/// The latest span counted into a bucket: its ids, duration (s) and end (ms).
#[derive(Debug, Clone, Copy)]
struct Ex {
    trace: TraceId,
    span: SpanId,
    secs: f64,
    t_ms: i64,
    /// Not sent yet.
    fresh: bool,
}

#[derive(Debug, Clone)]
struct Cell {
    kind: SpanKind,
    status: SpanStatus,
    calls: u64,
    /// Spans at or under each bound (not cumulative: summed when written).
    buckets: [u64; BUCKETS.len()],
    sum_s: f64,
    /// An exemplar per bucket, `+Inf` last.
    exemplars: [Option<Ex>; BUCKETS.len() + 1],
}

/// The span metrics of one agent.
#[derive(Debug)]
pub struct Red {
    /// service → span name → cells by kind and status (few: a linear search).
    cells: HashMap<String, HashMap<String, Vec<Cell>>>,
    keys: usize,
    max_keys: usize,
    /// Spans counted under the overflow label set.
    pub overflowed: u64,
}

impl Red {
    /// Metrics for at most `max_series` label sets (beyond them: [`OVERFLOW`]).
    pub fn new(max_series: usize) -> Red {
        Red {
            cells: HashMap::new(),
            keys: 0,
            max_keys: max_series.max(1),
            overflowed: 0,
        }
    }

    /// Counts one span.
    pub fn observe(&mut self, s: &Span) {
        let exists = self
            .cells
            .get(&s.service)
            .and_then(|by_name| by_name.get(&s.name))
            .is_some_and(|cells| {
                cells
                    .iter()
                    .any(|c| c.kind == s.kind && c.status == s.status)
            });
        let (service, name) = if exists || self.keys < self.max_keys {
            (s.service.as_str(), s.name.as_str())
        } else {
            self.overflowed += 1;
            (OVERFLOW, OVERFLOW)
        };
        let by_name = match self.cells.get_mut(service) {
            Some(m) => m,
            None => self.cells.entry(service.to_string()).or_default(),
        };
        let cells = match by_name.get_mut(name) {
            Some(c) => c,
            None => by_name.entry(name.to_string()).or_default(),
        };
        let i = match cells
            .iter()
            .position(|c| c.kind == s.kind && c.status == s.status)
        {
            Some(i) => i,
            None => {
                self.keys += 1;
                cells.push(Cell {
                    kind: s.kind,
                    status: s.status,
                    calls: 0,
                    buckets: [0; BUCKETS.len()],
                    sum_s: 0.0,
                    exemplars: [None; BUCKETS.len() + 1],
                });
                cells.len() - 1
            }
        };
        let cell = &mut cells[i];
        let secs = s.duration_ns() as f64 / 1e9;
        cell.calls += 1;
        cell.sum_s += secs;
        let b = BUCKETS.iter().position(|&le| secs <= le);
        if let Some(b) = b {
            cell.buckets[b] += 1;
        }
        cell.exemplars[b.unwrap_or(BUCKETS.len())] = Some(Ex {
            trace: s.trace_id,
            span: s.span_id,
            secs,
            t_ms: i64::try_from(s.end_ns / 1_000_000).unwrap_or(i64::MAX),
            fresh: true,
        });
    }

    /// The exemplars not sent yet: for each bucket series, the latest span counted into
    /// that bucket (its `trace_id` and `span_id`, duration and end), as Tempo's metrics
    /// generator attaches them.
    pub fn take_exemplars(&mut self) -> Vec<ExemplarSeries> {
        let mut out = Vec::new();
        for (service, by_name) in &mut self.cells {
            for (name, cells) in by_name {
                for c in cells {
                    for (i, slot) in c.exemplars.iter_mut().enumerate() {
                        let Some(ex) = slot.as_mut().filter(|e| e.fresh) else {
                            continue;
                        };
                        ex.fresh = false;
                        let le = BUCKETS
                            .get(i)
                            .map_or_else(|| "+Inf".to_string(), f64::to_string);
                        out.push(ExemplarSeries {
                            labels: vec![
                                (
                                    "__name__".into(),
                                    "traces_spanmetrics_latency_bucket".into(),
                                ),
                                ("service".into(), service.clone()),
                                ("span_name".into(), name.clone()),
                                ("span_kind".into(), c.kind.as_str().into()),
                                ("status_code".into(), c.status.as_str().into()),
                                ("le".into(), le),
                            ],
                            exemplars: vec![Exemplar {
                                labels: vec![
                                    ("trace_id".into(), hex(&ex.trace)),
                                    ("span_id".into(), hex(&ex.span)),
                                ],
                                t_ms: ex.t_ms,
                                value: ex.secs,
                            }],
                        });
                    }
                }
            }
        }
        out
    }

    /// Label sets held.
    pub fn series_count(&self) -> usize {
        self.keys
    }

    /// Every series at `t_ms`.
    pub fn series(&self, t_ms: i64) -> Vec<SeriesSamples> {
        let mut out = Vec::with_capacity(self.keys * (BUCKETS.len() + 4));
        for (service, by_name) in &self.cells {
            for (name, cells) in by_name {
                for c in cells {
                    let base = [
                        ("service", service.as_str()),
                        ("span_name", name.as_str()),
                        ("span_kind", c.kind.as_str()),
                        ("status_code", c.status.as_str()),
                    ];
                    let mut one = |metric: &str, le: Option<&str>, v: f64| {
                        let mut pairs: Vec<(&str, &str)> = vec![("__name__", metric)];
                        pairs.extend(base);
                        if let Some(le) = le {
                            pairs.push(("le", le));
                        }
                        out.push(SeriesSamples {
                            labels: Labels::from_pairs(pairs),
                            samples: vec![Sample(t_ms, v)],
                        });
                    };
                    one("traces_spanmetrics_calls_total", None, c.calls as f64);
                    let mut cumulative = 0;
                    for (le, n) in BUCKETS.iter().zip(c.buckets) {
                        cumulative += n;
                        one(
                            "traces_spanmetrics_latency_bucket",
                            Some(&le.to_string()),
                            cumulative as f64,
                        );
                    }
                    one(
                        "traces_spanmetrics_latency_bucket",
                        Some("+Inf"),
                        c.calls as f64,
                    );
                    one("traces_spanmetrics_latency_sum", None, c.sum_s);
                    one("traces_spanmetrics_latency_count", None, c.calls as f64);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(service: &str, name: &str, ms: u64, status: SpanStatus) -> Span {
        Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: None,
            service: service.into(),
            name: name.into(),
            kind: SpanKind::Server,
            start_ns: 1_000,
            end_ns: 1_000 + ms * 1_000_000,
            status,
            status_message: String::new(),
            attributes: Vec::new(),
            resource: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
        }
    }

    fn value(series: &[SeriesSamples], want: &[(&str, &str)]) -> Option<f64> {
        series
            .iter()
            .find(|s| want.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| s.samples[0].1)
    }

    /// Random spans: every count, bucket and sum equals what is computed from the spans
    /// directly.
    #[test]
    fn counts_buckets_and_sums_match_the_spans() {
        let mut red = Red::new(1000);
        let mut x = 77u64;
        let mut spans = Vec::new();
        for _ in 0..5000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let service = ["cart", "checkout", "web"][(x >> 20) as usize % 3];
            let name = ["GET /", "POST /pay", "db.query"][(x >> 30) as usize % 3];
            let ms = (x >> 40) % 20_000;
            let status = if (x >> 10).is_multiple_of(10) {
                SpanStatus::Error
            } else {
                SpanStatus::Unset
            };
            let s = span(service, name, ms, status);
            red.observe(&s);
            spans.push(s);
        }
        let out = red.series(5);
        for service in ["cart", "checkout", "web"] {
            for name in ["GET /", "POST /pay", "db.query"] {
                for status in [SpanStatus::Error, SpanStatus::Unset] {
                    let mine: Vec<&Span> = spans
                        .iter()
                        .filter(|s| s.service == service && s.name == name && s.status == status)
                        .collect();
                    let base = [
                        ("service", service),
                        ("span_name", name),
                        ("status_code", status.as_str()),
                        ("span_kind", "SPAN_KIND_SERVER"),
                    ];
                    let with = |metric: &'static str, le: Option<&'static str>| {
                        let mut w = vec![("__name__", metric)];
                        w.extend(base);
                        if let Some(le) = le {
                            w.push(("le", le));
                        }
                        value(&out, &w)
                    };
                    assert_eq!(
                        with("traces_spanmetrics_calls_total", None),
                        Some(mine.len() as f64)
                    );
                    let le_0_256 = mine
                        .iter()
                        .filter(|s| s.duration_ns() <= 256_000_000)
                        .count();
                    assert_eq!(
                        with("traces_spanmetrics_latency_bucket", Some("0.256")),
                        Some(le_0_256 as f64)
                    );
                    assert_eq!(
                        with("traces_spanmetrics_latency_bucket", Some("+Inf")),
                        Some(mine.len() as f64)
                    );
                    let sum: f64 = mine.iter().map(|s| s.duration_ns() as f64 / 1e9).sum();
                    let got = with("traces_spanmetrics_latency_sum", None).expect("sum");
                    assert!((got - sum).abs() < 1e-6, "{got} vs {sum}");
                }
            }
        }
    }

    #[test]
    fn label_sets_past_the_cap_are_counted_under_overflow() {
        let mut red = Red::new(3);
        for i in 0..10 {
            red.observe(&span("svc", &format!("op{i}"), 5, SpanStatus::Ok));
        }
        red.observe(&span("svc", "op0", 5, SpanStatus::Ok));
        assert_eq!(red.series_count(), 4, "three, plus the overflow set");
        assert_eq!(red.overflowed, 7);
        let out = red.series(1);
        let calls = |name: &str| {
            value(
                &out,
                &[
                    ("__name__", "traces_spanmetrics_calls_total"),
                    ("span_name", name),
                ],
            )
        };
        assert_eq!(calls("op0"), Some(2.0));
        assert_eq!(calls(OVERFLOW), Some(7.0));
        let total: f64 = out
            .iter()
            .filter(|s| s.labels.get("__name__") == Some("traces_spanmetrics_calls_total"))
            .map(|s| s.samples[0].1)
            .sum();
        assert_eq!(total, 11.0, "no span lost from the totals");
    }

    #[test]
    fn each_bucket_keeps_its_latest_span_as_an_exemplar_sent_once() {
        let mut red = Red::new(10);
        let mut a = span("api", "GET", 3, SpanStatus::Unset);
        a.trace_id = [0xaa; 16];
        let mut b = span("api", "GET", 3, SpanStatus::Unset);
        b.trace_id = [0xbb; 16];
        let mut slow = span("api", "GET", 20_000, SpanStatus::Unset);
        slow.trace_id = [0xcc; 16];
        for s in [&a, &b, &slow] {
            red.observe(s);
        }
        let ex = red.take_exemplars();
        assert_eq!(ex.len(), 2, "{ex:?}");
        let le = |x: &ExemplarSeries| {
            x.labels
                .iter()
                .find(|(k, _)| k == "le")
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let four = ex
            .iter()
            .find(|x| le(x) == "0.004")
            .expect("the 4 ms bucket");
        assert_eq!(
            four.exemplars[0].labels[0],
            ("trace_id".to_string(), "bb".repeat(16))
        );
        assert!((four.exemplars[0].value - 0.003).abs() < 1e-9);
        assert!(
            ex.iter()
                .any(|x| le(x) == "+Inf" && x.exemplars[0].labels[0].1 == "cc".repeat(16))
        );
        // Sent once: nothing new, nothing again.
        assert!(red.take_exemplars().is_empty());
        red.observe(&a);
        assert_eq!(red.take_exemplars().len(), 1);
    }
}
