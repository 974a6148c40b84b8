//! Kept reports: one JSON file per report under `DATA_DIR/reports`, written whole (a
//! temporary file, fsync, rename), the newest [`KEEP`] kept.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::Report;

/// Reports kept; older ones are deleted.
pub const KEEP: usize = 500;

/// The kept reports.
pub struct ReportStore {
    dir: PathBuf,
    /// The last id given (ids grow; a report's file is named by its id).
    last: Mutex<u64>,
}

fn id_of(p: &Path) -> Option<u64> {
    p.file_name()?.to_str()?.strip_suffix(".json")?.parse().ok()
}

impl ReportStore {
    /// Opens (creates) the directory.
    pub fn open(dir: &Path) -> std::io::Result<ReportStore> {
        std::fs::create_dir_all(dir)?;
        let last = Self::ids_in(dir)?.last().copied().unwrap_or(0);
        Ok(ReportStore {
            dir: dir.to_path_buf(),
            last: Mutex::new(last),
        })
    }

    fn ids_in(dir: &Path) -> std::io::Result<Vec<u64>> {
        let mut ids: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| id_of(&e.path()))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Keeps `r` under a new id (returned in the report), durably.
    pub fn keep(&self, mut r: Report) -> std::io::Result<Report> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        *last += 1;
        r.id = *last;
        let body = serde_json::to_vec(&r).map_err(std::io::Error::other)?;
        let tmp = self.dir.join(format!(".{}.tmp", r.id));
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join(format!("{:020}.json", r.id)))?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        let ids = Self::ids_in(&self.dir)?;
        if ids.len() > KEEP {
            for id in &ids[..ids.len() - KEEP] {
                let _ = std::fs::remove_file(self.dir.join(format!("{id:020}.json")));
            }
        }
        Ok(r)
    }

    /// A kept report.
    pub fn get(&self, id: u64) -> Option<Report> {
        let body = std::fs::read(self.dir.join(format!("{id:020}.json"))).ok()?;
        match serde_json::from_slice(&body) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(id, error = %e, "a kept report cannot be read");
                None
            }
        }
    }

    /// How many reports are kept (names only; nothing is read).
    pub fn count(&self) -> usize {
        Self::ids_in(&self.dir).map_or(0, |ids| ids.len())
    }

    /// Every kept report, newest first.
    pub fn list(&self) -> Vec<Report> {
        let mut ids = Self::ids_in(&self.dir).unwrap_or_default();
        ids.reverse();
        ids.into_iter().filter_map(|id| self.get(id)).collect()
    }
}
