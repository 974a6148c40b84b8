//! The textfile collector, as node_exporter's: every `*.prom` file in a directory is read in the
//! text exposition format each interval, so cron jobs and scripts can publish metrics by
//! writing a file (write to a temporary name and rename, so the agent never reads half a file).
//!
//! Like node_exporter: `node_textfile_mtime_seconds{file}` per file read,
//! `node_textfile_scrape_error` is 1 when any file failed to read or parse (that file is
//! skipped, the others still count), and client-side timestamps are refused.

use std::path::Path;

use telltale_common::model::{Labels, Sample, SeriesSamples};

/// What one textfile may cost: its size, and the limits checked while it is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest file read (bytes); a larger one fails without being read.
    pub max_bytes: u64,
    /// Checked while parsing.
    pub parse: crate::sources::expfmt::Limits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 10 << 20,
            parse: crate::sources::expfmt::Limits::DEFAULT,
        }
    }
}

/// Reads a file of at most `max` bytes (0: any size); a larger one is an error, and never
/// more than `max` bytes are read, even from a file that grows while it is read.
fn read_limited(path: &Path, max: u64) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let cap = if max == 0 { u64::MAX } else { max };
    let mut buf = Vec::new();
    f.take(cap.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() as u64 > cap {
        return Err(format!(
            "body_size_limit exceeded: the file is larger than {cap} bytes"
        ));
    }
    String::from_utf8(buf).map_err(|e| format!("not UTF-8: {e}"))
}

/// Reads every `*.prom` file of `dir` into series stamped at `t_ms`. Returns the series and the
/// errors (one per failed file, naming it).
pub fn collect(dir: &Path, t_ms: i64, limits: &Limits) -> (Vec<SeriesSamples>, Vec<String>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut files: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "prom"))
            .collect(),
        Err(e) => {
            errors.push(format!("{}: {e}", dir.display()));
            Vec::new()
        }
    };
    files.sort();
    let one = |name: &str, pairs: &[(&str, &str)], v: f64| {
        let mut l = Labels::from_pairs(pairs.iter().copied());
        l.set("__name__", name);
        SeriesSamples {
            labels: l,
            samples: vec![Sample(t_ms, v)],
        }
    };
    for f in files {
        let fname = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let read = read_limited(&f, limits.max_bytes);
        let mtime = std::fs::metadata(&f)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64());
        let parsed = read.and_then(|text| {
            crate::sources::expfmt::parse_limited(
                &text,
                crate::sources::expfmt::Dialect::Text,
                &limits.parse,
            )
            .map_err(|e| e.to_string())
        });
        let lines = match parsed {
            Ok((lines, _)) if lines.iter().any(|l| l.t_ms.is_some()) => {
                Err("textfile contains unsupported client-side timestamps".to_string())
            }
            other => other.map(|(l, _)| l),
        };
        match lines {
            Ok(lines) => {
                for l in lines {
                    let mut labels = Labels::from_pairs(l.labels);
                    labels.set("__name__", &l.name);
                    out.push(SeriesSamples {
                        labels,
                        samples: vec![Sample(t_ms, l.value)],
                    });
                }
                if let Some(m) = mtime {
                    out.push(one(
                        "node_textfile_mtime_seconds",
                        &[("file", f.to_string_lossy().as_ref())],
                        m,
                    ));
                }
            }
            Err(e) => errors.push(format!("{fname}: {e}")),
        }
    }
    out.push(one(
        "node_textfile_scrape_error",
        &[],
        if errors.is_empty() { 0.0 } else { 1.0 },
    ));
    (out, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prom_files_skips_bad_ones_and_reports_the_error() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("backup.prom"),
            "# TYPE backup_last_success_timestamp_seconds gauge\nbackup_last_success_timestamp_seconds{db=\"main\"} 1.7e9\n",
        )
        .unwrap();
        std::fs::write(d.path().join("broken.prom"), "this is not { valid\n").unwrap();
        std::fs::write(d.path().join("stamped.prom"), "x 1 1700000000000\n").unwrap();
        std::fs::write(d.path().join("notes.txt"), "ignored\n").unwrap();
        let (series, errors) = collect(d.path(), 5, &Limits::default());
        let names: Vec<_> = series
            .iter()
            .map(|s| s.labels.metric_name().unwrap_or("").to_string())
            .collect();
        assert_eq!(
            names,
            vec![
                "backup_last_success_timestamp_seconds",
                "node_textfile_mtime_seconds",
                "node_textfile_scrape_error"
            ]
        );
        assert_eq!(series[0].samples, vec![Sample(5, 1.7e9)]);
        assert_eq!(series[2].samples[0].1, 1.0);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("broken.prom: line 1"), "{errors:?}");
        assert!(errors[1].contains("timestamps"), "{errors:?}");
        let (_, errors) = collect(&d.path().join("missing"), 5, &Limits::default());
        assert!(errors[0].contains("missing"), "{errors:?}");
    }

    /// A file beyond the limits is skipped with a message naming the limit; the others are
    /// read.
    #[test]
    fn files_beyond_the_limits_are_skipped_and_the_rest_read() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a_ok.prom"), "ok_metric 1\n").unwrap();
        let many: String = (0..50).map(|i| format!("m{{i=\"{i}\"}} 1\n")).collect();
        std::fs::write(d.path().join("b_many.prom"), many).unwrap();
        std::fs::write(d.path().join("c_big.prom"), "y 1\n".repeat(2000)).unwrap();
        let limits = Limits {
            max_bytes: 4000,
            parse: crate::sources::expfmt::Limits {
                sample_limit: 10,
                ..crate::sources::expfmt::Limits::DEFAULT
            },
        };
        let (series, errors) = collect(d.path(), 5, &limits);
        assert!(
            series
                .iter()
                .any(|s| s.labels.get("__name__") == Some("ok_metric"))
        );
        assert!(!series.iter().any(|s| s.labels.get("__name__") == Some("m")));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("b_many.prom") && errors[0].contains("sample_limit"));
        assert!(errors[1].starts_with("c_big.prom") && errors[1].contains("body_size_limit"));
    }
}
