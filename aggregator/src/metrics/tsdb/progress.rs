//! Start-up progress: which phase recovery is in, how far, and how long the rest should take —
//! logged every few seconds and answered by `/-/ready` (503 until ready), so a long WAL replay
//! is not silent.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

/// The phases of start-up, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Reading `series.log`.
    Series = 0,
    /// Opening blocks.
    Blocks = 1,
    /// Replaying WAL segments.
    Wal = 2,
    /// Opening the log store.
    Logs = 3,
    /// Opening the trace store.
    Traces = 4,
    /// Loading rules and alerting state.
    Starting = 5,
    /// Serving.
    Ready = 6,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Series,
            1 => Phase::Blocks,
            2 => Phase::Wal,
            3 => Phase::Logs,
            4 => Phase::Traces,
            5 => Phase::Starting,
            _ => Phase::Ready,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Phase::Series => "reading series",
            Phase::Blocks => "loading blocks",
            Phase::Wal => "replaying WAL",
            Phase::Logs => "opening the log store",
            Phase::Traces => "opening the trace store",
            Phase::Starting => "loading rules and alerting state",
            Phase::Ready => "ready",
        }
    }
}

/// Shared between the recovering thread and whoever reports on it.
#[derive(Debug)]
pub struct Progress {
    phase: AtomicU8,
    done: AtomicU64,
    total: AtomicU64,
    samples: AtomicU64,
    /// Milliseconds after `started` when the phase began.
    phase_at_ms: AtomicU64,
    started: Instant,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            phase: AtomicU8::new(0),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            samples: AtomicU64::new(0),
            phase_at_ms: AtomicU64::new(0),
            started: Instant::now(),
        }
    }
}

/// What [`Progress::snapshot`] reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    /// The phase.
    pub phase: Phase,
    /// Steps done in it (blocks or segments).
    pub done: u64,
    /// Steps it has.
    pub total: u64,
    /// Samples replayed from the WAL so far.
    pub samples: u64,
    /// Seconds left in the phase at its rate so far (`None` before the first step).
    pub eta_secs: Option<f64>,
}

impl Progress {
    /// Enters `phase`, which has `total` steps.
    pub fn phase(&self, phase: Phase, total: u64) {
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
        self.phase_at_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// One step of the phase done.
    pub fn step(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    /// Samples replayed.
    pub fn samples(&self, n: u64) {
        self.samples.fetch_add(n, Ordering::Relaxed);
    }

    /// Whether start-up is over.
    pub fn ready(&self) -> bool {
        self.snapshot().phase == Phase::Ready
    }

    /// Where start-up is.
    pub fn snapshot(&self) -> Snapshot {
        let (done, total) = (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        );
        let in_phase = self.started.elapsed().as_millis() as u64
            - self
                .phase_at_ms
                .load(Ordering::Relaxed)
                .min(self.started.elapsed().as_millis() as u64);
        let eta_secs = (done > 0 && total >= done)
            .then(|| in_phase as f64 / 1000.0 / done as f64 * (total - done) as f64);
        Snapshot {
            phase: Phase::from_u8(self.phase.load(Ordering::Relaxed)),
            done,
            total,
            samples: self.samples.load(Ordering::Relaxed),
            eta_secs,
        }
    }

    /// One line: `replaying WAL 40 % (4/10 segments, 1200000 samples, about 6 s left)`.
    pub fn text(&self) -> String {
        let s = self.snapshot();
        let mut out = s.phase.what().to_string();
        if s.total > 0 && matches!(s.phase, Phase::Blocks | Phase::Wal) {
            let unit = if s.phase == Phase::Wal {
                "segments"
            } else {
                "blocks"
            };
            out.push_str(&format!(
                " {} % ({}/{} {unit}",
                s.done * 100 / s.total,
                s.done,
                s.total
            ));
            if s.phase == Phase::Wal {
                out.push_str(&format!(", {} samples", s.samples));
            }
            if let Some(eta) = s.eta_secs {
                out.push_str(&format!(", about {eta:.0} s left"));
            }
            out.push(')');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reads_as_a_percentage_with_what_is_left() {
        let p = Progress::default();
        assert_eq!(p.text(), "reading series");
        p.phase(Phase::Wal, 10);
        assert_eq!(p.text(), "replaying WAL 0 % (0/10 segments, 0 samples)");
        for _ in 0..4 {
            p.step();
        }
        p.samples(1200);
        let t = p.text();
        assert!(
            t.starts_with("replaying WAL 40 % (4/10 segments, 1200 samples, about "),
            "{t}"
        );
        assert!(!p.ready());
        p.phase(Phase::Ready, 0);
        assert!(p.ready());
        assert_eq!(p.text(), "ready");
    }
}
