//! What every method shares: a raw novelty (any scale, larger = more unusual) becomes a score
//! in [0, 1] with one meaning for every method and series — where it falls among the same
//! series' recent novelties (a conformal rank) — and an event is reported once.
//!
//! - A novelty ranked among the last `calibration` ones scores `0.99 × rank`; one past the
//!   most novel of them scores 0.99..1 by how far past (up to `excess_cap` times the most
//!   novel), so the most unusual points are ordered rather than tied at 1.
//! - A score ≥ `alarm` starts a hold: the next `hold` points score at most half of what they
//!   would (one event is one report; the points after it would only be false alarms).
//! - The first `warmup` points score 0 (nothing to compare with yet).
//!
//! The documented threshold is therefore a probability-like statement: 0.99 means "more
//! unusual than anything in the last `calibration` points of this series".

use std::collections::VecDeque;

use super::params::{Kv, ParamsError};

/// The scoring frame's parameters (keys every method accepts).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frame {
    /// Past novelties a new one is ranked among.
    pub calibration: usize,
    /// Points scored 0 at the start.
    pub warmup: usize,
    /// Points held after an alarm.
    pub hold: usize,
    /// The score that starts a hold.
    pub alarm: f64,
    /// How many times the most novel recent point a new one must be to score 1.
    pub excess_cap: f64,
    /// `false`: the novelty (already in [0, 1]) is the score, not ranked.
    pub rank: bool,
}

impl Default for Frame {
    fn default() -> Self {
        Frame {
            calibration: 500,
            warmup: 50,
            hold: 100,
            alarm: 0.99,
            excess_cap: 1.0,
            rank: true,
        }
    }
}

impl Frame {
    /// Takes a frame key; `Ok(false)` when `kv` is not one.
    pub fn take(&mut self, kv: &Kv) -> Result<bool, ParamsError> {
        match kv.key {
            "calibration" => self.calibration = kv.int()?.max(1),
            "warmup" => self.warmup = kv.int()?,
            "hold" => self.hold = kv.int()?,
            "alarm" => self.alarm = kv.float()?,
            "excess_cap" => self.excess_cap = kv.float()?.max(1e-6),
            "rank" => self.rank = kv.int()? != 0,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// One series' calibration state.
#[derive(Debug, Clone)]
pub struct Calibrator {
    f: Frame,
    seen: usize,
    past: VecDeque<f32>,
    held: usize,
}

impl Calibrator {
    /// A calibrator with frame `f`.
    pub fn new(f: Frame) -> Calibrator {
        Calibrator {
            f,
            seen: 0,
            past: VecDeque::new(),
            held: 0,
        }
    }

    /// The score of the next point, whose novelty is `novelty` (≥ 0).
    pub fn score(&mut self, novelty: f64) -> f64 {
        let s = if self.f.rank {
            self.rank(novelty)
        } else {
            self.seen += 1;
            if self.seen <= self.f.warmup || !novelty.is_finite() {
                0.0
            } else {
                novelty.clamp(0.0, 1.0)
            }
        };
        self.hold(s)
    }

    /// The score of a point whose novelty no hold may halve (a method says which: `context`'s
    /// value far beyond everything seen): scored as [`Calibrator::score`] would outside a
    /// hold, and an alarm starts a new hold.
    pub fn escape(&mut self, novelty: f64) -> f64 {
        self.held = 0;
        self.score(novelty)
    }

    /// Applies the hold to a score: after one at `alarm` or more, the next `hold` are halved.
    pub fn hold(&mut self, s: f64) -> f64 {
        if self.held > 0 {
            self.held -= 1;
            return s * 0.5;
        }
        if s >= self.f.alarm {
            self.held = self.f.hold;
        }
        s
    }

    /// The rank of `novelty` among the recent ones (0 during warm-up), without the hold.
    pub fn rank(&mut self, novelty: f64) -> f64 {
        self.seen += 1;
        let novelty = if novelty.is_finite() { novelty } else { 0.0 };
        let n = self.past.len();
        let rank = if n == 0 {
            0.5
        } else {
            let (mut below, mut equal, mut max) = (0usize, 0usize, 0.0f64);
            let x = novelty as f32;
            for &p in &self.past {
                below += usize::from(p < x);
                equal += usize::from(p == x);
                max = max.max(f64::from(p));
            }
            if below == n && max > 0.0 {
                let over = (novelty / max - 1.0).min(self.f.excess_cap);
                0.99 + 0.01 * over / self.f.excess_cap
            } else {
                0.99 * (below as f64 + 0.5 * equal as f64) / n as f64
            }
        };
        self.past.push_back(novelty as f32);
        if self.past.len() > self.f.calibration {
            self.past.pop_front();
        }
        if self.seen <= self.f.warmup {
            return 0.0;
        }
        rank.clamp(0.0, 1.0)
    }

    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        self.past.capacity() * 4
    }

    /// The most heap bytes a calibrator with frame `f` holds, whatever it is fed (the past
    /// novelties are kept only when ranking).
    pub fn max_bytes(f: &Frame) -> usize {
        if f.rank {
            grown(f.calibration.saturating_add(1)).saturating_mul(4)
        } else {
            0
        }
    }
}

/// The largest capacity a `Vec` or `VecDeque` reaches holding at most `n` elements pushed one
/// at a time: the standard library grows them by doubling from 4 (its growth is not a
/// documented promise, so the bound is checked against `bytes()` by
/// `method::tests::no_model_outgrows_its_bound`).
pub fn grown(n: usize) -> usize {
    n.max(4).checked_next_power_of_two().unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_order_the_most_novel_and_a_hold_reports_an_event_once() {
        let mut c = Calibrator::new(Frame {
            calibration: 100,
            warmup: 10,
            hold: 5,
            ..Frame::default()
        });
        // Warm-up scores 0.
        for i in 0..10 {
            assert_eq!(c.score(f64::from(i % 7)), 0.0);
        }
        for i in 0..200 {
            let s = c.score(f64::from(i % 7));
            assert!(s < 0.99, "ordinary point {i} scored {s}");
        }
        // Past the largest recent novelty: 0.99..1, ordered by how far past.
        let a = c.clone().score(6.5);
        let b = c.clone().score(12.0);
        assert!(a >= 0.99 && b > a && b <= 1.0, "{a} {b}");
        // An alarm holds the next points at half.
        assert!(c.score(100.0) >= 0.99);
        for _ in 0..5 {
            assert!(c.score(1000.0) <= 0.5);
        }
        assert!(c.score(10_000.0) >= 0.99, "the hold ends");
        // Not finite: ranked as no novelty.
        assert!(c.score(f64::NAN) < 0.5);
    }
}
