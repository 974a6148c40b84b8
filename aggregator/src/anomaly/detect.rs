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
//! `hold` points score at most half (one event is reported once). Optionally (`short` > 0)
//! the rank is raised to an alarm only when the recent ranks are unlike the long-run ones
//! (Numenta's anomaly-likelihood idea); the grid search found the plain rank better.

use std::collections::VecDeque;

/// The detector's parameters (one set for every series).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Points in a shape vector.
    pub window: usize,
    /// Past vectors compared against.
    pub memory: usize,
    /// Neighbours averaged.
    pub k: usize,
    /// Past novelties a new one is ranked among.
    pub calibration: usize,
    /// Points averaged for the short-run score.
    pub short: usize,
    /// Points of the long-run score distribution.
    pub long: usize,
    /// Points scored 0 at the start (nothing to compare with yet).
    pub warmup: usize,
    /// After a score at or above `alarm`, the next `hold` points score at most half of it
    /// (one event is reported once: later points of it would only count as false positives).
    pub hold: usize,
    /// The score that starts a hold.
    pub alarm: f64,
    /// How many times the most novel recent point a new one must be to score 1 (novelties
    /// past the most novel score 0.99..1 by this ratio).
    pub excess_cap: f64,
}

/// A parameter string that does not parse: which key, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamsError(pub String);

impl std::fmt::Display for ParamsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParamsError {}

impl Params {
    /// Parses `key=value,...` over the defaults (the keys are the field names).
    pub fn parse(text: &str) -> Result<Params, ParamsError> {
        Self::parse_text(text).map_err(ParamsError)
    }

    fn parse_text(text: &str) -> Result<Params, String> {
        let mut p = Params::default();
        for kv in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("parameter {kv:?}: expected key=value"))?;
            let int = || {
                v.parse::<usize>()
                    .map_err(|e| format!("parameter {k}: {e}"))
            };
            match k {
                "window" => p.window = int()?.max(1),
                "memory" => p.memory = int()?,
                "k" => p.k = int()?.max(1),
                "calibration" => p.calibration = int()?,
                "short" => p.short = int()?,
                "long" => p.long = int()?,
                "warmup" => p.warmup = int()?,
                "hold" => p.hold = int()?,
                "alarm" => p.alarm = v.parse().map_err(|e| format!("parameter {k}: {e}"))?,
                "excess_cap" => {
                    p.excess_cap = v
                        .parse::<f64>()
                        .map_err(|e| format!("parameter {k}: {e}"))?
                        .max(1e-6)
                }
                _ => return Err(format!("unknown parameter {k:?}")),
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
            calibration: 500,
            short: 0,
            long: 400,
            warmup: 50,
            hold: 100,
            alarm: 0.99,
            excess_cap: 1.0,
        }
    }
}

/// One series' detector state.
#[derive(Debug, Clone)]
pub struct Detector {
    p: Params,
    seen: usize,
    lo: f64,
    hi: f64,
    values: VecDeque<f64>,
    vectors: VecDeque<Vec<f64>>,
    novelties: VecDeque<f64>,
    scores: VecDeque<f64>,
    held: usize,
}

impl Detector {
    /// A detector with parameters `p`.
    pub fn new(p: Params) -> Detector {
        Detector {
            p,
            seen: 0,
            lo: f64::INFINITY,
            hi: f64::NEG_INFINITY,
            values: VecDeque::new(),
            vectors: VecDeque::new(),
            novelties: VecDeque::new(),
            scores: VecDeque::new(),
            held: 0,
        }
    }

    /// Takes the next value and returns its anomaly score in [0, 1]; a value that is not
    /// finite scores 0 and is not learnt.
    pub fn update(&mut self, v: f64) -> f64 {
        let s = self.raw(v);
        if self.held > 0 {
            self.held -= 1;
            return s * 0.5;
        }
        if s >= self.p.alarm {
            self.held = self.p.hold;
        }
        s
    }

    fn raw(&mut self, v: f64) -> f64 {
        if !v.is_finite() {
            return 0.0;
        }
        self.seen += 1;
        self.lo = self.lo.min(v);
        self.hi = self.hi.max(v);
        self.values.push_back(v);
        if self.values.len() > self.p.window {
            self.values.pop_front();
        }
        if self.values.len() < self.p.window {
            return 0.0;
        }
        let span = (self.hi - self.lo).max(1e-12);
        let cur: Vec<f64> = self.values.iter().map(|x| (x - self.lo) / span).collect();
        // Novelty: mean distance to the k nearest past vectors that do not overlap this one.
        let usable = self.vectors.len().saturating_sub(self.p.window);
        let novelty = if usable >= self.p.k {
            let mut d: Vec<f64> = self
                .vectors
                .iter()
                .take(usable)
                .map(|u| dist(u, &cur, self.lo, span))
                .collect();
            let k = self.p.k;
            d.select_nth_unstable_by(k - 1, f64::total_cmp);
            d[..k].iter().sum::<f64>() / k as f64
        } else {
            0.0
        };
        // Vectors are stored scaled by the range of their time, with that range, and
        // compared after rescaling (see `dist`), so a widening range does not stale them.
        let mut stored = cur.clone();
        stored.push(self.lo);
        stored.push(span);
        self.vectors.push_back(stored);
        if self.vectors.len() > self.p.memory {
            self.vectors.pop_front();
        }
        // Rank among recent novelties; past the most novel, by how far past it (so the most
        // novel points of a corpus are ordered, not tied at 1).
        let rank = if self.novelties.is_empty() {
            0.5
        } else {
            let below = self.novelties.iter().filter(|n| **n < novelty).count();
            let equal = self.novelties.iter().filter(|n| **n == novelty).count();
            let max = self.novelties.iter().cloned().fold(0.0, f64::max);
            if below == self.novelties.len() && max > 0.0 {
                let over = (novelty / max - 1.0).min(self.p.excess_cap);
                0.99 + 0.01 * over / self.p.excess_cap
            } else {
                0.99 * (below as f64 + 0.5 * equal as f64) / self.novelties.len() as f64
            }
        };
        self.novelties.push_back(novelty);
        if self.novelties.len() > self.p.calibration {
            self.novelties.pop_front();
        }
        self.scores.push_back(rank);
        if self.scores.len() > self.p.long {
            self.scores.pop_front();
        }
        if self.seen < self.p.warmup || self.scores.len() < self.p.short * 2 {
            return 0.0;
        }
        if self.p.short == 0 {
            return rank;
        }
        // Likelihood that the short-run average is this high under the long-run distribution.
        let n = self.scores.len() as f64;
        let mean = self.scores.iter().sum::<f64>() / n;
        let var = self.scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n;
        let sd = var.sqrt().max(0.05);
        let short = self.scores.iter().rev().take(self.p.short).sum::<f64>() / self.p.short as f64;
        normal_cdf((short - mean) / sd)
    }
}

/// Distance between a stored vector (scaled at its time, with its `lo` and `span` appended)
/// and the current one, both brought to the current scale.
fn dist(stored: &[f64], cur: &[f64], lo: f64, span: f64) -> f64 {
    let n = cur.len();
    let (slo, sspan) = (stored[n], stored[n + 1]);
    let mut s = 0.0;
    for i in 0..n {
        let raw = stored[i] * sspan + slo;
        let x = (raw - lo) / span;
        s += (x - cur[i]).powi(2);
    }
    (s / n as f64).sqrt()
}

/// The standard normal CDF (Abramowitz and Stegun 7.1.26 for erf; error < 1.5e-7).
fn normal_cdf(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    let erf = if x >= 0.0 { y } else { -y };
    0.5 * (1.0 + erf)
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
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-4);
        // Parameters: known keys over the defaults, unknown ones and bad values named.
        let p = Params::parse("window=4, hold=7,alarm=0.5").expect("parses");
        assert_eq!(
            (p.window, p.hold, p.alarm, p.k),
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
