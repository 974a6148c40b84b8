//! `context`: novelty of the recent *sequence* of coarse levels.
//!
//! Each value becomes one of `bins` levels of the range seen so far (a value beyond it is a
//! level of its own, "above" or "below"); the model counts, for every context length up to
//! `order`, which level followed which run of levels. A point's novelty is the share of
//! context lengths whose (context → level) transition was never seen before — an old level in
//! a new order is as novel as a new level. The coarse levels are what keep noise from looking
//! new; the counts are bounded by `cap` transitions per series (past it, nothing new is
//! learnt, and novelty keeps being measured against what was). `grids` sets of levels, each
//! shifted by a fraction of a level, are counted side by side, so a value near one grid's
//! boundary is mid-level on another. When a value widens the range, the last `relearn`
//! values are counted again under the new levels.
//!
//! Re-learning costs `relearn` × `grids` × (`order` + 1) table operations, so it must be rare
//! even on a series that keeps rising (a counter, a filling disk). A widening that creeps
//! (passes the range by less than `creep` of it) or comes within `burst` values of the last
//! one widens the passed side by `grow` of the range more; any other widening passed the range
//! by at least `creep` of it. Either way the range grows by at least min(`creep`, `grow`) at
//! every re-learning, so a series re-learns at most log(last range / first range) /
//! log(1 + min(`creep`, `grow`)) times over its life — a counter that grows a million-fold,
//! about 280 times at the defaults.
//!
//! A value past the range by at least `escape` of it is an event no hold hides: a spike far
//! above everything seen, right after a smaller alarm, is reported too.
//!
//! The idea is that of sequence-memory detectors (HTM, Contextual Anomaly Detector): learn
//! which orders of coarse events occur, report the ones that never did. The range is causal —
//! the minimum and maximum seen so far, not the whole series' — so a live series and a
//! benchmark file are treated alike.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use super::super::calibrate::{Frame, grown};
use super::super::params::{Kv, ParamsError};
use super::Novelty;

/// `context`'s parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Context {
    /// Levels the seen range is cut into.
    pub bins: usize,
    /// The longest run of preceding levels a transition is keyed by.
    pub order: usize,
    /// Most transitions remembered per series.
    pub cap: usize,
    /// Grids of levels, each shifted by a fraction of a level (a value near one grid's
    /// boundary is mid-level on another).
    pub grids: usize,
    /// Values kept to re-learn from when the range widens.
    pub relearn: usize,
    /// The levels span the seen range widened by this share of it on each side.
    pub margin: f64,
    /// A creeping or bursting widening widens the passed side by this share of the range more.
    pub grow: f64,
    /// A widening within this many values of the previous one is bursting.
    pub burst: usize,
    /// A widening that passes the range by less than this share of it is creeping.
    pub creep: f64,
    /// A value past the range by at least this share of it is reported even inside a hold
    /// (0: never).
    pub escape: f64,
    /// Scoring frame.
    pub frame: Frame,
}

impl Context {
    pub(super) fn parse(kvs: &[Kv]) -> Result<Context, ParamsError> {
        // Defaults from the NAB search (tests/nab/search.log). The score is the novelty itself,
        // not its rank: "11 of the 14 transitions are new" means the same on every series.
        let mut p = Context {
            bins: 7,
            order: 6,
            // 7000 transitions fit a table of 8192 slots (at most 72 KiB); 8000 scored the same
            // on NAB, 4000 a point less.
            cap: 7000,
            grids: 2,
            relearn: 2000,
            margin: 0.0,
            // grow/burst/creep bound the re-learnings (module doc); among the settings that
            // do, these scored best on NAB (tests/nab/search-context.log, hand probes).
            grow: 0.1,
            burst: 10,
            creep: 0.05,
            // A spike far past everything seen, right after a smaller alarm, is its own event
            // (NAB: one more window found and no more false positives at every value from
            // 0.25 to 4, a little less below; tests/nab/search-context.log).
            escape: 0.25,
            frame: Frame {
                rank: false,
                alarm: 0.75,
                hold: 75,
                ..Frame::default()
            },
        };
        for kv in kvs {
            match kv.key {
                "bins" => p.bins = range(kv, 2, 200)?,
                "order" => p.order = range(kv, 1, 31)?,
                "cap" => p.cap = range(kv, 16, 1_000_000)?,
                "grids" => p.grids = range(kv, 1, 8)?,
                "relearn" => p.relearn = range(kv, 0, 100_000)?,
                "margin" => p.margin = kv.float()?.clamp(0.0, 10.0),
                "grow" => p.grow = kv.float()?.clamp(0.0, 10.0),
                "burst" => p.burst = range(kv, 0, 1_000_000)?,
                "creep" => p.creep = kv.float()?.clamp(0.0, 10.0),
                "escape" => p.escape = kv.float()?.max(0.0),
                _ if p.frame.take(kv)? => {}
                _ => return Err(kv.unknown("context")),
            }
        }
        Ok(p)
    }
}

fn range(kv: &Kv, lo: usize, hi: usize) -> Result<usize, ParamsError> {
    let v = kv.int()?;
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(ParamsError(format!(
            "parameter {}: must be {lo}..={hi}",
            kv.key
        )))
    }
}

pub(super) struct ContextState {
    p: Context,
    /// The smallest and largest values seen.
    min: f64,
    max: f64,
    /// The range cut into levels: the seen one widened by `margin` on each side.
    lo: f64,
    hi: f64,
    /// Per grid, the last `order` levels, oldest first.
    recent: Vec<Vec<u8>>,
    /// The last `relearn` values, re-learnt under the new levels when the range widens.
    raw: VecDeque<f32>,
    /// (context length, context, level) → times seen.
    counts: FxHashMap<u32, u16>,
    /// Times the levels were re-cut.
    rescales: u64,
    /// Values since the range last widened.
    quiet: usize,
    /// The last value passed the range by at least `escape` of it.
    escaped: bool,
}

impl ContextState {
    pub(super) fn new(p: Context) -> Self {
        ContextState {
            p,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            lo: f64::INFINITY,
            hi: f64::NEG_INFINITY,
            recent: vec![Vec::with_capacity(p.order + 1); p.grids],
            raw: VecDeque::new(),
            counts: FxHashMap::default(),
            rescales: 0,
            quiet: usize::MAX,
            escaped: false,
        }
    }

    /// `v`'s level on grid `g` (grid `g` is shifted down by `g / grids` of a level):
    /// `OUT` beyond the range.
    fn level(&self, v: f64, g: usize) -> u8 {
        if v > self.hi || v < self.lo {
            return OUT + u8::from(v < self.lo);
        }
        let bins = self.p.bins as f64;
        let width = (self.hi - self.lo) / bins;
        if width <= 0.0 {
            return 0;
        }
        let shift = g as f64 / self.p.grids as f64;
        ((v - self.lo) / width + shift).min(bins + 1.0 - 1e-9) as u8
    }

    /// Counts the transitions that end at `v` on every grid and moves the contexts on;
    /// returns how many of them were never seen.
    fn learn(&mut self, v: f64) -> usize {
        let mut new = 0;
        for g in 0..self.p.grids {
            let level = self.level(v, g);
            let recent = &mut self.recent[g];
            let n = recent.len();
            for len in 0..=n {
                let k = key(g * 32 + len, &recent[n - len..], level);
                let full = self.counts.len() >= self.p.cap;
                match self.counts.get_mut(&k) {
                    Some(c) => *c = c.saturating_add(1),
                    None => {
                        new += 1;
                        if !full {
                            self.counts.insert(k, 1);
                        }
                    }
                }
            }
            recent.push(level);
            if recent.len() > self.p.order {
                recent.remove(0);
            }
        }
        new
    }

    /// New levels over the seen range widened by `margin`, and the kept values re-learnt
    /// under them (the transitions learnt under the old levels no longer mean anything).
    /// `v` passed the levels: a creeping or bursting widening also widens the passed side by
    /// `grow` of the range, so a series that keeps rising re-learns once per `grow` of growth
    /// rather than at every point. Called with `min`/`max` already holding `v`.
    fn rescale(&mut self, v: f64) {
        let above = v > self.hi;
        let past = if above { v - self.hi } else { self.lo - v };
        let creep = past < (self.hi - self.lo) * self.p.creep;
        let span = self.max - self.min;
        let pad = span * self.p.margin;
        let grow = if self.quiet < self.p.burst || creep {
            span * self.p.grow
        } else {
            0.0
        };
        self.quiet = 0;
        self.lo = self.min - pad - if above { 0.0 } else { grow };
        self.hi = self.max + pad + if above { grow } else { 0.0 };
        self.rescales += 1;
        self.counts.clear();
        self.recent.iter_mut().for_each(Vec::clear);
        let raw = std::mem::take(&mut self.raw);
        for &v in &raw {
            self.learn(f64::from(v));
        }
        self.raw = raw;
    }
}

/// The level of a value above the range (`OUT + 1`: below it).
const OUT: u8 = 254;

/// FNV-1a over the context length, the levels and the next level, folded to 32 bits: one key
/// per transition (a collision among a few thousand keys is a one-in-a-million event that
/// makes one transition look known).
fn key(len: usize, context: &[u8], next: u8) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::iter::once(len as u8)
        .chain(context.iter().copied())
        .chain(std::iter::once(next))
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h ^ (h >> 32)) as u32
}

impl Novelty for ContextState {
    fn novelty(&mut self, _t_ms: i64, v: f64) -> f64 {
        let out = self.level(v, 0) >= OUT;
        let past = (v - self.hi).max(self.lo - v);
        // Not before there is a range to pass (the first values widen an empty one).
        self.escaped = out
            && self.p.escape > 0.0
            && self.hi > self.lo
            && past >= self.p.escape * (self.hi - self.lo);
        let new = self.learn(v);
        self.raw.push_back(v as f32);
        if self.raw.len() > self.p.relearn {
            self.raw.pop_front();
        }
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.quiet = self.quiet.saturating_add(1);
        if out {
            self.rescale(v);
        }
        new as f64 / (self.p.grids * (self.p.order + 1)) as f64
    }

    fn escapes(&self) -> bool {
        self.escaped
    }

    fn bytes(&self) -> usize {
        // A hash table slot: the (key, count) pair and a control byte, at the table's size.
        let slots = (self.counts.capacity() * 8 / 7).next_power_of_two();
        slots * SLOT + self.p.grids * (self.p.order + 1) + self.raw.capacity() * 4
    }
}

/// Bytes of one slot of the transition table: the (key, count) pair and a control byte.
const SLOT: usize = std::mem::size_of::<(u32, u16)>() + 1;

impl ContextState {
    /// The most heap bytes a model with parameters `p` holds, whatever it is fed: a table
    /// of `cap` transitions (a hash table keeps at most 7/8 of its slots full, and has a
    /// power of two of them) and `relearn` kept values.
    pub(super) fn max_bytes(p: &Context) -> usize {
        let slots = (p.cap.max(1) * 8).div_ceil(7).next_power_of_two().max(4);
        slots * SLOT + p.grids * (p.order + 1) + grown(p.relearn + 1) * 4
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::params::split;
    use super::*;

    fn state(params: &str) -> ContextState {
        let kvs = split(params).expect("params");
        ContextState::new(Context::parse(&kvs).expect("parses"))
    }

    /// A cycle through eight levels, twice per level (so the order is what is learnt).
    const CYCLE: [f64; 16] = [
        0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 5.0, 5.0, 6.0, 6.0, 7.0, 7.0,
    ];

    #[test]
    fn a_learnt_order_is_not_novel_and_a_new_order_of_the_same_values_is() {
        let mut s = state("bins=8,grids=1");
        for i in 0..400 {
            s.novelty(0, CYCLE[i % 16]);
        }
        for i in 0..32 {
            let x = s.novelty(0, CYCLE[i % 16]);
            assert_eq!(x, 0.0, "a learnt step scored {x}");
        }
        // The same values, backwards: every level is known, their order is not.
        let mut most = 0.0f64;
        for v in [7.0, 6.0, 5.0, 4.0] {
            most = most.max(s.novelty(0, v));
        }
        assert!(most >= 0.75, "a reversed run scored only {most}");
    }

    #[test]
    fn a_new_extreme_is_novel_and_the_rescaled_levels_keep_what_was_learnt() {
        let mut s = state("");
        for i in 0..600 {
            s.novelty(0, CYCLE[i % 16]);
        }
        let spike = s.novelty(0, 50.0);
        assert!(spike >= 0.75, "a value far above the range scored {spike}");
        assert_eq!(s.max, 50.0);
        // Re-learnt from the kept values under the wider levels: after the spike has left
        // the context, the cycle is familiar again.
        let mut late = Vec::new();
        for i in 0..64 {
            let x = s.novelty(0, CYCLE[i % 16]);
            if i >= 16 {
                late.push(x);
            }
        }
        assert!(late.iter().all(|&x| x == 0.0), "after the spike: {late:?}");
    }

    #[test]
    fn memory_is_bounded_by_cap_and_relearn() {
        let mut s = state("cap=1000,relearn=500,bins=50");
        let mut x: u64 = 42;
        for i in 0..20_000 {
            // A linear congruential sequence: noise that never repeats its order, and a
            // rising trend that keeps widening the range.
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let v = (x >> 33) as f64 / (1u64 << 31) as f64 + i as f64 * 1e-3;
            let n = s.novelty(0, v);
            assert!((0.0..=1.0).contains(&n));
        }
        assert!(s.counts.len() <= 1000);
        assert!(s.raw.len() <= 500);
        assert!(s.bytes() < 64 * 1024, "{} bytes", s.bytes());
    }

    #[test]
    fn a_series_that_keeps_rising_re_learns_within_the_log_bound() {
        // Rising shapes: a steady counter, a noisy one (new maxima at irregular gaps, some by
        // a jump), a staircase (a big step every 50 values), a series falling by halves.
        let mut seed = 0x2545_f491_u64;
        let mut noise = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) as f64 / f64::from(1u32 << 31)
        };
        let mut walk = 1.0;
        let shapes: Vec<(&str, Vec<f64>)> = vec![
            ("counter", (0..20_000).map(|i| f64::from(i) * 3.0).collect()),
            (
                "noisy",
                (0..20_000)
                    .map(|_| {
                        walk += noise() * 4.0 - 1.0;
                        walk
                    })
                    .collect(),
            ),
            (
                "staircase",
                (0..20_000).map(|i| f64::from(i / 50 * 100)).collect(),
            ),
            ("halving", (0..60).map(|i| -(2f64.powi(i))).collect()),
        ];
        for (name, values) in shapes {
            let mut s = state("");
            let mut first = None;
            for &v in &values {
                s.novelty(0, v);
                if first.is_none() && s.max > s.min {
                    first = Some(s.max - s.min);
                }
            }
            let growth = (s.max - s.min) / first.expect("the range opens");
            let bound = growth.ln() / 1.05f64.ln() + 2.0;
            assert!(
                (s.rescales as f64) <= bound,
                "{name}: {} re-learnings, bound {bound:.0}",
                s.rescales
            );
        }
        let mut t = state("grow=0");
        for i in 0..2_000 {
            t.novelty(0, f64::from(i) * 3.0);
        }
        assert!(t.rescales > 1_900, "without growth every point widens");
    }

    #[test]
    fn bad_parameters_are_named() {
        let bad = |p: &str| {
            let kvs = split(p).expect("splits");
            Context::parse(&kvs).expect_err(p).0
        };
        assert!(bad("bins=1").contains("bins"));
        assert!(bad("order=0").contains("order"));
        assert!(bad("grids=9").contains("grids"));
        assert!(bad("levels=3").contains("unknown parameter"));
    }
}
