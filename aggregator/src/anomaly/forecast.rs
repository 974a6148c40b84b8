//! Trend and capacity forecasts: additive Holt-Winters (level, trend, a seasonal profile of
//! `season` points; ETS(A,A,A), optionally damped) fitted to a series' history at a regular
//! step, and the time until a forecast reaches a limit ("time until full").
//!
//! The smoothing weights are fitted per series: a small grid (level, trend, season weights
//! and damping, including no trend and no season) judged by a backtest over the history's
//! last horizons ([`fit_for`]) — cheap enough to refit at every evaluation (2 016 points of a
//! week at 5 minutes, 54 candidates, 2 folds of 2-day horizons: about 0.13 M smoothing steps),
//! so a forecast holds no state of its own and survives restarts with the data it reads.
//!
//! The baseline it is measured against is PromQL's `predict_linear` ([`linear`]): a least
//! squares line over the last points.

use telltale_common::model::Sample;

/// A series' samples laid on the step grid from `start` to `end` (inclusive): one value per
/// step, NaN where a step has none.
pub fn on_grid(samples: &[Sample], start: i64, end: i64, step: i64) -> Vec<f64> {
    let step = step.max(1);
    let n = ((end - start) / step + 1).max(0) as usize;
    let mut values = vec![f64::NAN; n];
    for p in samples {
        if p.0 >= start
            && let Some(v) = values.get_mut(((p.0 - start) / step) as usize)
        {
            *v = p.1;
        }
    }
    values
}

/// Missing values (not finite) filled by a straight line between their neighbours (the
/// nearest one at the ends), so the fit keeps the time grid — and the season's phase — across
/// gaps. `None` with fewer than 4 finite values.
fn fill_gaps(values: &[f64]) -> Option<Vec<f64>> {
    let known: Vec<usize> = (0..values.len())
        .filter(|i| values[*i].is_finite())
        .collect();
    if known.len() < 4 {
        return None;
    }
    let mut out = values.to_vec();
    let (first, last) = (known[0], known[known.len() - 1]);
    for x in &mut out[..first] {
        *x = values[first];
    }
    for x in &mut out[last + 1..] {
        *x = values[last];
    }
    for w in known.windows(2) {
        let (a, b) = (w[0], w[1]);
        for (k, x) in out[a + 1..b].iter_mut().enumerate() {
            let f = (k + 1) as f64 / (b - a) as f64;
            *x = values[a] + f * (values[b] - values[a]);
        }
    }
    Some(out)
}

/// A fitted model.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    level: f64,
    trend: f64,
    phi: f64,
    /// Seasonal offsets, indexed by position in the season (empty: none).
    season: Vec<f64>,
    /// The position in the season of the next point.
    next: usize,
    /// Root mean squared one-step error over the history.
    pub rmse: f64,
}

/// Smoothing weights.
#[derive(Debug, Clone, Copy)]
struct Weights {
    alpha: f64,
    beta: f64,
    gamma: f64,
    phi: f64,
}

const ALPHAS: [f64; 3] = [0.05, 0.2, 0.5];
const BETAS: [f64; 2] = [0.005, 0.05];
/// Season weights; a negative one: no season (a daily profile of noise is no forecast).
const GAMMAS: [f64; 3] = [0.05, 0.2, -1.0];
/// Backtest folds: one held-back horizon alone lets a single day of noise choose the model.
/// On the held-back tails of `anomaly forecast-eval` (25 series) the median MAPE was
/// 26.1 % with 1 fold, 24.2 % with 2 or 3, 20.7 % with 4 (README, "Forecasts").
const FOLDS: usize = 4;
/// Trend damping per step: a full trend, a lightly damped one, none (level and season only).
const PHIS: [f64; 3] = [1.0, 0.999, 0.0];

/// Fits a model to `values` (one per step, oldest first; gaps — values not finite — are
/// filled by interpolation) with a season of `season` points (0 or more than half the
/// history: no season), for forecasts up
/// to `horizon` steps ahead: when the history is long enough, the weights are chosen by a
/// backtest — each candidate fitted without the history's last `horizon` points and judged
/// by its forecast of them (one-step errors cannot tell a trend worth extrapolating a day
/// from noise), and again without the last 2, 3 and 4 horizons ([`FOLDS`]) as far as the
/// history holds them, the absolute errors summed — then refitted on everything.
/// `None` with fewer than 4 finite points.
pub fn fit_for(values: &[f64], season: usize, horizon: usize) -> Option<Fit> {
    let v = fill_gaps(values)?;
    let m = if season >= 2 { season } else { 0 };
    if horizon == 0 || v.len() < horizon + 2 * m.max(2) + 4 {
        return fit(&v, season);
    }
    let folds: Vec<usize> = (1..=FOLDS)
        .filter(|k| v.len() >= k * horizon + 2 * m.max(2) + 4)
        .collect();
    let mut best: Option<(f64, Weights)> = None;
    for w in candidates(m) {
        let mut err = 0.0;
        for &k in &folds {
            let (train, rest) = v.split_at(v.len() - k * horizon);
            let test = &rest[..horizon];
            let m_train = if m > 0 && train.len() >= 2 * m { m } else { 0 };
            let f = run(train, m_train, w);
            err += test
                .iter()
                .enumerate()
                .map(|(i, x)| (x - f.at(i + 1)).abs())
                .sum::<f64>();
        }
        if best.as_ref().is_none_or(|b| err < b.0) {
            best = Some((err, w));
        }
    }
    let (_, w) = best?;
    let m_all = if m > 0 && v.len() >= 2 * m { m } else { 0 };
    Some(run(&v, m_all, w))
}

fn candidates(m: usize) -> Vec<Weights> {
    let mut out = Vec::new();
    for &alpha in &ALPHAS {
        for &beta in &BETAS {
            for &phi in &PHIS {
                let gammas: &[f64] = if m > 0 { &GAMMAS } else { &[0.0] };
                for &gamma in gammas {
                    out.push(Weights {
                        alpha,
                        beta,
                        gamma,
                        phi,
                    });
                }
            }
        }
    }
    out
}

/// Fits a model to `values` (one per step, oldest first; gaps filled as in [`fit_for`])
/// with a season of `season` points (0 or more than half the history: no season), the
/// weights chosen by the one-step-ahead error. `None` with fewer than 4 finite points.
pub fn fit(values: &[f64], season: usize) -> Option<Fit> {
    let v = fill_gaps(values)?;
    let season = if season >= 2 && v.len() >= 2 * season {
        season
    } else {
        0
    };
    let mut best: Option<Fit> = None;
    for w in candidates(season) {
        let f = run(&v, season, w);
        if best.as_ref().is_none_or(|b| f.rmse < b.rmse) {
            best = Some(f);
        }
    }
    best
}

fn run(v: &[f64], m: usize, w: Weights) -> Fit {
    let m = if w.gamma < 0.0 { 0 } else { m };
    // Start: the first season's mean as level, the change between the first two seasons (or
    // the first two points) as trend, the first season's deviations as the profile.
    let (mut level, mut trend, mut season) = if m > 0 {
        let first = v[..m].iter().sum::<f64>() / m as f64;
        let second = v[m..2 * m].iter().sum::<f64>() / m as f64;
        let trend = (second - first) / m as f64;
        // The profile is the first season's deviations from its trend line (not from its
        // mean: a trend within the season would be counted twice), and the level is where
        // that line ends.
        let mid = (m as f64 - 1.0) / 2.0;
        let profile = v[..m]
            .iter()
            .enumerate()
            .map(|(i, x)| x - (first + (i as f64 - mid) * trend))
            .collect();
        (first + (m as f64 - 1.0 - mid) * trend, trend, profile)
    } else {
        (v[0], v[1] - v[0], Vec::new())
    };
    let start = if m > 0 { m } else { 1 };
    let (mut sse, mut n) = (0.0, 0usize);
    for (i, &x) in v.iter().enumerate().skip(start) {
        let s = if m > 0 { season[i % m] } else { 0.0 };
        let predicted = level + w.phi * trend + s;
        sse += (x - predicted).powi(2);
        n += 1;
        let new_level = w.alpha * (x - s) + (1.0 - w.alpha) * (level + w.phi * trend);
        trend = w.beta * (new_level - level) + (1.0 - w.beta) * w.phi * trend;
        level = new_level;
        if m > 0 {
            season[i % m] = w.gamma * (x - level) + (1.0 - w.gamma) * s;
        }
    }
    Fit {
        level,
        trend,
        phi: w.phi,
        next: if m > 0 { v.len() % m } else { 0 },
        season,
        rmse: (sse / n.max(1) as f64).sqrt(),
    }
}

impl Fit {
    /// The forecast `h` steps ahead (`h` ≥ 1).
    pub fn at(&self, h: usize) -> f64 {
        // Damped trend: phi + phi^2 + ... + phi^h.
        let damp = if self.phi >= 1.0 {
            h as f64
        } else if self.phi <= 0.0 {
            0.0
        } else {
            self.phi * (1.0 - self.phi.powi(h as i32)) / (1.0 - self.phi)
        };
        let s = if self.season.is_empty() {
            0.0
        } else {
            self.season[(self.next + h - 1) % self.season.len()]
        };
        self.level + damp * self.trend + s
    }

    /// The first step within `horizon` steps at which the forecast reaches `limit` from the
    /// side the series is on now (falling to it or rising to it).
    pub fn steps_until(&self, limit: f64, horizon: usize) -> Option<usize> {
        let now = self.level;
        let falling = now > limit;
        (1..=horizon).find(|&h| {
            let y = self.at(h);
            if falling { y <= limit } else { y >= limit }
        })
    }
}

/// PromQL's `predict_linear` over `values` (one per step, oldest first): the least-squares
/// line's value `h` steps after the last point.
pub fn linear(values: &[f64], h: usize) -> Option<f64> {
    let pts: Vec<(f64, f64)> = values
        .iter()
        .enumerate()
        .filter(|(_, y)| y.is_finite())
        .map(|(i, y)| (i as f64, *y))
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = if sxx == 0.0 { 0.0 } else { sxy / sxx };
    let last = (values.len() - 1) as f64;
    Some(my + slope * (last + h as f64 - mx))
}

/// Mean absolute percentage error of `predicted` against `actual` (points whose actual value
/// is 0 are left out), in percent; `None` when none is left.
pub fn mape(actual: &[f64], predicted: &[f64]) -> Option<f64> {
    let (mut sum, mut n) = (0.0, 0usize);
    for (a, p) in actual.iter().zip(predicted) {
        if a.abs() > 1e-12 && a.is_finite() && p.is_finite() {
            sum += ((a - p) / a).abs();
            n += 1;
        }
    }
    (n > 0).then(|| 100.0 * sum / n as f64)
}

/// A held-back tail: the MAPE of Holt-Winters and of `predict_linear` (over the last
/// `linear_window` points) forecasting the last `horizon` points of `values` from the rest.
pub fn held_back(
    values: &[f64],
    season: usize,
    horizon: usize,
    linear_window: usize,
) -> Option<(f64, f64)> {
    if values.len() <= horizon + 4 {
        return None;
    }
    let (history, tail) = values.split_at(values.len() - horizon);
    let f = fit_for(history, season, horizon)?;
    let hw: Vec<f64> = (1..=horizon).map(|h| f.at(h)).collect();
    let recent = &history[history.len().saturating_sub(linear_window.max(2))..];
    let lin: Vec<f64> = (1..=horizon)
        .map(|h| linear(recent, h).unwrap_or(f64::NAN))
        .collect();
    Some((mape(tail, &hw)?, mape(tail, &lin)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seasonal_trend_is_carried_forward_and_a_limit_is_found() {
        // A daily cycle of 24 points on a rising line, with a little deterministic noise.
        let y = |i: usize| {
            100.0
                + 0.5 * i as f64
                + 10.0 * (i as f64 / 24.0 * std::f64::consts::TAU).sin()
                + ((i * 37) % 7) as f64 * 0.1
        };
        let history: Vec<f64> = (0..24 * 14).map(y).collect();
        let f = fit(&history, 24).expect("fits");
        let n = history.len();
        let actual: Vec<f64> = (n..n + 24).map(y).collect();
        let predicted: Vec<f64> = (1..=24).map(|h| f.at(h)).collect();
        let hw = mape(&actual, &predicted).expect("mape");
        // predict_linear over the last quarter day cannot know the cycle.
        let lin: Vec<f64> = (1..=24)
            .map(|h| linear(&history[n - 6..], h).expect("line"))
            .collect();
        let pl = mape(&actual, &lin).expect("mape");
        assert!(
            hw < 1.0 && hw < pl / 2.0,
            "holt-winters {hw} %, predict_linear {pl} %"
        );
        // Rising 12 a day: 200 more is reached in about 16 days, not within 1.
        let last = history[n - 1];
        let steps = f.steps_until(last + 200.0, 24 * 30).expect("reached");
        assert!((24 * 14..24 * 19).contains(&steps), "{steps}");
        assert_eq!(f.steps_until(last + 200.0, 24), None);
        // A falling series reaches a lower limit; none is reached going the other way.
        let falling: Vec<f64> = (0..100).map(|i| 1000.0 - 5.0 * i as f64).collect();
        let f = fit(&falling, 0).expect("fits");
        // 505 now, falling 5 a step: 0 is reached 101 steps on.
        assert_eq!(f.steps_until(0.0, 1000), Some(101));
        assert_eq!(f.steps_until(2000.0, 1000), None);
        // Too little data, and points that are not numbers.
        assert!(fit(&[1.0, 2.0, f64::NAN], 0).is_none());
        // Gaps keep the grid: a line with holes forecasts like the line.
        let holes: Vec<f64> = (0..50)
            .map(|i| if i % 7 == 3 { f64::NAN } else { i as f64 })
            .collect();
        let f = fit(&holes, 0).expect("fits");
        assert!((f.at(10) - 59.0).abs() < 0.5, "{}", f.at(10));
        assert_eq!(
            on_grid(
                &[Sample(1000, 1.0), Sample(3000, 3.0), Sample(9000, 9.0)],
                1000,
                4000,
                1000
            )
            .iter()
            .map(|v| if v.is_nan() { -1.0 } else { *v })
            .collect::<Vec<_>>(),
            [1.0, -1.0, 3.0, -1.0]
        );
        assert_eq!(linear(&[1.0, 2.0, 3.0], 2), Some(5.0));
        assert_eq!(mape(&[0.0, 10.0], &[1.0, 9.0]), Some(10.0));
        assert_eq!(mape(&[0.0], &[1.0]), None);
    }

    #[test]
    fn noise_without_a_cycle_is_forecast_flat_and_a_real_cycle_is_kept() {
        use rand::{Rng, SeedableRng};
        // Spiky CPU-like noise around a level (a spike of +40 on about one point in ten), 14
        // days of 24 points, over several seeds: a daily profile fitted to it is yesterday's
        // noise, repeated.
        let span = |day: &[f64]| {
            day.iter().copied().fold(f64::MIN, f64::max)
                - day.iter().copied().fold(f64::MAX, f64::min)
        };
        let (mut flat_days, mut hw_better, seeds) = (0usize, 0usize, 20u64);
        for seed in 0..seeds {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let flat: Vec<f64> = (0..24 * 15)
                .map(|_| {
                    let spike = if rng.random_bool(0.1) { 40.0 } else { 0.0 };
                    20.0 + rng.random_range(0.0..4.0) + spike
                })
                .collect();
            let (history, actual) = flat.split_at(24 * 14);
            let f = fit_for(history, 24, 24).expect("fits");
            let day: Vec<f64> = (1..=24).map(|h| f.at(h)).collect();
            flat_days += usize::from(span(&day) < 2.0);
            let lin: Vec<f64> = (1..=24)
                .map(|h| linear(&history[history.len() - 6..], h).expect("line"))
                .collect();
            hw_better += usize::from(mape(actual, &day) < mape(actual, &lin));
            // The same noise on a daily cycle of ±15: the forecast day follows the cycle (its
            // deviations from its own mean correlate with the cycle's; how far they are off
            // depends on the spikes the profile has learnt, so that is not asserted).
            let cycle = |i: usize| 15.0 * (i as f64 / 24.0 * std::f64::consts::TAU).sin();
            let seasonal: Vec<f64> = flat.iter().enumerate().map(|(i, v)| v + cycle(i)).collect();
            let (history, _) = seasonal.split_at(24 * 14);
            let f = fit_for(history, 24, 24).expect("fits");
            let n = history.len();
            let day: Vec<f64> = (1..=24).map(|h| f.at(h)).collect();
            let mean = day.iter().sum::<f64>() / 24.0;
            let dev: Vec<f64> = day.iter().map(|x| x - mean).collect();
            let c: Vec<f64> = (1..=24).map(|h| cycle(n + h - 1)).collect();
            let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
            let dot: f64 = dev.iter().zip(&c).map(|(a, b)| a * b).sum();
            let corr = dot / norm(&dev) / norm(&c);
            assert!(
                corr > 0.8,
                "seed {seed}: the forecast day's correlation with the cycle is {corr:.2}"
            );
        }
        // A backtest on 4 horizons can still pick a profile of noise by chance (2 of these 20
        // seeds; without the no-season candidate, every one).
        assert!(
            flat_days * 4 >= seeds as usize * 3,
            "noise forecast flat on only {flat_days} of {seeds} seeds"
        );
        assert!(
            hw_better * 4 >= seeds as usize * 3,
            "flat forecasts beat predict_linear on only {hw_better} of {seeds} seeds"
        );
    }
}
