//! The write-ahead log: segments of framed records, written with group commit.
//!
//! # On disk
//! `DATA_DIR/log/NNNNNNNNNNNNNNNNNNNN.seg`, segments of at most 128 MiB, each a sequence of
//! records framed exactly like wire frames (see `telltale_common::codec`: length, version,
//! CRC-32, payload). A record's payload is a MessagePack map
//! `{agent, epoch, sequence, wire, series}`: `wire` holds an agent's batch exactly as it arrived
//! (a `ClientMessage::Batch` payload), `series` the samples the aggregator produced itself.
//!
//! # Durability
//! One writer thread does group commit: it takes every queued record, writes them, calls
//! `fdatasync`, and only then applies them to the head and answers the callers — so an
//! acknowledged batch survives SIGKILL and power loss. A failed write is cut off the file
//! again and reported to every caller of the group; none of them is acknowledged.
//!
//! # Recovery
//! Start-up replays the segments the last checkpoint does not cover. A record with a bad
//! header, checksum or payload is skipped and counted, and reading resumes at the next intact
//! record (a damaged length never hides what follows it); a torn tail (a record cut short by
//! a crash, nothing intact after it) is truncated and logged. Start-up never stops on
//! corruption.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use telltale_common::codec;
use telltale_common::model::{Sample, SeriesSamples};

use telltale_common::wire::{ClientMessageRef, Event};

use crate::storage::stamp_agent_labels;

const SEGMENT_BYTES: u64 = 128 * 1024 * 1024;
const MAX_RECORD: u32 = 256 * 1024 * 1024;

/// The payload of one log record, borrowing from the bytes it was decoded from (or is
/// encoded from).
#[derive(Debug, Serialize, Deserialize)]
pub struct Record<'a> {
    #[serde(borrow)]
    pub agent: Option<&'a str>,
    #[serde(default)]
    pub epoch: u64,
    pub sequence: Option<u64>,
    #[serde(borrow, default)]
    pub wire: Option<&'a serde_bytes::Bytes>,
    /// Borrowed when writing (no copy of the caller's series), owned when replaying.
    #[serde(default)]
    pub series: std::borrow::Cow<'a, [SeriesSamples]>,
}

/// A series to store: sorted label pairs borrowed from a payload or a record, and samples.
pub type Prepared<'a> = (Vec<(&'a str, &'a str)>, Vec<Sample>);

/// Decodes what a record or an append carries into label pairs and samples, stamping agent
/// series with their origin. Series without a metric name are dropped.
pub fn prepare<'a>(
    agent: Option<&'a str>,
    wire: Option<&'a [u8]>,
    series: &'a [SeriesSamples],
) -> Result<(Vec<Prepared<'a>>, Vec<Event>), String> {
    let mut out: Vec<Prepared<'a>> = Vec::new();
    let mut events = Vec::new();
    if let Some(w) = wire {
        match codec::decode_borrowed::<ClientMessageRef>(w).map_err(|e| e.to_string())? {
            ClientMessageRef::Batch(b) => {
                out.extend(b.series.into_iter().map(|s| (s.labels, s.samples)));
                events = b.events;
            }
            ClientMessageRef::Hello(_) => return Err("a hello where a batch belongs".into()),
            ClientMessageRef::CommandResult(_) => {
                return Err("a command result where a batch belongs".into());
            }
        }
    }
    out.extend(
        series
            .iter()
            .map(|s| (s.labels.iter().collect::<Vec<_>>(), s.samples.clone())),
    );
    out.retain_mut(|(pairs, _)| match agent {
        Some(a) => stamp_agent_labels(pairs, a),
        None => {
            pairs.sort_by(|a, b| a.0.cmp(b.0));
            true
        }
    });
    // Events speak for the agent that sent them, like its series.
    for e in &mut events {
        e.labels.retain(|(k, _)| k != "instance");
        if let Some(a) = agent {
            e.labels.push(("instance".into(), a.into()));
        }
        e.labels.sort();
    }
    Ok((out, events))
}

/// Counters of what replay found.
#[derive(Debug, Default, Clone)]
pub struct RecoveryReport {
    /// Records replayed.
    pub records: u64,
    /// Records skipped as corrupt.
    pub corrupt: u64,
    /// Bytes cut off torn segment tails.
    pub truncated_bytes: u64,
    /// Segments read.
    pub segments: u64,
    /// Blocks loaded.
    pub blocks: u64,
    /// Blocks moved to `quarantine/` because they do not open.
    pub quarantined: u64,
}

pub fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.seg"))
}

pub fn list_segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut segs = Vec::new();
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        let n = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(n) = n {
            segs.push((n, p));
        }
    }
    segs.sort();
    Ok(segs)
}

/// Reads a segment, handing every intact record to `on_record` (an `Err` from it counts the
/// record as corrupt). Damage in the middle is skipped by resynchronising on the next intact
/// record (see [`super::files::Scanner`]); only a torn tail — bytes after the last intact
/// record with none following — is truncated.
pub fn replay_segment(
    path: &Path,
    report: &mut RecoveryReport,
    mut on_record: impl FnMut(Record<'_>) -> Result<(), String>,
) -> std::io::Result<()> {
    let data = fs::read(path)?;
    report.segments += 1;
    let mut scan = super::files::Scanner::new(&data, MAX_RECORD);
    for item in scan.by_ref() {
        match item {
            super::files::Item::Frame { at, payload } => {
                match codec::decode_borrowed::<Record>(payload)
                    .map_err(|e| e.to_string())
                    .and_then(&mut on_record)
                {
                    Ok(()) => report.records += 1,
                    Err(e) => {
                        tracing::error!(segment = %path.display(), offset = at, error = %e, "undecodable record skipped");
                        report.corrupt += 1;
                    }
                }
            }
            super::files::Item::Damaged { at, len } => {
                tracing::error!(segment = %path.display(), offset = at, bytes = len,
                    "damaged record skipped; reading resumes at the next intact record");
                report.corrupt += 1;
            }
        }
    }
    let torn = scan.torn();
    if torn > 0 {
        tracing::warn!(segment = %path.display(), bytes = torn, "torn tail truncated");
        report.truncated_bytes += torn as u64;
        truncate(path, (data.len() - torn) as u64)?;
    }
    Ok(())
}

fn truncate(path: &Path, len: u64) -> std::io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(len)?;
    f.sync_all()
}

pub struct Writer {
    dir: PathBuf,
    file: File,
    segment: u64,
    len: u64,
}

impl Writer {
    pub fn create(dir: PathBuf, segment: u64) -> std::io::Result<Writer> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(segment_path(&dir, segment))?;
        // Make the new segment's directory entry durable too.
        File::open(&dir)?.sync_all()?;
        Ok(Writer {
            dir,
            file,
            segment,
            len: 0,
        })
    }

    /// The segment being written.
    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// Continues in a new segment.
    pub fn roll(&mut self) -> std::io::Result<()> {
        let next = Writer::create(self.dir.clone(), self.segment + 1)?;
        *self = next;
        Ok(())
    }

    pub fn write_group(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.len > SEGMENT_BYTES {
            self.roll()?;
        }
        let res = self.file.write_all(buf).and_then(|_| self.file.sync_data());
        match res {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut the partial write off so later records stay framed; if even that
                // fails, continue in a new segment.
                let cut = self
                    .file
                    .set_len(self.len)
                    .and_then(|_| self.file.seek(SeekFrom::End(0)).map(|_| ()));
                if cut.is_err() {
                    let _ = self.roll();
                }
                Err(e)
            }
        }
    }
}
