//! Figures over a sliding window: snapshots of the stage histograms and counters taken every
//! few seconds; a figure is the newest state minus the oldest one inside the window, so a
//! latency spike shows for the window's length and then leaves (a histogram since start-up
//! would carry it for ever).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;
use telltale_common::histogram::Snapshot;

use crate::selfmetrics::{LATENCY, SelfMetrics};

/// How far back figures reach.
pub const WINDOW: Duration = Duration::from_secs(300);
/// How often a snapshot is taken.
pub const EVERY: Duration = Duration::from_secs(5);

/// Which histogram of [`crate::selfmetrics::Latencies`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `batch_delay`.
    BatchDelay,
    /// `ingest`.
    Ingest,
    /// `tsdb_append`.
    TsdbAppend,
    /// `log_append`.
    LogAppend,
    /// `span_append`.
    SpanAppend,
    /// `rule_group`.
    RuleGroup,
    /// `detector`.
    Detector,
    /// `correlation`.
    Correlation,
    /// `alert_to_notification`.
    AlertToNotification,
    /// `delivery`.
    Delivery,
    /// `remediation`.
    Remediation,
    /// `query`.
    Query,
    /// `report`.
    Report,
}

const STAGES: [Stage; 13] = [
    Stage::BatchDelay,
    Stage::Ingest,
    Stage::TsdbAppend,
    Stage::LogAppend,
    Stage::SpanAppend,
    Stage::RuleGroup,
    Stage::Detector,
    Stage::Correlation,
    Stage::AlertToNotification,
    Stage::Delivery,
    Stage::Remediation,
    Stage::Query,
    Stage::Report,
];

fn histogram(s: Stage) -> &'static telltale_common::histogram::Histogram {
    let l = &*LATENCY;
    match s {
        Stage::BatchDelay => &l.batch_delay,
        Stage::Ingest => &l.ingest,
        Stage::TsdbAppend => &l.tsdb_append,
        Stage::LogAppend => &l.log_append,
        Stage::SpanAppend => &l.span_append,
        Stage::RuleGroup => &l.rule_group,
        Stage::Detector => &l.detector,
        Stage::Correlation => &l.correlation,
        Stage::AlertToNotification => &l.alert_to_notification,
        Stage::Delivery => &l.delivery,
        Stage::Remediation => &l.remediation,
        Stage::Query => &l.query,
        Stage::Report => &l.report,
    }
}

/// Counters that are not a histogram's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Samples stored.
    Samples,
    /// Log lines stored.
    LogLines,
    /// Spans stored.
    Spans,
}

#[derive(Debug, Clone, Copy)]
struct Point {
    at: Instant,
    hist: [Snapshot; 13],
    counts: [u64; 3],
}

/// Latency quantiles and a rate over the window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Measured {
    /// Events per second (observations of the histogram, or the counter's increase).
    pub rate: f64,
    /// Median latency in seconds (`None`: nothing observed in the window).
    pub p50: Option<f64>,
    /// 99th percentile latency in seconds.
    pub p99: Option<f64>,
    /// Observations in the window.
    pub count: u64,
}

/// The difference between now and the oldest snapshot in the window.
#[derive(Debug, Clone)]
pub struct Window {
    /// Seconds the window spans (shorter than [`WINDOW`] shortly after start-up).
    pub seconds: f64,
    hist: [Snapshot; 13],
    counts: [u64; 3],
}

impl Window {
    /// A stage's latency quantiles and event rate.
    pub fn stage(&self, s: Stage) -> Measured {
        let i = STAGES.iter().position(|x| *x == s).unwrap_or(0);
        let h = &self.hist[i];
        Measured {
            rate: h.count() as f64 / self.seconds.max(1e-3),
            p50: h.quantile(0.5),
            p99: h.quantile(0.99),
            count: h.count(),
        }
    }

    /// A counter's rate per second.
    pub fn rate(&self, c: Count) -> f64 {
        self.counts[c as usize] as f64 / self.seconds.max(1e-3)
    }
}

/// Takes and keeps the snapshots.
pub struct Sampler {
    metrics: std::sync::Arc<SelfMetrics>,
    points: Mutex<VecDeque<Point>>,
}

impl Sampler {
    /// A sampler whose first point is now (so figures exist from the first request on).
    pub fn new(metrics: std::sync::Arc<SelfMetrics>) -> Sampler {
        let s = Sampler {
            metrics,
            points: Mutex::new(VecDeque::new()),
        };
        s.tick();
        s
    }

    fn point(&self) -> Point {
        Point {
            at: Instant::now(),
            hist: std::array::from_fn(|i| histogram(STAGES[i]).snapshot()),
            counts: [
                self.metrics.samples.load(Ordering::Relaxed),
                LATENCY.log_lines.load(Ordering::Relaxed),
                LATENCY.spans.load(Ordering::Relaxed),
            ],
        }
    }

    /// Takes a snapshot and forgets those older than the window.
    pub fn tick(&self) {
        let p = self.point();
        let mut g = self.points.lock().unwrap_or_else(|e| e.into_inner());
        g.push_back(p);
        // Keep one point at or beyond the window's start, so the window stays whole.
        while g.len() > 2 && g[1].at + WINDOW <= p.at {
            g.pop_front();
        }
    }

    /// Figures from the oldest kept snapshot to now.
    pub fn window(&self) -> Window {
        let now = self.point();
        let g = self.points.lock().unwrap_or_else(|e| e.into_inner());
        let old = g.front().copied().unwrap_or(now);
        Window {
            seconds: now.at.duration_since(old.at).as_secs_f64(),
            hist: std::array::from_fn(|i| now.hist[i].since(&old.hist[i])),
            counts: std::array::from_fn(|i| now.counts[i].saturating_sub(old.counts[i])),
        }
    }

    /// Snapshots every [`EVERY`] for as long as the process runs.
    pub async fn run(self: std::sync::Arc<Self>) {
        let mut t = tokio::time::interval(EVERY);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            t.tick().await;
            self.tick();
        }
    }
}
