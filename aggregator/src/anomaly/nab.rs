//! The Numenta Anomaly Benchmark's scoring, as NAB defines it (Lavin & Ahmad 2015; NAB's
//! `sweeper.py`, `optimizer.py` and `runner.py` were read for the exact rules):
//!
//! - per file, the first `min(floor(0.15 n), 750)` rows are the probation period: not scored;
//! - a row inside a labelled window scores as a true positive by a scaled sigmoid of its
//!   position (`2 / (1 + e^(5x)) - 1`, x from -1 at the window's left edge to 0 past its right
//!   edge), weighted by the profile's TP weight; a window keeps only its best (earliest)
//!   detection, and a window never detected costs the FN weight;
//! - a row outside every window scores as a false positive, -1 before the first window and,
//!   after one, by the sigmoid of its distance past that window's right edge (relative to the
//!   window's width), weighted by the FP weight;
//! - one threshold for the whole corpus, chosen per profile to maximise the summed score
//!   (a row is a detection when its anomaly score is at or above it);
//! - the summed score is normalised so that the null detector scores 0 and a perfect one 100:
//!   `100 (raw - null) / (windows × tpWeight - null)`.
//!
//! Inputs are NAB's own files: `labels/combined_windows.json`, `config/profiles.json` and
//! result files `results/<detector>/<category>/<detector>_<file>.csv` (`timestamp, value,
//! anomaly_score, ...`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::method::Method;

pub mod fold;

/// A scoring profile's weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// `standard`, `reward_low_FP_rate`, `reward_low_FN_rate`.
    pub name: String,
    /// True-positive weight.
    pub tp: f64,
    /// False-positive weight.
    pub fp: f64,
    /// False-negative weight.
    pub fn_: f64,
}

/// What went wrong reading NAB's files.
#[derive(Debug)]
pub struct NabError(pub String);

impl std::fmt::Display for NabError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NabError {}

fn err(s: impl Into<String>) -> NabError {
    NabError(s.into())
}

/// Reads `config/profiles.json`.
pub fn profiles(nab: &Path) -> Result<Vec<Profile>, NabError> {
    let p = nab.join("config/profiles.json");
    let text = std::fs::read_to_string(&p).map_err(|e| err(format!("{}: {e}", p.display())))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| err(format!("{}: {e}", p.display())))?;
    let obj = v
        .as_object()
        .ok_or_else(|| err(format!("{}: not an object", p.display())))?;
    let mut out = Vec::new();
    for (name, prof) in obj {
        let w = |k: &str| {
            prof["CostMatrix"][k]
                .as_f64()
                .ok_or_else(|| err(format!("{}: {name}: no CostMatrix.{k}", p.display())))
        };
        out.push(Profile {
            name: name.clone(),
            tp: w("tpWeight")?,
            fp: w("fpWeight")?,
            fn_: w("fnWeight")?,
        });
    }
    Ok(out)
}

/// The labelled windows: file (`category/name.csv`) → (start, end) timestamps, as
/// `YYYY-MM-DD HH:MM:SS`.
pub type Windows = BTreeMap<String, Vec<(String, String)>>;

/// A timestamp as NAB's files write it, to the second (window files add microseconds).
fn second(t: &str) -> &str {
    t.get(..19).unwrap_or(t)
}

/// Reads `labels/combined_windows.json`.
pub fn windows(nab: &Path) -> Result<Windows, NabError> {
    let p = nab.join("labels/combined_windows.json");
    let text = std::fs::read_to_string(&p).map_err(|e| err(format!("{}: {e}", p.display())))?;
    let v: BTreeMap<String, Vec<(String, String)>> =
        serde_json::from_str(&text).map_err(|e| err(format!("{}: {e}", p.display())))?;
    Ok(v.into_iter()
        .map(|(f, w)| {
            let w = w
                .into_iter()
                .map(|(a, b)| (second(&a).to_string(), second(&b).to_string()))
                .collect();
            (f, w)
        })
        .collect())
}

/// One file's rows: timestamps and anomaly scores.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    /// `YYYY-MM-DD HH:MM:SS`.
    pub timestamps: Vec<String>,
    /// Anomaly scores in [0, 1].
    pub scores: Vec<f64>,
}

/// Reads a result file (`timestamp,value,anomaly_score,...` with a header).
pub fn read_results(p: &Path) -> Result<Rows, NabError> {
    let text = std::fs::read_to_string(p).map_err(|e| err(format!("{}: {e}", p.display())))?;
    let mut lines = text.lines();
    let header = lines
        .next()
        .ok_or_else(|| err(format!("{}: empty", p.display())))?;
    let col = header
        .split(',')
        .position(|h| h.trim() == "anomaly_score")
        .ok_or_else(|| err(format!("{}: no anomaly_score column", p.display())))?;
    let mut rows = Rows::default();
    for (i, l) in lines.enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = l.split(',').collect();
        let (Some(t), Some(s)) = (f.first(), f.get(col)) else {
            return Err(err(format!("{}:{}: short row", p.display(), i + 2)));
        };
        let s: f64 = s.trim().parse().map_err(|e| {
            err(format!(
                "{}:{}: anomaly_score {s:?}: {e}",
                p.display(),
                i + 2
            ))
        })?;
        rows.timestamps.push(second(t.trim()).to_string());
        rows.scores.push(s);
    }
    Ok(rows)
}

/// One scorable row: its anomaly score, what detecting it is worth, and its window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// The detector's anomaly score.
    pub score: f64,
    /// Worth as a detection under the profile (positive in a window, negative outside).
    pub worth: f64,
    /// Window id (unique over the corpus), or none.
    pub window: Option<usize>,
}

/// NAB's scaled sigmoid of a relative position.
pub fn scaled_sigmoid(x: f64) -> f64 {
    if x > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * x).exp()) - 1.0
    }
}

/// The probation period of a file of `n` rows.
pub fn probation(n: usize) -> usize {
    let p = (0.15 * n as f64).floor().min(0.15 * 5000.0);
    p as usize
}

/// A file's scorable rows; windows get ids from `*next_window` on.
pub fn sweep(
    profile: &Profile,
    rows: &Rows,
    windows: &[(String, String)],
    next_window: &mut usize,
) -> Result<Vec<Point>, NabError> {
    let index = |t: &str| {
        rows.timestamps
            .iter()
            .position(|x| x == t)
            .ok_or_else(|| err(format!("window edge {t} is not a row")))
    };
    let mut spans = Vec::new();
    for (a, b) in windows {
        let (l, r) = (index(a)?, index(b)?);
        spans.push((l, r, *next_window));
        *next_window += 1;
    }
    let max_tp = scaled_sigmoid(-1.0);
    let probation = probation(rows.timestamps.len());
    let mut out = Vec::with_capacity(rows.scores.len());
    let mut cur: Option<(usize, usize, usize)> = None;
    let mut prev: Option<(usize, f64)> = None;
    let mut next = spans.iter().copied().peekable();
    for (i, score) in rows.scores.iter().copied().enumerate() {
        if let Some(&(l, _, _)) = next.peek()
            && l == i
        {
            cur = next.next();
        }
        let (worth, window) = match cur {
            Some((l, r, id)) => {
                let width = (r - l + 1) as f64;
                let pos = -((r as f64 - i as f64 + 1.0) / width);
                (scaled_sigmoid(pos) * profile.tp / max_tp, Some(id))
            }
            None => {
                let u = match prev {
                    None => -1.0,
                    Some((right, width)) => scaled_sigmoid((i - right) as f64 / (width - 1.0)),
                };
                (u * profile.fp, None)
            }
        };
        if i >= probation {
            out.push(Point {
                score,
                worth,
                window,
            });
        }
        if let Some((l, r, _)) = cur
            && r == i
        {
            prev = Some((r, (r - l + 1) as f64));
            cur = None;
        }
    }
    Ok(out)
}

/// The best threshold over `points` (all files of a corpus) and the summed score there: a
/// point is a detection when its score is at or above the threshold.
pub fn optimise(profile: &Profile, points: &[Point]) -> (f64, f64) {
    let mut sorted: Vec<&Point> = points.iter().collect();
    sorted.sort_by(|a, b| b.score.total_cmp(&a.score));
    // Windows with a scorable row start as misses.
    let mut window: BTreeMap<usize, f64> = BTreeMap::new();
    for p in &sorted {
        if let Some(w) = p.window {
            window.insert(w, -profile.fn_);
        }
    }
    let mut fp = 0.0;
    let mut total: f64 = window.values().sum();
    let mut best = (1.1, total);
    let mut k = 0;
    while k < sorted.len() {
        let t = sorted[k].score;
        while k < sorted.len() && sorted[k].score == t {
            let p = sorted[k];
            match p.window {
                None => fp += p.worth,
                Some(w) => {
                    if let Some(v) = window.get_mut(&w)
                        && p.worth > *v
                    {
                        total += p.worth - *v;
                        *v = p.worth;
                    }
                }
            }
            k += 1;
        }
        // NAB keeps the first threshold reaching the maximum (ties go to the higher one).
        if total + fp > best.1 {
            best = (t, total + fp);
        }
    }
    best
}

/// The summed score over `points` with detections at or above `threshold`.
pub fn score_at(profile: &Profile, points: &[Point], threshold: f64) -> f64 {
    let mut window: BTreeMap<usize, f64> = BTreeMap::new();
    let mut fp = 0.0;
    for p in points {
        if let Some(w) = p.window {
            let v = window.entry(w).or_insert(-profile.fn_);
            if p.score >= threshold && p.worth > *v {
                *v = p.worth;
            }
        } else if p.score >= threshold {
            fp += p.worth;
        }
    }
    fp + window.values().sum::<f64>()
}

/// A detector's result files under `results/<detector>/`.
pub fn result_file(results: &Path, detector: &str, file: &str) -> PathBuf {
    let (cat, name) = file.split_once('/').unwrap_or(("", file));
    results
        .join(detector)
        .join(cat)
        .join(format!("{detector}_{name}"))
}

/// A detector's raw corpus score and threshold per profile.
pub fn raw_scores(
    nab: &Path,
    results: &Path,
    detector: &str,
) -> Result<BTreeMap<String, (f64, f64)>, NabError> {
    let wins = windows(nab)?;
    let mut files = Vec::new();
    for f in wins.keys() {
        files.push(read_results(&result_file(results, detector, f))?);
    }
    let mut out = BTreeMap::new();
    for prof in profiles(nab)? {
        let mut points = Vec::new();
        let mut next = 0;
        for ((name, w), rows) in wins.iter().zip(&files) {
            points
                .extend(sweep(&prof, rows, w, &mut next).map_err(|e| err(format!("{name}: {e}")))?);
        }
        let (threshold, raw) = optimise(&prof, &points);
        out.insert(prof.name.clone(), (threshold, raw));
    }
    Ok(out)
}

/// A detector's normalised NAB scores per profile (null detector 0, perfect 100), with the
/// threshold chosen for each: `results` holds `null/` and `<detector>/`.
pub fn scores(
    nab: &Path,
    results: &Path,
    detector: &str,
) -> Result<BTreeMap<String, (f64, f64)>, NabError> {
    let windows_total: usize = windows(nab)?.values().map(Vec::len).sum();
    let null = raw_scores(nab, &nab.join("results"), "null")?;
    let raw = raw_scores(nab, results, detector)?;
    let mut out = BTreeMap::new();
    for prof in profiles(nab)? {
        let base = null.get(&prof.name).map_or(0.0, |x| x.1);
        let (threshold, r) = raw.get(&prof.name).copied().unwrap_or((1.1, base));
        let perfect = windows_total as f64 * prof.tp;
        out.insert(
            prof.name,
            (100.0 * (r - base) / (perfect - base), threshold),
        );
    }
    Ok(out)
}

/// Milliseconds since 1970 of NAB's `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn timestamp_ms(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000)
}

/// Reads a data file (`timestamp,value`).
pub fn read_data(p: &Path) -> Result<(Vec<String>, Vec<f64>), NabError> {
    let text = std::fs::read_to_string(p).map_err(|e| err(format!("{}: {e}", p.display())))?;
    let (mut ts, mut vs) = (Vec::new(), Vec::new());
    for (i, l) in text.lines().enumerate().skip(1) {
        let Some((t, v)) = l.split_once(',') else {
            continue;
        };
        let v: f64 = v
            .trim()
            .parse()
            .map_err(|e| err(format!("{}:{}: value {v:?}: {e}", p.display(), i + 1)))?;
        ts.push(second(t.trim()).to_string());
        vs.push(v);
    }
    Ok((ts, vs))
}

/// Runs a fresh model of `method` over every NAB data file `keep` accepts, each point once
/// and in order, and writes NAB result files to
/// `out/<detector>/<category>/<detector>_<file>.csv`. Returns the rows scored.
pub fn run(
    nab: &Path,
    out: &Path,
    detector: &str,
    method: &Method,
    keep: &dyn Fn(&str) -> bool,
) -> Result<usize, NabError> {
    let mut rows = 0;
    for file in windows(nab)?.keys().filter(|f| keep(f)) {
        let (ts, vs) = read_data(&nab.join("data").join(file))?;
        let mut model = method.build();
        let mut text = String::from("timestamp,value,anomaly_score\n");
        for (t, v) in ts.iter().zip(&vs) {
            let ms = timestamp_ms(t).ok_or_else(|| err(format!("{file}: timestamp {t:?}")))?;
            let s = model.update(ms, *v).clamp(0.0, 1.0);
            text.push_str(&format!("{t},{v},{s}\n"));
        }
        rows += vs.len();
        let p = result_file(out, detector, file);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(|e| err(format!("{}: {e}", d.display())))?;
        }
        std::fs::write(&p, text).map_err(|e| err(format!("{}: {e}", p.display())))?;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nab_dir() -> Option<PathBuf> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/nab");
        if p.join("results/final_results.json").exists() {
            return Some(p);
        }
        assert!(
            std::env::var("CI").is_err(),
            "{} is missing in CI: the NAB scorer cannot be checked",
            p.display()
        );
        eprintln!(
            "skipped: {} is absent (NAB data lives beside the repository)",
            p.display()
        );
        None
    }

    #[test]
    fn the_published_scores_are_reproduced() {
        let Some(nab) = nab_dir() else { return };
        let text = std::fs::read_to_string(nab.join("results/final_results.json")).expect("read");
        let published: serde_json::Value = serde_json::from_str(&text).expect("json");
        for detector in ["numenta", "twitterADVec", "null"] {
            let got = scores(&nab, &nab.join("results"), detector).expect("scores");
            for (profile, (score, threshold)) in &got {
                let want = published[detector][profile]
                    .as_f64()
                    .expect("published score");
                eprintln!(
                    "{detector} {profile}: {score:.3} (published {want:.3}, threshold {threshold})"
                );
                assert!(
                    (score - want).abs() <= 0.2,
                    "{detector} {profile}: {score} vs {want}"
                );
            }
            assert_eq!(got.len(), 3);
        }
        // NAB's own threshold search is local (config/thresholds.json): numenta's
        // reward_low_FP_rate threshold there (0.5752) scores 63.117 as published, where the
        // exhaustive search above finds 0.5431 and 63.209. Scored at NAB's thresholds, the
        // published figures come out exactly.
        let t: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(nab.join("config/thresholds.json")).expect("thresholds"),
        )
        .expect("json");
        let wins = windows(&nab).expect("windows");
        let total: usize = wins.values().map(Vec::len).sum();
        let null = raw_scores(&nab, &nab.join("results"), "null").expect("null");
        for prof in profiles(&nab).expect("profiles") {
            let mut points = Vec::new();
            let mut next = 0;
            for (f, w) in &wins {
                let rows =
                    read_results(&result_file(&nab.join("results"), "numenta", f)).expect("rows");
                points.extend(sweep(&prof, &rows, w, &mut next).expect("sweep"));
            }
            let th = t["numenta"][&prof.name]["threshold"]
                .as_f64()
                .expect("threshold");
            let raw = score_at(&prof, &points, th);
            let base = null[&prof.name].1;
            let norm = 100.0 * (raw - base) / (total as f64 * prof.tp - base);
            let want = published["numenta"][&prof.name]
                .as_f64()
                .expect("published");
            assert!(
                (norm - want).abs() < 1e-6,
                "{}: {norm} vs {want}",
                prof.name
            );
            assert!(
                optimise(&prof, &points).1 >= raw - 1e-9,
                "the search finds at least as good"
            );
        }
    }

    #[test]
    fn subsets_and_folds_agree_with_the_whole_corpus() {
        let Some(nab) = nab_dir() else { return };
        let results = nab.join("results");
        let whole = scores(&nab, &results, "numenta").expect("scores");
        let all = fold::subset_scores(&nab, &results, "numenta", &|_| true).expect("subset");
        assert_eq!(whole, all, "a subset of every file is the corpus");
        // With one run to choose from, each fold's threshold comes from the other six, so the
        // held-out figure can only be at most the corpus figure.
        let runs = [(
            "numenta".to_string(),
            results.clone(),
            "numenta".to_string(),
        )];
        let (folds, total) = fold::leave_one_category_out(&nab, &runs, "standard").expect("loco");
        assert_eq!(folds.len(), 7);
        assert!(
            total <= whole["standard"].0 + 1e-9 && total > 50.0,
            "{total}"
        );
    }

    /// The CI-sized guard: the default method (`context`) and the kNN over two categories
    /// (13 files, 25 274 points, the same code path as `anomaly nab --only
    /// realTraffic,realAdExchange --method M`). They score 75.31 and 43.67 (standard); a
    /// change that lowers either fails here. (context scored 74.23 before the growth that
    /// bounds its re-learning on rising series, which raised the whole corpus from 66.00 to
    /// 68.00 and lowered these two categories to 71.98; the escape from a hold raised them
    /// to 75.31, the corpus to 68.81.)
    #[test]
    fn the_detectors_keep_their_scores_on_a_nab_subset() {
        let Some(nab) = nab_dir() else { return };
        let keep = |f: &str| f.starts_with("realTraffic/") || f.starts_with("realAdExchange/");
        for (name, floor) in [("context", 74.5), ("knn", 43.0)] {
            let out = tempfile::tempdir().expect("tempdir");
            let method = Method::parse(name, "").expect("defaults");
            let rows = run(&nab, out.path(), "telltale", &method, &keep).expect("run");
            assert_eq!(rows, 25_274);
            let s = fold::subset_scores(&nab, out.path(), "telltale", &keep).expect("score");
            let standard = s["standard"].0;
            eprintln!("NAB subset, {name}: {s:?}");
            assert!(
                standard >= floor,
                "{name}'s NAB subset score fell: {standard:.2} < {floor}"
            );
        }
    }

    #[test]
    fn timestamps_parse_as_utc() {
        assert_eq!(timestamp_ms("1970-01-01 00:00:00"), Some(0));
        assert_eq!(timestamp_ms("2014-04-01 12:30:05"), Some(1_396_355_405_000));
        assert_eq!(timestamp_ms("2000-03-01 00:00:00"), Some(951_868_800_000));
        assert_eq!(timestamp_ms("2014-13-01 00:00:00"), None);
        assert_eq!(timestamp_ms("2014-04-01"), None);
    }

    #[test]
    fn the_sweep_follows_the_rules_on_a_small_file() {
        let prof = Profile {
            name: "standard".into(),
            tp: 1.0,
            fp: 0.11,
            fn_: 1.0,
        };
        // 20 rows, probation 3; one window over rows 10..=13.
        let ts: Vec<String> = (0..20)
            .map(|i| format!("2020-01-01 00:00:{i:02}"))
            .collect();
        let mut rows = Rows {
            timestamps: ts.clone(),
            scores: vec![0.0; 20],
        };
        let w = vec![(ts[10].clone(), ts[13].clone())];
        let mut next = 0;
        let pts = sweep(&prof, &rows, &w, &mut next).expect("sweep");
        assert_eq!(pts.len(), 17, "probation rows dropped");
        assert_eq!(next, 1);
        // The left edge is worth the full TP weight, the right edge nearly nothing.
        let left = pts[10 - 3];
        assert_eq!(left.window, Some(0));
        assert!((left.worth - 1.0).abs() < 1e-12);
        assert!(pts[13 - 3].worth < left.worth && pts[13 - 3].worth > 0.0);
        // Before the window a false positive costs the full FP weight; just after it, less.
        assert!((pts[0].worth + 0.11).abs() < 1e-12);
        assert!(pts[14 - 3].worth > -0.11 && pts[14 - 3].worth < 0.0);
        // Every score 0: either nothing is a detection (the window missed, -1) or everything
        // is (the window's left edge +1, every row outside it a false positive).
        let fps: f64 = pts
            .iter()
            .filter(|p| p.window.is_none())
            .map(|p| p.worth)
            .sum();
        assert!(fps < -1.0);
        assert_eq!(optimise(&prof, &pts), (0.0, 1.0 + fps));
        rows.scores[10] = 0.9;
        rows.scores[2] = 1.0; // in probation: ignored
        let mut next = 0;
        let pts = sweep(&prof, &rows, &w, &mut next).expect("sweep");
        let (t, s) = optimise(&prof, &pts);
        assert_eq!(t, 0.9);
        assert!((s - 1.0).abs() < 1e-12, "{s}");
        // A false positive scored as high as the detection lowers the best score.
        rows.scores[0] = 0.95;
        rows.scores[5] = 0.95;
        let mut next = 0;
        let pts = sweep(&prof, &rows, &w, &mut next).expect("sweep");
        let (t, s) = optimise(&prof, &pts);
        assert_eq!(t, 0.9);
        assert!((s - (1.0 - 0.11)).abs() < 1e-12, "{s}");
    }
}
