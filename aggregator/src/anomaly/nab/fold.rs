//! Scores over part of the corpus: a subset of files (the CI guard scores a fixed subset), and
//! the leave-one-category-out score — for each of NAB's seven categories, the parameter set
//! and threshold are chosen on the other six and the held-out category is scored with them —
//! which shows how much of a corpus score is tuning.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{
    NabError, Point, Profile, err, optimise, profiles, read_results, result_file, score_at, sweep,
    windows,
};

/// The scorable points of every file `keep` accepts, by file (window ids unique across them).
pub fn points(
    nab: &Path,
    results: &Path,
    detector: &str,
    profile: &Profile,
    keep: &dyn Fn(&str) -> bool,
) -> Result<ByFile, NabError> {
    let mut next = 0;
    let mut out = Vec::new();
    for (file, w) in windows(nab)? {
        if !keep(&file) {
            continue;
        }
        let rows = read_results(&result_file(results, detector, &file))?;
        let pts = sweep(profile, &rows, &w, &mut next).map_err(|e| err(format!("{file}: {e}")))?;
        out.push((file, pts));
    }
    Ok(out)
}

/// Points by file.
type ByFile = Vec<(String, Vec<Point>)>;

fn windows_in(pts: &[(String, Vec<Point>)]) -> usize {
    let mut ids: Vec<usize> = pts
        .iter()
        .flat_map(|(_, p)| p.iter().filter_map(|x| x.window))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

fn flat(pts: &[(String, Vec<Point>)]) -> Vec<Point> {
    pts.iter().flat_map(|(_, p)| p.iter().copied()).collect()
}

/// `100 (raw - null) / (perfect - null)`.
fn normalise(raw: f64, null: f64, windows: usize, profile: &Profile) -> f64 {
    let perfect = windows as f64 * profile.tp;
    if perfect == null {
        return 0.0;
    }
    100.0 * (raw - null) / (perfect - null)
}

/// A detector's normalised score per profile over the files `keep` accepts (threshold chosen
/// on them), with the threshold.
pub fn subset_scores(
    nab: &Path,
    results: &Path,
    detector: &str,
    keep: &dyn Fn(&str) -> bool,
) -> Result<BTreeMap<String, (f64, f64)>, NabError> {
    let mut out = BTreeMap::new();
    for prof in profiles(nab)? {
        let null = points(nab, &nab.join("results"), "null", &prof, keep)?;
        let null_raw = optimise(&prof, &flat(&null)).1;
        let mine = points(nab, results, detector, &prof, keep)?;
        let (threshold, raw) = optimise(&prof, &flat(&mine));
        let score = normalise(raw, null_raw, windows_in(&mine), &prof);
        out.insert(prof.name.clone(), (score, threshold));
    }
    Ok(out)
}

/// One held-out category.
#[derive(Debug, Clone)]
pub struct Fold {
    /// The category scored.
    pub category: String,
    /// The run chosen on the other six.
    pub chosen: String,
    /// Its threshold there.
    pub threshold: f64,
    /// Its normalised score on the other six.
    pub train: f64,
    /// Its normalised score on the held-out category.
    pub held_out: f64,
    /// The raw score on the held-out category.
    raw: f64,
}

/// A run of a parameter set: its name, where its result files are, and its detector name.
pub type RunDir = (String, PathBuf, String);

/// Leave-one-category-out under `profile`: per category, the run and threshold best on the
/// other six, scored on it; and the corpus figure from the held-out raw scores summed
/// (normalised over the whole corpus like the full score).
pub fn leave_one_category_out(
    nab: &Path,
    runs: &[RunDir],
    profile: &str,
) -> Result<(Vec<Fold>, f64), NabError> {
    let prof = profiles(nab)?
        .into_iter()
        .find(|p| p.name == profile)
        .ok_or_else(|| err(format!("no profile {profile:?}")))?;
    if runs.is_empty() {
        return Err(err("no runs to choose from"));
    }
    let all = |_: &str| true;
    let null_all = points(nab, &nab.join("results"), "null", &prof, &all)?;
    let mut loaded = Vec::new();
    for (name, dir, det) in runs {
        loaded.push((name.clone(), points(nab, dir, det, &prof, &all)?));
    }
    let category = |f: &str| f.split('/').next().unwrap_or("").to_string();
    let mut cats: Vec<String> = null_all.iter().map(|(f, _)| category(f)).collect();
    cats.dedup();
    let part = |pts: &[(String, Vec<Point>)], c: &str, inside: bool| -> ByFile {
        pts.iter()
            .filter(|(f, _)| (category(f) == c) == inside)
            .cloned()
            .collect()
    };
    let mut folds = Vec::new();
    for c in &cats {
        let null_train = part(&null_all, c, false);
        let null_train_raw = optimise(&prof, &flat(&null_train)).1;
        let mut best: Option<(f64, f64, &String, ByFile)> = None;
        for (name, pts) in &loaded {
            let train = part(pts, c, false);
            let (t, raw) = optimise(&prof, &flat(&train));
            let s = normalise(raw, null_train_raw, windows_in(&train), &prof);
            if best.as_ref().is_none_or(|b| s > b.0) {
                best = Some((s, t, name, part(pts, c, true)));
            }
        }
        let Some((train, threshold, chosen, held)) = best else {
            continue;
        };
        let raw = score_at(&prof, &flat(&held), threshold);
        let null_held = part(&null_all, c, true);
        let null_held_raw = optimise(&prof, &flat(&null_held)).1;
        folds.push(Fold {
            category: c.clone(),
            chosen: chosen.clone(),
            threshold,
            train,
            held_out: normalise(raw, null_held_raw, windows_in(&held), &prof),
            raw,
        });
    }
    let null_raw = optimise(&prof, &flat(&null_all)).1;
    let total: f64 = folds.iter().map(|f| f.raw).sum();
    Ok((
        folds,
        normalise(total, null_raw, windows_in(&null_all), &prof),
    ))
}
