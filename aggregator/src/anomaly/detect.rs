//! A streaming anomaly detector for one series: each point is scored once, causally, from
//! what came before it — the shape the aggregator needs (a model per series, fed as samples
//! arrive) and the rule NAB scores by.
//!
//! First method (a baseline to measure the next ones against): nearest-neighbour novelty of
//! the recent shape. Values are scaled by the range seen so far; the last `window` scaled
//! values form a vector; its novelty is the mean distance to its `k` nearest vectors among
//! the last `memory` ones (not overlapping it). A novelty becomes a score by where it falls
//! among the novelties of the last `calibration` points (a conformal p-value scaled to 0.99;
//! past the most novel of them, 0.99..1 by how far past). After a score at `alarm`, the next
//! `hold` points score at most half (one event is reported once): see [`super::calibrate`].
//! (Numenta's anomaly-likelihood smoothing of the ranks was tried and scored worse here.)

use std::collections::VecDeque;

use super::calibrate::{Calibrator, Frame, grown};
use super::params::{ParamsError, split};

/// The detector's parameters (one set for every series).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Points in a shape vector.
    pub window: usize,
    /// Past vectors compared against.
    pub memory: usize,
    /// Neighbours averaged.
    pub k: usize,
    /// How novelties become scores (calibration, warm-up, hold).
    pub frame: Frame,
}

impl Params {
    /// Parses `key=value,...` over the defaults (the keys are the field names and the
    /// frame's).
    pub fn parse(text: &str) -> Result<Params, ParamsError> {
        let mut p = Params::default();
        for kv in split(text)? {
            match kv.key {
                "window" => p.window = kv.int()?.max(1),
                "memory" => p.memory = kv.int()?,
                "k" => p.k = kv.int()?.max(1),
                _ if p.frame.take(&kv)? => {}
                _ => return Err(kv.unknown("knn")),
            }
        }
        Ok(p)
    }
}

impl Default for Params {
    fn default() -> Self {
        // The best of the grid in tests/nab/search.sh (its log beside it): NAB standard 52.4.
        Params {
            window: 10,
            memory: 2000,
            k: 3,
            frame: Frame::default(),
        }
    }
}

/// One series' detector state. Past vectors are kept flat as `f32` scaled values, with the
/// `lo` and `span` they were scaled by: 56 bytes a vector at the default window.
#[derive(Debug, Clone)]
pub struct Detector {
    p: Params,
    lo: f64,
    hi: f64,
    values: VecDeque<f64>,
    /// A ring of `memory` slots of `window` scaled values.
    vectors: Vec<f32>,
    /// The `lo` and `span` each slot was scaled by (f64: a level of 1e9 with a span of 10
    /// needs more than f32's digits).
    scales: Vec<(f64, f64)>,
    /// Vectors stored (up to `memory`).
    count: usize,
    /// The slot written next (the oldest once the ring is full).
    next: usize,
    calibrator: Calibrator,
}

impl Detector {
    /// A detector with parameters `p`.
    pub fn new(p: Params) -> Detector {
        Detector {
            p,
            lo: f64::INFINITY,
            hi: f64::NEG_INFINITY,
            values: VecDeque::new(),
            vectors: Vec::new(),
            scales: Vec::new(),
            count: 0,
            next: 0,
            calibrator: Calibrator::new(p.frame),
        }
    }

    /// Takes the next value and returns its anomaly score in [0, 1]; a value that is not
    /// finite scores 0 and is not learnt.
    pub fn update(&mut self, v: f64) -> f64 {
        if !v.is_finite() {
            return 0.0;
        }
        let novelty = self.novelty(v);
        self.calibrator.score(novelty)
    }

    /// The raw novelty of the next value, without calibration (an ensemble calibrates it).
    pub fn novelty_of(&mut self, v: f64) -> f64 {
        if !v.is_finite() {
            return 0.0;
        }
        self.novelty(v)
    }

    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        self.values.capacity() * 8
            + self.vectors.capacity() * 4
            + self.scales.capacity() * 16
            + self.calibrator.bytes()
    }

    /// The most heap bytes a detector with parameters `p` holds, whatever it is fed: the
    /// ring grows `window` values at a time, so by doubling from one vector (from 4 values
    /// when a vector is shorter).
    pub fn max_bytes(p: &Params) -> usize {
        if p.memory == 0 {
            return grown(p.window.saturating_add(1))
                .saturating_mul(8)
                .saturating_add(Calibrator::max_bytes(&p.frame));
        }
        let slots = grown(p.memory);
        grown(p.window.saturating_add(1))
            .saturating_mul(8)
            .saturating_add(slots.saturating_mul(p.window.max(4)).saturating_mul(4))
            .saturating_add(slots.saturating_mul(16))
            .saturating_add(Calibrator::max_bytes(&p.frame))
    }

    fn novelty(&mut self, v: f64) -> f64 {
        self.lo = self.lo.min(v);
        self.hi = self.hi.max(v);
        self.values.push_back(v);
        if self.values.len() > self.p.window {
            self.values.pop_front();
        }
        if self.values.len() < self.p.window {
            return 0.0;
        }
        let w = self.p.window;
        let stride = w;
        let span = (self.hi - self.lo).max(1e-12);
        let cur: Vec<f64> = self.values.iter().map(|x| (x - self.lo) / span).collect();
        // Novelty: mean distance to the k nearest past vectors that do not overlap this one.
        let usable = self.count.saturating_sub(w);
        let novelty = if usable >= self.p.k && self.p.memory > 0 {
            let oldest = if self.count < self.p.memory {
                0
            } else {
                self.next
            };
            let mut d = Vec::with_capacity(usable);
            for i in 0..usable {
                let slot = (oldest + i) % self.p.memory;
                let at = slot * stride;
                let (slo, sspan) = self.scales[slot];
                d.push(dist(
                    &self.vectors[at..at + stride],
                    slo,
                    sspan,
                    &cur,
                    self.lo,
                    span,
                ));
            }
            let k = self.p.k;
            d.select_nth_unstable_by(k - 1, f64::total_cmp);
            d[..k].iter().sum::<f64>() / k as f64
        } else {
            0.0
        };
        // Vectors are stored scaled by the range of their time, with that range, and
        // compared after rescaling (see `dist`), so a widening range does not stale them.
        if self.p.memory > 0 {
            let at = self.next * stride;
            if self.vectors.len() < at + stride {
                self.vectors.resize(at + stride, 0.0);
            }
            let slot = &mut self.vectors[at..at + stride];
            for (x, c) in slot.iter_mut().zip(&cur) {
                *x = *c as f32;
            }
            if self.scales.len() <= self.next {
                self.scales.resize(self.next + 1, (0.0, 1.0));
            }
            self.scales[self.next] = (self.lo, span);
            self.next = (self.next + 1) % self.p.memory;
            self.count = (self.count + 1).min(self.p.memory);
        }
        novelty
    }
}

/// Distance between a stored vector (scaled at its time by `slo` and `sspan`) and the
/// current one, both brought to the current scale.
fn dist(stored: &[f32], slo: f64, sspan: f64, cur: &[f64], lo: f64, span: f64) -> f64 {
    let n = cur.len();
    let mut s = 0.0;
    for i in 0..n {
        let raw = f64::from(stored[i]) * sspan + slo;
        let x = (raw - lo) / span;
        s += (x - cur[i]).powi(2);
    }
    (s / n as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spike_in_a_steady_signal_scores_higher_than_the_signal() {
        let mut d = Detector::new(Params::default());
        let mut scores = Vec::new();
        for i in 0..1200 {
            let base = (i as f64 * 0.1).sin() * 10.0 + 50.0;
            let v = if (900..905).contains(&i) { 150.0 } else { base };
            scores.push(d.update(v));
        }
        let calm = scores[600..890].iter().cloned().fold(0.0, f64::max);
        let spike = scores[900..915].iter().cloned().fold(0.0, f64::max);
        assert!(spike > 0.99, "spike {spike}");
        assert!(calm < spike, "calm {calm}, spike {spike}");
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
        // Not finite: scored 0, not learnt.
        assert_eq!(d.update(f64::NAN), 0.0);
        // Parameters: known keys over the defaults, unknown ones and bad values named.
        let p = Params::parse("window=4, hold=7,alarm=0.5").expect("parses");
        assert_eq!(
            (p.window, p.frame.hold, p.frame.alarm, p.k),
            (4, 7, 0.5, Params::default().k)
        );
        assert!(
            Params::parse("windw=4")
                .unwrap_err()
                .to_string()
                .contains("windw")
        );
        assert!(
            Params::parse("k=x")
                .unwrap_err()
                .to_string()
                .contains("parameter k")
        );
        assert!(
            Params::parse("k")
                .unwrap_err()
                .to_string()
                .contains("key=value")
        );
    }
}
