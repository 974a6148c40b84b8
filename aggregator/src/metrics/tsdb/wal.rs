//! The write-ahead log: segments of framed records, written with group commit.
//!
//! # On disk
//! `DATA_DIR/log/NNNNNNNNNNNNNNNNNNNN.seg`, segments of at most 128 MiB, each a sequence of
//! records framed exactly like wire frames (see `telltale_common::codec`: length, version,
//! CRC-32, payload). A record's payload is a MessagePack map
//! `{agent, epoch, sequence, defs, points, events}`: `defs` defines series ids (id and labels,
//! ascending; the writer puts the definitions of every series created since its last group in
//! front of that group, so an id is defined before any record names it), `points` holds the
//! samples by series id (see [`encode_points`]: about 11 bytes a sample, no labels), `events`
//! an agent's host events, and `agent/epoch/sequence` the batch's origin for de-duplication.
//! A series' labels are written once, not with every sample: a request of 10,000 samples
//! costs ~110 KB of log instead of ~1.5 MB.
//!
//! Records written before `points` existed (release 0.1) carry `wire` (an agent's batch as
//! it arrived) or `series` (samples with their labels) instead; replay still reads them.
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

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};
use telltale_common::codec;
use telltale_common::model::{Sample, SeriesSamples};

use telltale_common::wire::{ClientMessageRef, Event};

use crate::metrics::storage::stamp_agent_labels;

use super::chunk::{put_varint, unzigzag, zigzag};
use crate::durable::frames::{Item, Scanner};
use crate::durable::segments::truncate;
pub use crate::durable::segments::{Writer, list_segments};

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
    #[serde(default, skip_serializing_if = "<[SeriesSamples]>::is_empty")]
    pub series: std::borrow::Cow<'a, [SeriesSamples]>,
    /// Series ids defined here, ascending.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub defs: Vec<super::SeriesRecord>,
    /// Samples by series id ([`encode_points`]).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub points: Option<&'a serde_bytes::Bytes>,
    /// Host events (agent records).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
}

impl Record<'_> {
    /// A record of samples by id (and an agent's origin and events).
    pub fn points<'a>(
        origin: Option<&'a crate::metrics::storage::Origin>,
        points: &'a [u8],
        events: Vec<Event>,
    ) -> Record<'a> {
        Record {
            agent: origin.map(|o| o.agent.as_str()),
            epoch: origin.map(|o| o.epoch).unwrap_or(0),
            sequence: origin.map(|o| o.sequence),
            wire: None,
            series: std::borrow::Cow::Borrowed(&[]),
            defs: Vec::new(),
            points: Some(serde_bytes::Bytes::new(points)),
            events,
        }
    }
}

impl Record<'static> {
    /// A record defining series ids.
    pub fn defs(defs: Vec<super::SeriesRecord>) -> Record<'static> {
        Record {
            agent: None,
            epoch: 0,
            sequence: None,
            wire: None,
            series: std::borrow::Cow::Borrowed(&[]),
            defs,
            points: None,
            events: Vec::new(),
        }
    }
}

/// A record, or a batch it carries, that does not decode: counted as corrupt at replay (the
/// record is skipped), refused at append (nothing is stored).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The MessagePack does not decode.
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
    /// The points record is damaged.
    #[error("points record: {0}")]
    Points(&'static str),
    /// The points record claims more samples than its bytes can hold.
    #[error("points record claims {count} samples in {bytes} bytes")]
    Count {
        /// Samples claimed.
        count: u64,
        /// Bytes present.
        bytes: usize,
    },
    /// A message other than a batch where a batch belongs.
    #[error("a {0} where a batch belongs")]
    NotABatch(&'static str),
}

/// Encodes samples by series id: a varint count, then per sample the zigzag varint
/// differences of its id and timestamp from the previous sample's, and the value's 8 bytes
/// (little-endian IEEE 754, NaN payloads such as stale markers kept).
pub fn encode_points(points: &[(u32, Sample)], out: &mut Vec<u8>) {
    out.reserve(points.len() * 12 + 10);
    put_varint(out, points.len() as u64);
    let (mut id, mut t) = (0i64, 0i64);
    for &(i, Sample(ts, v)) in points {
        put_varint(out, zigzag(i64::from(i) - id));
        put_varint(out, zigzag(ts.wrapping_sub(t)));
        out.extend_from_slice(&v.to_bits().to_le_bytes());
        (id, t) = (i64::from(i), ts);
    }
}

/// Decodes [`encode_points`]; damage is an error, never a panic.
pub fn decode_points(b: &[u8]) -> Result<Vec<(u32, Sample)>, RecordError> {
    let mut pos = 0usize;
    let n = get_varint(b, &mut pos)?;
    // Each sample takes at least 10 bytes: a count beyond that is damage, not an allocation.
    if n > (b.len() / 10) as u64 {
        return Err(RecordError::Count {
            count: n,
            bytes: b.len(),
        });
    }
    let mut out = Vec::with_capacity(n as usize);
    let (mut id, mut t) = (0i64, 0i64);
    for _ in 0..n {
        id = id.wrapping_add(unzigzag(get_varint(b, &mut pos)?));
        t = t.wrapping_add(unzigzag(get_varint(b, &mut pos)?));
        let v = b
            .get(pos..pos + 8)
            .ok_or(RecordError::Points("cut short"))?;
        pos += 8;
        let mut a = [0u8; 8];
        a.copy_from_slice(v);
        let id = u32::try_from(id).map_err(|_| RecordError::Points("series id out of range"))?;
        out.push((id, Sample(t, f64::from_bits(u64::from_le_bytes(a)))));
    }
    if pos != b.len() {
        return Err(RecordError::Points("bytes after the points"));
    }
    Ok(out)
}

/// The chunk codec's varint.
fn get_varint(b: &[u8], pos: &mut usize) -> Result<u64, RecordError> {
    super::chunk::get_varint(b, pos).map_err(|_| RecordError::Points("cut short"))
}

/// A series to store: sorted label pairs borrowed from a payload or a record, and samples.
pub type Prepared<'a> = (Vec<(&'a str, &'a str)>, Vec<Sample>);

/// Decodes what a record or an append carries into label pairs and samples, stamping agent
/// series with their origin. Series without a metric name are dropped.
pub fn prepare<'a>(
    agent: Option<&'a str>,
    wire: Option<&'a [u8]>,
    series: &'a [SeriesSamples],
) -> Result<(Vec<Prepared<'a>>, Vec<Event>), RecordError> {
    let mut out: Vec<Prepared<'a>> = Vec::new();
    let mut events = Vec::new();
    if let Some(w) = wire {
        match codec::decode_borrowed::<ClientMessageRef>(w)? {
            ClientMessageRef::Batch(b) => {
                out.extend(b.series.into_iter().map(|s| (s.labels, s.samples)));
                events = b.events;
            }
            ClientMessageRef::Hello(_) => return Err(RecordError::NotABatch("hello")),
            ClientMessageRef::CommandResult(_) => {
                return Err(RecordError::NotABatch("command result"));
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
    stamp_events(&mut events, agent);
    Ok((out, events))
}

/// Events speak for the agent that sent them, like its series: `instance` is its name.
pub fn stamp_events(events: &mut [Event], agent: Option<&str>) {
    for e in events {
        e.labels.retain(|(k, _)| k != "instance");
        if let Some(a) = agent {
            e.labels.push(("instance".into(), a.into()));
        }
        e.labels.sort();
    }
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

/// Reads a segment, handing every intact record to `on_record` (an `Err` from it counts the
/// record as corrupt). Damage in the middle is skipped by resynchronising on the next intact
/// record (see [`Scanner`]); only a torn tail — bytes after the last intact
/// record with none following — is truncated.
pub fn replay_segment(
    path: &Path,
    report: &mut RecoveryReport,
    mut on_record: impl FnMut(Record<'_>) -> Result<(), RecordError>,
) -> std::io::Result<()> {
    let data = fs::read(path)?;
    report.segments += 1;
    let mut scan = Scanner::new(&data, MAX_RECORD);
    for item in scan.by_ref() {
        match item {
            Item::Frame { at, payload } => {
                match codec::decode_borrowed::<Record>(payload)
                    .map_err(RecordError::from)
                    .and_then(&mut on_record)
                {
                    Ok(()) => report.records += 1,
                    Err(e) => {
                        tracing::error!(segment = %path.display(), offset = at, error = %e, "undecodable record skipped");
                        report.corrupt += 1;
                    }
                }
            }
            Item::Damaged { at, len } => {
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

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Points come back bit for bit (NaN payloads too); any prefix cut short or any
        /// bytes at all are an error or an answer, never a panic.
        #[test]
        fn points_round_trip(
            points in proptest::collection::vec(
                (proptest::num::u32::ANY, proptest::num::i64::ANY, proptest::num::u64::ANY),
                0..50,
            ),
            cut in 1usize..20,
            junk in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let points: Vec<(u32, Sample)> = points
                .into_iter()
                .map(|(id, t, v)| (id, Sample(t, f64::from_bits(v))))
                .collect();
            let mut b = Vec::new();
            encode_points(&points, &mut b);
            let back = decode_points(&b).unwrap();
            proptest::prop_assert_eq!(
                back.iter().map(|(i, s)| (*i, s.0, s.1.to_bits())).collect::<Vec<_>>(),
                points.iter().map(|(i, s)| (*i, s.0, s.1.to_bits())).collect::<Vec<_>>()
            );
            if !points.is_empty() {
                proptest::prop_assert!(decode_points(&b[..b.len().saturating_sub(cut)]).is_err());
            }
            let _ = decode_points(&junk);
        }
    }
}
