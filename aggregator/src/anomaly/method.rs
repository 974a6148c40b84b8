//! The detection methods behind one interface: a [`Model`] per series takes each point once,
//! in time order, and returns its score in [0, 1] (see [`super::calibrate`] for what a score
//! means). The aggregator's live path and `anomaly nab` build models through
//! [`Method::build`], so the benchmark measures the code that runs.
//!
//! - `context` (the default): the share of never-seen transitions in the recent sequence of
//!   coarse levels ([`context`]) — the best on NAB;
//! - `knn`: nearest-neighbour novelty of the recent shape ([`super::detect`]);
//! - `ewma`: distance from an exponentially weighted mean, in weighted standard deviations;
//! - `seasonal`: distance from the median of the same phase of a period (hour of day by
//!   default; `period=1w,buckets=168` for hour of week), in median absolute deviations —
//!   robust: a past outlier moves a median by one step, not by its size;
//! - `changepoint`: a two-sided CUSUM of standardised values against a slow baseline, which
//!   re-centres on the new level once it has signalled (a level shift is one event);
//! - `ensemble`: several of these on the same input, their ranks combined (`combine=max` or
//!   `mean`), member parameters as `member.key=value`.

use super::calibrate::{Calibrator, Frame};
use super::detect;
use super::params::{Kv, ParamsError, split};

mod context;
pub use context::Context;
use context::ContextState;

/// One series' model.
pub trait Model: Send {
    /// The score of the point `v` at `t_ms` (points come in time order; a value that is not
    /// finite scores 0 and is not learnt).
    fn update(&mut self, t_ms: i64, v: f64) -> f64;
    /// Heap bytes held (for the cost figures and `/api/v1/anomaly`).
    fn bytes(&self) -> usize;
}

/// A method and its parameters, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// Nearest-neighbour shape novelty.
    Knn(detect::Params),
    /// EWMA z-score.
    Ewma(Ewma),
    /// Seasonal median/MAD.
    Seasonal(Seasonal),
    /// CUSUM changepoint.
    Changepoint(Changepoint),
    /// Novelty of the sequence of coarse levels.
    Context(Context),
    /// Several methods, ranks combined.
    Ensemble(Ensemble),
}

/// The names `method:` accepts.
pub const METHODS: [&str; 6] = [
    "knn",
    "ewma",
    "seasonal",
    "changepoint",
    "context",
    "ensemble",
];

impl Method {
    /// `name` with parameters `params` (`key=value,...`) over its defaults.
    pub fn parse(name: &str, params: &str) -> Result<Method, ParamsError> {
        let kvs = split(params)?;
        Self::from_kvs(name, &kvs)
    }

    fn from_kvs(name: &str, kvs: &[Kv]) -> Result<Method, ParamsError> {
        Ok(match name {
            "knn" => {
                let text: Vec<String> = kvs
                    .iter()
                    .map(|k| format!("{}={}", k.key, k.value))
                    .collect();
                Method::Knn(detect::Params::parse(&text.join(","))?)
            }
            "ewma" => Method::Ewma(Ewma::parse(kvs)?),
            "seasonal" => Method::Seasonal(Seasonal::parse(kvs)?),
            "changepoint" => Method::Changepoint(Changepoint::parse(kvs)?),
            "context" => Method::Context(Context::parse(kvs)?),
            "ensemble" => Method::Ensemble(Ensemble::parse(kvs)?),
            _ => {
                return Err(ParamsError(format!(
                    "unknown method {name:?} (one of {})",
                    METHODS.join(", ")
                )));
            }
        })
    }

    /// The method's name.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Knn(_) => "knn",
            Method::Ewma(_) => "ewma",
            Method::Seasonal(_) => "seasonal",
            Method::Changepoint(_) => "changepoint",
            Method::Context(_) => "context",
            Method::Ensemble(_) => "ensemble",
        }
    }

    /// A fresh model for one series.
    pub fn build(&self) -> Box<dyn Model> {
        match self {
            Method::Knn(p) => Box::new(Knn(detect::Detector::new(*p))),
            Method::Ewma(p) => Box::new(Single::new(p.frame, EwmaState::new(*p))),
            Method::Seasonal(p) => Box::new(Single::new(p.frame, SeasonalState::new(*p))),
            Method::Changepoint(p) => Box::new(Single::new(p.frame, CusumState::new(*p))),
            Method::Context(p) => Box::new(Single::new(p.frame, ContextState::new(*p))),
            Method::Ensemble(e) => Box::new(EnsembleState::new(e)),
        }
    }

    /// The most heap bytes one model of this method holds, whatever it is fed: what the
    /// memory budget (`[anomaly] max_model_bytes`) sets aside for each series it models.
    pub fn max_bytes(&self) -> usize {
        fn single<N>(heap: usize, f: &Frame) -> usize {
            std::mem::size_of::<Single<N>>()
                .saturating_add(heap)
                .saturating_add(Calibrator::max_bytes(f))
        }
        match self {
            Method::Knn(p) => {
                std::mem::size_of::<Knn>().saturating_add(detect::Detector::max_bytes(p))
            }
            Method::Ewma(p) => single::<EwmaState>(0, &p.frame),
            Method::Seasonal(p) => single::<SeasonalState>(self.novelty_max_bytes(), &p.frame),
            Method::Changepoint(p) => single::<CusumState>(0, &p.frame),
            Method::Context(p) => single::<ContextState>(self.novelty_max_bytes(), &p.frame),
            Method::Ensemble(e) => {
                e.members
                    .iter()
                    .fold(std::mem::size_of::<EnsembleState>(), |acc, m| {
                        // A member is always ranked, whatever its own frame says.
                        let ranked = Frame {
                            rank: true,
                            ..m.frame()
                        };
                        acc.saturating_add(m.novelty_max_bytes())
                            .saturating_add(Calibrator::max_bytes(&ranked))
                            .saturating_add(64)
                    })
            }
        }
    }

    /// [`Method::max_bytes`] of the bare novelty (an ensemble member's).
    fn novelty_max_bytes(&self) -> usize {
        match self {
            Method::Knn(p) => detect::Detector::max_bytes(p),
            Method::Seasonal(p) => p.buckets * std::mem::size_of::<Robust>(),
            Method::Context(p) => ContextState::max_bytes(p),
            Method::Ewma(_) | Method::Changepoint(_) | Method::Ensemble(_) => 0,
        }
    }

    fn novelty(&self) -> Option<Box<dyn Novelty>> {
        Some(match self {
            Method::Ewma(p) => Box::new(EwmaState::new(*p)),
            Method::Seasonal(p) => Box::new(SeasonalState::new(*p)),
            Method::Changepoint(p) => Box::new(CusumState::new(*p)),
            Method::Context(p) => Box::new(ContextState::new(*p)),
            Method::Knn(p) => Box::new(KnnNovelty(detect::Detector::new(*p))),
            Method::Ensemble(_) => return None,
        })
    }

    /// The score at which an event is reported (and held): the default threshold of
    /// `telltale_anomaly`.
    pub fn alarm(&self) -> f64 {
        self.frame().alarm
    }

    fn frame(&self) -> Frame {
        match self {
            Method::Knn(p) => p.frame,
            Method::Ewma(p) => p.frame,
            Method::Seasonal(p) => p.frame,
            Method::Changepoint(p) => p.frame,
            Method::Context(p) => p.frame,
            Method::Ensemble(e) => e.frame,
        }
    }
}

/// A raw novelty (≥ 0, any scale) per point, before calibration.
trait Novelty: Send {
    fn novelty(&mut self, t_ms: i64, v: f64) -> f64;
    fn bytes(&self) -> usize;
    /// Whether the last point is an event no hold may hide (see [`Calibrator::escape`]).
    fn escapes(&self) -> bool {
        false
    }
}

/// A novelty and its calibration.
struct Single<N> {
    n: N,
    c: Calibrator,
}

impl<N: Novelty> Single<N> {
    fn new(f: Frame, n: N) -> Self {
        Single {
            n,
            c: Calibrator::new(f),
        }
    }
}

impl<N: Novelty> Model for Single<N> {
    fn update(&mut self, t_ms: i64, v: f64) -> f64 {
        if !v.is_finite() {
            return 0.0;
        }
        let x = self.n.novelty(t_ms, v);
        if self.n.escapes() {
            self.c.escape(x)
        } else {
            self.c.score(x)
        }
    }

    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.n.bytes() + self.c.bytes()
    }
}

struct Knn(detect::Detector);

impl Model for Knn {
    fn update(&mut self, _t_ms: i64, v: f64) -> f64 {
        self.0.update(v)
    }

    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.0.bytes()
    }
}

/// The kNN detector's novelty alone (inside an ensemble, which calibrates it).
struct KnnNovelty(detect::Detector);

impl Novelty for KnnNovelty {
    fn novelty(&mut self, _t_ms: i64, v: f64) -> f64 {
        self.0.novelty_of(v)
    }

    fn bytes(&self) -> usize {
        self.0.bytes()
    }
}

/// `ewma`'s parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ewma {
    /// Weight of the newest point in the mean and variance.
    pub alpha: f64,
    /// Scoring frame.
    pub frame: Frame,
}

impl Ewma {
    fn parse(kvs: &[Kv]) -> Result<Ewma, ParamsError> {
        let mut p = Ewma {
            alpha: 0.05,
            frame: Frame::default(),
        };
        for kv in kvs {
            match kv.key {
                "alpha" => p.alpha = unit(kv)?,
                _ if p.frame.take(kv)? => {}
                _ => return Err(kv.unknown("ewma")),
            }
        }
        Ok(p)
    }
}

fn unit(kv: &Kv) -> Result<f64, ParamsError> {
    let v = kv.float()?;
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(ParamsError(format!(
            "parameter {}: must be in (0, 1]",
            kv.key
        )))
    }
}

/// An exponentially weighted mean and variance.
#[derive(Debug, Clone, Copy)]
struct Moments {
    n: u64,
    mean: f64,
    var: f64,
}

impl Moments {
    fn new() -> Self {
        Moments {
            n: 0,
            mean: 0.0,
            var: 0.0,
        }
    }

    /// `|v - mean|` in standard deviations (0 before two points), with a floor on the
    /// deviation so a flat series does not turn its first wiggle into infinity.
    fn z(&self, v: f64) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        let sd = self.var.sqrt().max(1e-9 + 1e-6 * self.mean.abs());
        (v - self.mean).abs() / sd
    }

    fn signed(&self, v: f64) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        let sd = self.var.sqrt().max(1e-9 + 1e-6 * self.mean.abs());
        (v - self.mean) / sd
    }

    fn learn(&mut self, v: f64, alpha: f64) {
        self.n += 1;
        if self.n == 1 {
            self.mean = v;
            return;
        }
        // Early on, a plain average (alpha no smaller than 1/n), then exponential.
        let a = alpha.max(1.0 / self.n as f64);
        let d = v - self.mean;
        self.mean += a * d;
        self.var = (1.0 - a) * (self.var + a * d * d);
    }
}

struct EwmaState {
    p: Ewma,
    m: Moments,
}

impl EwmaState {
    fn new(p: Ewma) -> Self {
        EwmaState {
            p,
            m: Moments::new(),
        }
    }
}

impl Novelty for EwmaState {
    fn novelty(&mut self, _t_ms: i64, v: f64) -> f64 {
        let z = self.m.z(v);
        self.m.learn(v, self.p.alpha);
        z
    }

    fn bytes(&self) -> usize {
        0
    }
}

/// `seasonal`'s parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seasonal {
    /// The period (ms).
    pub period_ms: i64,
    /// Phases of the period, each with its own median and MAD.
    pub buckets: usize,
    /// Step of the streaming median and MAD, relative to the MAD.
    pub rate: f64,
    /// Scoring frame.
    pub frame: Frame,
}

impl Seasonal {
    fn parse(kvs: &[Kv]) -> Result<Seasonal, ParamsError> {
        let mut p = Seasonal {
            period_ms: 86_400_000,
            buckets: 24,
            rate: 0.1,
            frame: Frame::default(),
        };
        for kv in kvs {
            match kv.key {
                "period" => p.period_ms = kv.millis()?,
                "buckets" => {
                    p.buckets = kv.int()?;
                    if !(1..=10_080).contains(&p.buckets) {
                        return Err(ParamsError("parameter buckets: must be 1..=10080".into()));
                    }
                }
                "rate" => p.rate = unit(kv)?,
                _ if p.frame.take(kv)? => {}
                _ => return Err(kv.unknown("seasonal")),
            }
        }
        Ok(p)
    }
}

/// A streaming median and median absolute deviation (frugal: each point moves them one step
/// toward itself, the step a fraction of the deviation).
#[derive(Debug, Clone, Copy, Default)]
struct Robust {
    n: u32,
    median: f64,
    mad: f64,
}

impl Robust {
    fn learn(&mut self, v: f64, rate: f64, floor: f64) {
        self.n = self.n.saturating_add(1);
        if self.n == 1 {
            self.median = v;
            self.mad = floor;
            return;
        }
        let step = rate * self.mad.max(floor);
        self.median += step * (v - self.median).signum();
        let dev = (v - self.median).abs();
        self.mad = (self.mad + step * (dev - self.mad).signum()).max(0.0);
    }
}

struct SeasonalState {
    p: Seasonal,
    buckets: Vec<Robust>,
    all: Robust,
    ewma: Moments,
}

impl SeasonalState {
    fn new(p: Seasonal) -> Self {
        SeasonalState {
            p,
            buckets: vec![Robust::default(); p.buckets],
            all: Robust::default(),
            ewma: Moments::new(),
        }
    }
}

impl Novelty for SeasonalState {
    fn novelty(&mut self, t_ms: i64, v: f64) -> f64 {
        let width = (self.p.period_ms / self.p.buckets as i64).max(1);
        let b = (t_ms.rem_euclid(self.p.period_ms) / width) as usize % self.p.buckets;
        // The spread floor: a tenth of the series' overall deviation (its sd while the
        // overall MAD is still learning).
        let overall = self.all.mad.max(self.ewma.var.sqrt() * 0.6745);
        let floor = 0.1 * overall + 1e-9 + 1e-9 * v.abs();
        let r = self.buckets[b];
        let x = if r.n >= 3 {
            (v - r.median).abs() / (1.4826 * r.mad + floor)
        } else if self.all.n >= 3 {
            (v - self.all.median).abs() / (1.4826 * self.all.mad + floor)
        } else {
            0.0
        };
        self.ewma.learn(v, 0.01);
        let seed = overall.max(floor);
        self.all.learn(v, self.p.rate, seed);
        self.buckets[b].learn(v, self.p.rate, seed);
        x
    }

    fn bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<Robust>()
    }
}

/// `changepoint`'s parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Changepoint {
    /// Weight of the newest point in the baseline's mean and variance.
    pub alpha: f64,
    /// Standard deviations a point must be from the baseline to add to the sums.
    pub drift: f64,
    /// A sum past this signals a change: the baseline re-centres on the new level.
    pub reset: f64,
    /// Scoring frame.
    pub frame: Frame,
}

impl Changepoint {
    fn parse(kvs: &[Kv]) -> Result<Changepoint, ParamsError> {
        let mut p = Changepoint {
            alpha: 0.01,
            drift: 0.5,
            reset: 12.0,
            frame: Frame::default(),
        };
        for kv in kvs {
            match kv.key {
                "alpha" => p.alpha = unit(kv)?,
                "drift" => p.drift = kv.float()?.max(0.0),
                "reset" => p.reset = kv.float()?.max(0.1),
                _ if p.frame.take(kv)? => {}
                _ => return Err(kv.unknown("changepoint")),
            }
        }
        Ok(p)
    }
}

struct CusumState {
    p: Changepoint,
    m: Moments,
    up: f64,
    down: f64,
}

impl CusumState {
    fn new(p: Changepoint) -> Self {
        CusumState {
            p,
            m: Moments::new(),
            up: 0.0,
            down: 0.0,
        }
    }
}

impl Novelty for CusumState {
    fn novelty(&mut self, _t_ms: i64, v: f64) -> f64 {
        let z = self.m.signed(v).clamp(-50.0, 50.0);
        self.up = (self.up + z - self.p.drift).max(0.0);
        self.down = (self.down - z - self.p.drift).max(0.0);
        let x = self.up.max(self.down);
        if x > self.p.reset {
            // Signalled: the new level is the baseline from here (its spread kept).
            self.up = 0.0;
            self.down = 0.0;
            self.m.mean = v;
        } else {
            self.m.learn(v, self.p.alpha);
        }
        x
    }

    fn bytes(&self) -> usize {
        0
    }
}

/// `ensemble`'s parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Ensemble {
    /// The members.
    pub members: Vec<Method>,
    /// `true`: the largest member rank; `false`: their mean.
    pub max: bool,
    /// Hold and alarm of the combined score (the members' own frames calibrate them).
    pub frame: Frame,
}

impl Ensemble {
    fn parse(kvs: &[Kv]) -> Result<Ensemble, ParamsError> {
        let mut names = vec!["knn", "seasonal", "changepoint"];
        let mut max = true;
        let mut frame = Frame::default();
        let mut own: Vec<(&str, Vec<Kv>)> = Vec::new();
        for kv in kvs {
            if let Some((m, key)) = kv.key.split_once('.') {
                let one = Kv {
                    key,
                    value: kv.value,
                };
                match own.iter_mut().find(|(n, _)| *n == m) {
                    Some((_, v)) => v.push(one),
                    None => own.push((m, vec![one])),
                }
                continue;
            }
            match kv.key {
                "members" => names = kv.value.split('+').map(str::trim).collect(),
                "combine" => {
                    max = match kv.value {
                        "max" => true,
                        "mean" => false,
                        other => {
                            return Err(ParamsError(format!(
                                "parameter combine: {other:?} is not max or mean"
                            )));
                        }
                    }
                }
                _ if frame.take(kv)? => {}
                _ => return Err(kv.unknown("ensemble")),
            }
        }
        let mut members = Vec::new();
        for n in &names {
            if *n == "ensemble" {
                return Err(ParamsError("an ensemble cannot hold an ensemble".into()));
            }
            let kv = own
                .iter()
                .find(|(m, _)| m == n)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            members.push(Method::from_kvs(n, &kv)?);
        }
        if let Some((m, _)) = own.iter().find(|(m, _)| !names.contains(m)) {
            return Err(ParamsError(format!(
                "parameters for {m:?}, which is not a member"
            )));
        }
        if members.is_empty() {
            return Err(ParamsError("parameter members: none given".into()));
        }
        Ok(Ensemble {
            members,
            max,
            frame,
        })
    }
}

struct EnsembleState {
    members: Vec<(Box<dyn Novelty>, Calibrator)>,
    max: bool,
    out: Calibrator,
}

impl EnsembleState {
    fn new(e: &Ensemble) -> Self {
        let members = e
            .members
            .iter()
            .filter_map(|m| Some((m.novelty()?, Calibrator::new(m.frame()))))
            .collect();
        EnsembleState {
            members,
            max: e.max,
            out: Calibrator::new(e.frame),
        }
    }
}

impl Model for EnsembleState {
    fn update(&mut self, t_ms: i64, v: f64) -> f64 {
        if !v.is_finite() {
            return 0.0;
        }
        let mut acc: f64 = 0.0;
        for (n, c) in &mut self.members {
            let r = c.rank(n.novelty(t_ms, v));
            acc = if self.max { f64::max(acc, r) } else { acc + r };
        }
        if !self.max {
            acc /= self.members.len().max(1) as f64;
        }
        self.out.hold(acc)
    }

    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self
                .members
                .iter()
                .map(|(n, c)| n.bytes() + c.bytes() + 64)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    /// Scores of `method` over `values` (one a minute), and the highest score inside and
    /// outside `event`.
    fn run(method: &Method, values: &[f64], event: std::ops::Range<usize>) -> (f64, f64) {
        let mut m = method.build();
        let (mut inside, mut outside) = (0.0f64, 0.0f64);
        for (i, v) in values.iter().enumerate() {
            let s = m.update(i as i64 * MIN, *v);
            assert!((0.0..=1.0).contains(&s), "score {s}");
            if event.contains(&i) {
                inside = inside.max(s);
            } else if i > 300 {
                outside = outside.max(s);
            }
        }
        assert!(m.bytes() > 0);
        (inside, outside)
    }

    /// A noisy daily cycle (deterministic noise).
    fn daily(n: usize) -> Vec<f64> {
        let mut x = 12345u64;
        (0..n)
            .map(|i| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let noise = ((x >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 4.0;
                let phase = (i % 1440) as f64 / 1440.0 * std::f64::consts::TAU;
                100.0 + 40.0 * phase.sin() + noise
            })
            .collect()
    }

    #[test]
    fn each_method_finds_the_anomaly_it_is_for() {
        // A spike: every method but the seasonal one's phase logic sees it as a z-score.
        let mut v = daily(6000);
        v[5000] += 60.0;
        for m in ["knn", "ewma", "seasonal", "changepoint", "ensemble"] {
            // No hold here: an earlier noise alarm must not halve the spike (see calibrate).
            let method = Method::parse(m, "hold=0").expect("parses");
            assert_eq!(method.name(), m);
            let (inside, outside) = run(&method, &v, 5000..5001);
            assert!(inside >= 0.99, "{m}: spike scored {inside}");
            if m != "changepoint" {
                assert!(inside > outside, "{m}: spike {inside}, elsewhere {outside}");
            }
        }
        // Business hours that do not happen one day: every value is one the series takes
        // each night, so a plain z-score sees nothing; the seasonal method sees the wrong
        // level for the hour.
        let mut x = 99u64;
        let mut v: Vec<f64> = (0..8640)
            .map(|i| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let noise = ((x >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 4.0;
                let hour = (i % 1440) / 60;
                if (8..18).contains(&hour) {
                    100.0 + noise
                } else {
                    20.0 + noise
                }
            })
            .collect();
        let day4 = 4 * 1440 + 8 * 60..4 * 1440 + 18 * 60;
        for i in day4.clone() {
            v[i] -= 80.0;
        }
        let seasonal = Method::parse("seasonal", "period=1d,buckets=48,hold=0").expect("parses");
        let (inside, _) = run(&seasonal, &v, day4.clone());
        assert!(inside >= 0.99, "seasonal: {inside}");
        let (ewma_in, _) = run(&Method::parse("ewma", "hold=0").expect("parses"), &v, day4);
        assert!(ewma_in < 0.99, "ewma: {ewma_in}");
        // A level shift: the changepoint signals within a few points, and the new level is
        // then the baseline (one shift, not an alarm per point after it).
        let mut v: Vec<f64> = daily(6000)
            .iter()
            .map(|x| (x - 100.0) * 0.05 + 10.0)
            .collect();
        for x in &mut v[5000..] {
            *x += 3.0;
        }
        let cp = Method::parse("changepoint", "hold=0").expect("parses");
        let mut m = cp.build();
        let scores: Vec<f64> = v
            .iter()
            .enumerate()
            .map(|(i, x)| m.update(i as i64 * MIN, *x))
            .collect();
        assert!(
            scores[5000..5010].iter().any(|s| *s >= 0.99),
            "not signalled"
        );
        let after = scores[5010..].iter().filter(|s| **s >= 0.99).count();
        let before = scores[4000..5000].iter().filter(|s| **s >= 0.99).count();
        assert!(
            after <= before + 3,
            "{after} alarms after the shift, {before} before"
        );
    }

    #[test]
    fn parameters_are_checked_and_named() {
        let e = |m: &str, p: &str| Method::parse(m, p).unwrap_err().to_string();
        assert!(e("lstm", "").contains("unknown method \"lstm\""));
        assert!(e("ewma", "alpha=2").contains("alpha: must be in (0, 1]"));
        assert!(e("ewma", "window=3").contains("unknown parameter \"window\" for method ewma"));
        assert!(e("seasonal", "period=soon").contains("parameter period"));
        assert!(e("seasonal", "buckets=0").contains("buckets"));
        assert!(e("changepoint", "drift=NaN").contains("finite"));
        assert!(e("ensemble", "members=knn+ensemble").contains("cannot hold an ensemble"));
        assert!(e("ensemble", "ewma.alpha=0.5").contains("not a member"));
        assert!(e("ensemble", "combine=median").contains("max or mean"));
        assert!(e("knn", "hold").contains("key=value"));
        let m = Method::parse(
            "ensemble",
            "members=ewma+seasonal,ewma.alpha=0.5,combine=mean,hold=7",
        )
        .expect("parses");
        match m {
            Method::Ensemble(e) => {
                assert_eq!(e.members.len(), 2);
                assert!(matches!(&e.members[0], Method::Ewma(p) if p.alpha == 0.5));
                assert!(!e.max);
                assert_eq!(e.frame.hold, 7);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_value_far_past_everything_seen_is_reported_inside_a_hold() {
        // A repeating pattern, then a small new high that alarms and starts a hold; inside
        // it, a spike twice the range is reported at full score, a second small new high
        // (past the range by less than `escape` of it) is halved.
        let method = Method::parse("context", "warmup=0").expect("parses");
        let pattern = |i: usize| f64::from((i % 16) as u32);
        let run = |tail: &[f64]| {
            let mut m = method.build();
            for i in 0..3000 {
                m.update(i as i64 * MIN, pattern(i));
            }
            let first = m.update(3000 * MIN, 16.0);
            let rest: Vec<f64> = tail
                .iter()
                .enumerate()
                .map(|(i, v)| m.update((3001 + i as i64) * MIN, *v))
                .collect();
            (first, rest)
        };
        let (first, rest) = run(&[pattern(1), pattern(2), 40.0]);
        assert!(
            first >= method.alarm(),
            "the first new high alarms: {first}"
        );
        assert!(
            rest[2] >= method.alarm(),
            "the spike inside the hold: {rest:?}"
        );
        let (_, rest) = run(&[pattern(1), pattern(2), 17.0]);
        assert!(
            rest[2] < method.alarm(),
            "a creeping new high inside the hold: {rest:?}"
        );
        // escape=0: the hold halves the spike too.
        let method = Method::parse("context", "warmup=0,escape=0").expect("parses");
        let mut m = method.build();
        for i in 0..3000 {
            m.update(i as i64 * MIN, pattern(i));
        }
        m.update(3000 * MIN, 16.0);
        let s = m.update(3001 * MIN, 40.0);
        assert!(s <= 0.5, "without the escape the hold halves it: {s}");
    }

    #[test]
    fn no_model_outgrows_its_bound() {
        use rand::{Rng, SeedableRng};
        // Shapes that grow each kind of state: noise fills the transition table and the knn
        // ring, a rising counter with resets widens the range at every point, a spiky random
        // walk mixes both, a constant and a NaN-riddled series grow little.
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let n = 5000;
        let noise: Vec<f64> = (0..n).map(|_| rng.random_range(0.0..100.0)).collect();
        let counter: Vec<f64> = (0..n).map(|i| ((i % 1700) * (i % 1700)) as f64).collect();
        let mut walk = 0.0;
        let spiky: Vec<f64> = (0..n)
            .map(|_| {
                walk += rng.random_range(-1.0..1.0);
                walk + if rng.random_bool(0.02) { 1e6 } else { 0.0 }
            })
            .collect();
        let flat = vec![3.0; n];
        let gappy: Vec<f64> = (0..n)
            .map(|i| {
                if i % 3 == 0 {
                    f64::NAN
                } else {
                    rng.random_range(-5.0..5.0)
                }
            })
            .collect();
        let methods = [
            ("context", ""),
            ("context", "cap=100,relearn=0"),
            ("context", "bins=50,order=10,grids=3,relearn=777"),
            ("knn", ""),
            ("knn", "window=3,memory=4"),
            ("knn", "window=17,memory=300,calibration=33"),
            ("knn", "memory=0"),
            ("ewma", ""),
            ("seasonal", "period=1h,buckets=7"),
            ("changepoint", ""),
            ("ensemble", ""),
            ("ensemble", "members=context+ewma,context.cap=500"),
        ];
        // A parameter too large for memory is not an overflow: its bound saturates, and no
        // budget admits it.
        let huge = Method::parse("knn", "memory=1000000000000000000,window=1000000000000")
            .expect("parses");
        assert_eq!(huge.max_bytes(), usize::MAX);
        for (m, params) in methods {
            let method = Method::parse(m, params).expect("parses");
            let bound = method.max_bytes();
            let mut most = 0;
            for (shape, values) in [
                ("noise", &noise),
                ("counter", &counter),
                ("spiky", &spiky),
                ("flat", &flat),
                ("gappy", &gappy),
            ] {
                let mut model = method.build();
                for (i, v) in values.iter().enumerate() {
                    model.update(i as i64 * MIN, *v);
                    if i % 97 == 0 || i == n - 1 {
                        let b = model.bytes();
                        assert!(
                            b <= bound,
                            "{m} {params:?} on {shape}: {b} bytes at point {i}, bound {bound}"
                        );
                        most = most.max(b);
                    }
                }
            }
            // The bound is what the budget sets aside per series: it must not be far above
            // what a model can reach, or the budget admits too few series.
            if m == "context" || m == "knn" && !params.contains("memory=0") {
                assert!(
                    most * 2 >= bound,
                    "{m} {params:?}: the largest model held {most} bytes, the bound is {bound}"
                );
            }
        }
    }
}
