//! `telltale-aggregator storage check` and `storage stats`: read-only walks over a data
//! directory (safe beside a running aggregator: they never write).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use telltale_common::codec;

use super::block::{Block, Kind};
use super::{chunk, files};

/// Reads every record of the sled store in `dir` (if there is one) from a copy, so the check
/// stays read-only and works beside a running aggregator (which holds sled's lock).
fn check_sled(dir: &Path, what: &str, r: &mut CheckReport) {
    if !dir.is_dir() {
        return;
    }
    let copy = std::env::temp_dir().join(format!(
        "telltale-check-{}-{}",
        std::process::id(),
        telltale_common::model::now_ms()
    ));
    let result = copy_dir(dir, &copy)
        .map_err(|e| format!("cannot copy it: {e}"))
        .and_then(|_| {
            let opened = std::panic::catch_unwind(|| sled::Config::new().path(&copy).open());
            let db = match opened {
                Ok(Ok(db)) => db,
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("reading it panicked".into()),
            };
            for name in db.tree_names() {
                let tree = db.open_tree(&name).map_err(|e| e.to_string())?;
                for kv in tree.iter() {
                    kv.map_err(|e| e.to_string())?;
                }
            }
            Ok(())
        });
    let _ = fs::remove_dir_all(&copy);
    if let Err(e) = result {
        r.problems.push(format!("{what} in {}: {e}", dir.display()));
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            fs::copy(e.path(), target)?;
        }
    }
    Ok(())
}

/// What `storage check` found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Blocks read.
    pub blocks: u64,
    /// Chunks verified.
    pub chunks: u64,
    /// WAL segments read.
    pub segments: u64,
    /// WAL records verified.
    pub records: u64,
    /// Series records in `series.log`.
    pub series: u64,
    /// One line per problem.
    pub problems: Vec<String>,
}

/// Verifies every checksum in `dir`: block indexes and chunks (decoded too), WAL records,
/// `series.log`, `events.log` and the checkpoint; and reads every record of the alerting state.
pub fn check(dir: &Path) -> std::io::Result<CheckReport> {
    let mut r = CheckReport::default();
    for path in sorted_files(&dir.join("blocks"), "blk")? {
        r.blocks += 1;
        match Block::open(&path) {
            Ok((b, _)) => {
                let (ni, nf) = b.kind.shape();
                for e in b.entries() {
                    r.chunks += 1;
                    match b.read_chunk(e) {
                        Ok(bytes) => {
                            if let Err(err) = chunk::decode(&bytes, ni, nf) {
                                r.problems.push(format!(
                                    "{}: chunk of series {}: {err}",
                                    path.display(),
                                    e.series
                                ));
                            }
                        }
                        Err(err) => r.problems.push(err.to_string()),
                    }
                }
            }
            Err(err) => r.problems.push(err.to_string()),
        }
    }
    for path in sorted_files(&dir.join("log"), "seg")? {
        r.segments += 1;
        let data = fs::read(&path)?;
        let mut scan = files::Scanner::new(&data, u32::MAX);
        for item in scan.by_ref() {
            match item {
                files::Item::Frame { .. } => r.records += 1,
                files::Item::Damaged { at, len } => r.problems.push(format!(
                    "{} at {at}: {len} damaged bytes (start-up skips them)",
                    path.display()
                )),
            }
        }
        if scan.torn() > 0 {
            r.problems.push(format!(
                "{}: torn tail of {} bytes (start-up truncates it)",
                path.display(),
                scan.torn()
            ));
        }
    }
    for name in ["series.log", "events.log", "checkpoint"] {
        let f = files::read_frames(&dir.join(name))?;
        if name == "series.log" {
            r.series = f.payloads.len() as u64;
        }
        if f.corrupt > 0 {
            r.problems
                .push(format!("{name}: {} records fail their checksum", f.corrupt));
        }
        if f.torn > 0 {
            r.problems
                .push(format!("{name}: torn tail of {} bytes", f.torn));
        }
        for p in &f.payloads {
            if codec::decode_borrowed::<serde::de::IgnoredAny>(p).is_err() {
                r.problems.push(format!("{name}: a record does not decode"));
            }
        }
    }
    check_sled(&dir.join("alerting"), "alerting state", &mut r);
    Ok(r)
}

fn sorted_files(dir: &Path, ext: &str) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut v = Vec::new();
    match fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd {
                let p = e?.path();
                if p.extension().and_then(|x| x.to_str()) == Some(ext) {
                    v.push(p);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    v.sort();
    Ok(v)
}

/// Bytes of the files under `dir`, recursively (0 if it cannot be read).
pub fn du(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// `storage stats`: series, samples, bytes on disk and bytes per sample, per block kind and
/// level, plus what the WAL holds.
pub fn stats(dir: &Path) -> std::io::Result<String> {
    let mut per: std::collections::BTreeMap<(Kind, u8), (u64, u64, u64)> = Default::default();
    let mut raw_rows = 0u64;
    let mut raw_bytes = 0u64;
    for path in sorted_files(&dir.join("blocks"), "blk")? {
        if let Ok((b, _)) = Block::open(&path) {
            let e = per.entry((b.kind, b.level)).or_default();
            e.0 += 1;
            e.1 += b.rows;
            e.2 += b.bytes;
            if b.kind == Kind::Raw {
                raw_rows += b.rows;
                raw_bytes += b.bytes;
            }
        }
    }
    let series = files::read_frames(&dir.join("series.log"))?.payloads.len();
    let wal = du(&dir.join("log"));
    let total = du(dir);
    let mut out = String::new();
    let _ = writeln!(out, "data directory   {}", dir.display());
    let _ = writeln!(
        out,
        "series           {series} (in series.log; the WAL may hold newer ones)"
    );
    let _ = writeln!(out, "samples          {raw_rows} in blocks");
    let _ = writeln!(out, "bytes on disk    {total} (WAL {wal})");
    if raw_rows > 0 {
        let _ = writeln!(
            out,
            "bytes/sample     {:.3} raw blocks, {:.3} whole directory",
            raw_bytes as f64 / raw_rows as f64,
            total as f64 / raw_rows as f64
        );
    }
    let _ = writeln!(
        out,
        "\nkind  level  blocks        rows          bytes  bytes/row"
    );
    for ((k, l), (n, rows, bytes)) in per {
        let _ = writeln!(
            out,
            "{:<5} {:>5} {:>7} {:>11} {:>14} {:>10.3}",
            k.name(),
            l,
            n,
            rows,
            bytes,
            bytes as f64 / rows.max(1) as f64
        );
    }
    Ok(out)
}
