//! The chunk codec: a series' samples (or rollup buckets) in one time range, compressed
//! column by column with pco.
//!
//! # Layout
//! ```text
//! u8      version: 3 = pco columns with grid timestamps, 2 = plain columns, 1 = pco columns
//! u8      number of i64 columns (I)
//! u8      number of f64 columns (F)
//! varint  rows (n)
//! version 3: I × { u8 mode; mode 0: pco part; mode 1 (grid): zigzag varint first value,
//!                  varint step, pco part of the grid slots k, pco part of the offsets e }
//!            F × { u8 mode; mode 0: pco part; mode 2 (exceptions): varint count, count ×
//!                  { varint row delta, 8 bytes of the value's bits }, pco part of the column
//!                  with each exception replaced by the value before it }
//!            where a pco part is { varint byte length, pco standalone bytes of n numbers }
//! version 2: I × { n zigzag varints: the first value, then deltas of deltas }
//!            F × { n × 8 bytes, the values' bits little-endian }
//! version 1: I + F × { pco part } (release 0.1; still read)
//! ```
//!
//! # Grid timestamps
//! Scraped timestamps sit on a grid — every 10 s — plus a few ms of jitter, with a missed
//! scrape now and then. Delta coding sees the jitter twice (the difference of two jitters)
//! and every gap as an outlier; so an integer column whose values are nearly all within a
//! quarter step of `first + k × step` (the step being the median difference) is written as
//! the slots `k` (a run of +1s, almost free) and the offsets `e = v - first - k × step` (the
//! jitter itself). On 25 ms of jitter and one missed scrape in 1,000 that is 0.67 bytes a
//! timestamp instead of 1.03 (`--example chunk_codecs`). Exact for any values: `k` and `e` are
//! computed in 128 bits and the grid is only used when both fit in 64.
//!
//! # Exceptions
//! A NaN, an infinity or a stale marker (written when a target goes away) is an outlier pco
//! spends bits on for the whole column; a float column with a few of them keeps them aside
//! (row and bits, exactly) and codes the column with each replaced by the value before it.
//! Version 2 is for level-0 blocks cut from the head: about 9 bytes a sample but 30 times
//! cheaper to write than pco on short chunks (pco costs some 15 µs a column whatever its
//! length), so cutting the head often, which keeps memory per series small, does not slow
//! ingest. Level-0 blocks are merged into pco blocks soon after (see `compact`).
//! Raw chunks have one i64 column (timestamps in ms) and one f64 column (values); rollup
//! chunks more (see `rollup`). The checksum of a chunk lives in the block index beside
//! its offset, so a chunk is verified before it is decoded.
//!
//! # Why pco, not Gorilla
//! Measured on node_exporter-like series (`cargo run --release -p telltale-aggregator
//! --example chunk_codecs`, figures in the README): pco finds the decimal resolution and the
//! step of a column (cpu seconds in 0.01 steps, memory in 4096-byte pages, 10 s timestamps)
//! and entropy-codes what is left, where Gorilla's XOR of float bits spends 20–40 bits on
//! every changed decimal value. Gorilla's advantage, appending one sample at a time, is not
//! needed: the head keeps raw samples and chunks are only written whole, when a block is cut.
//! f64 values round-trip bit for bit (NaN payloads included, so stale markers survive).

use pco::standalone::{simple_compress, simple_decompress};
use pco::{ChunkConfig, DeltaSpec};

/// The chunk format version of pco chunks (with grid timestamps).
pub const VERSION: u8 = 3;
/// The pco chunks of release 0.1 (no per-column mode).
pub const VERSION_PCO_V1: u8 = 1;
/// The chunk format version of plain chunks.
pub const VERSION_PLAIN: u8 = 2;

/// Chunk decoding errors.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ChunkError {
    /// The bytes end before the layout does.
    #[error("chunk truncated at byte {0}")]
    Truncated(usize),
    /// A version this build does not read.
    #[error("unknown chunk version {0}")]
    Version(u8),
    /// The chunk has another shape than the caller expects.
    #[error(
        "chunk has {ints} integer and {floats} float columns, expected {want_ints} and {want_floats}"
    )]
    Shape {
        /// Integer columns found.
        ints: u8,
        /// Float columns found.
        floats: u8,
        /// Integer columns expected.
        want_ints: u8,
        /// Float columns expected.
        want_floats: u8,
    },
    /// A column does not decode or has another length than the chunk says.
    #[error("column {column}: {message}")]
    Column {
        /// The column index.
        column: usize,
        /// What went wrong.
        message: String,
    },
}

pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(super) fn get_varint(b: &[u8], pos: &mut usize) -> Result<u64, ChunkError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos).ok_or(ChunkError::Truncated(*pos))?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err(ChunkError::Truncated(*pos))
}

/// pco's level 5. Level 2 (what release 0.1 used) writes the same bytes as the default level 8
/// on smooth node-like columns at half the cost, but a single outlier — a NaN, a counter
/// reset — takes one of its few bins and the column grows by half (0.67 → 1.29 bytes a value
/// on a request counter with one NaN in 1,000); level 5 keeps most of level 8's robustness
/// (0.77) at 1.3× level 2's time (`--example chunk_codecs`).
///
/// Delta coding is fixed at first order where the shape of the column is known — values
/// (counters and gauges move by steps) and grid slots — and none for grid offsets (jitter is
/// not correlated): pco's automatic choice writes the same bytes on those (measured on the
/// example's columns) but spends half its time trying lookback coding, an LZ-like search
/// for repeating patterns that time series do not have. Other integer columns keep it.
fn config() -> ChunkConfig {
    ChunkConfig::default().with_compression_level(5)
}

fn config_with(delta: DeltaSpec) -> ChunkConfig {
    config().with_delta_spec(delta)
}

fn pco_part<T: pco::data_types::Number>(out: &mut Vec<u8>, c: &[T], cfg: &ChunkConfig) {
    // pco only fails on invalid configs; ours is valid, and an empty column is zero bytes.
    let bytes = if c.is_empty() {
        Vec::new()
    } else {
        simple_compress(c, cfg).unwrap_or_default()
    };
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(&bytes);
}

/// The grid of an integer column (see the module notes): `(first, step, k, e)`, or `None`
/// when the column is not on one.
#[allow(clippy::type_complexity)]
fn grid(c: &[i64]) -> Option<(i64, i64, Vec<i64>, Vec<i64>)> {
    if c.len() < 3 {
        return None;
    }
    let mut deltas: Vec<i128> = c.windows(2).map(|w| w[1] as i128 - w[0] as i128).collect();
    let mid = deltas.len() / 2;
    let step = *deltas.select_nth_unstable(mid).1;
    let step = i64::try_from(step).ok().filter(|s| *s > 0)?;
    let first = c[0];
    let (mut k, mut e) = (Vec::with_capacity(c.len()), Vec::with_capacity(c.len()));
    let mut near = 0usize;
    for &v in c {
        let off = v as i128 - first as i128;
        let slot = (off + (step / 2) as i128).div_euclid(step as i128);
        let rest = off - slot * step as i128;
        k.push(i64::try_from(slot).ok()?);
        e.push(i64::try_from(rest).ok()?);
        if rest.unsigned_abs() <= (step / 4) as u128 {
            near += 1;
        }
    }
    (near * 10 >= c.len() * 9).then_some((first, step, k, e))
}

/// Encodes columns of equal length `n` (checked by the caller's construction).
pub fn encode(ints: &[&[i64]], floats: &[&[f64]]) -> Vec<u8> {
    let n = ints
        .first()
        .map(|c| c.len())
        .or(floats.first().map(|c| c.len()))
        .unwrap_or(0);
    debug_assert!(ints.iter().all(|c| c.len() == n) && floats.iter().all(|c| c.len() == n));
    let mut out = vec![VERSION, ints.len() as u8, floats.len() as u8];
    put_varint(&mut out, n as u64);
    let cfg = config();
    let first_order = config_with(DeltaSpec::TryConsecutive(1));
    for c in ints {
        match grid(c) {
            Some((first, step, k, e)) => {
                out.push(1);
                put_varint(&mut out, zigzag(first));
                put_varint(&mut out, step as u64);
                pco_part(&mut out, &k, &first_order);
                pco_part(&mut out, &e, &config_with(DeltaSpec::NoOp));
            }
            None => {
                out.push(0);
                pco_part(&mut out, c, &cfg);
            }
        }
    }
    for c in floats {
        let odd = c.iter().filter(|v| !v.is_finite()).count();
        if odd == 0 || odd * 8 > c.len() {
            out.push(0);
            pco_part(&mut out, c, &first_order);
            continue;
        }
        out.push(2);
        put_varint(&mut out, odd as u64);
        let mut patched = Vec::with_capacity(c.len());
        let (mut last_row, mut fill) = (0usize, c.iter().copied().find(|v| v.is_finite()));
        for (row, &v) in c.iter().enumerate() {
            if v.is_finite() {
                fill = Some(v);
                patched.push(v);
            } else {
                put_varint(&mut out, (row - last_row) as u64);
                out.extend_from_slice(&v.to_bits().to_le_bytes());
                last_row = row;
                patched.push(fill.unwrap_or(0.0));
            }
        }
        pco_part(&mut out, &patched, &first_order);
    }
    out
}

pub(super) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(super) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Encodes columns of equal length in the plain format (fast; for level-0 blocks).
pub fn encode_plain(ints: &[&[i64]], floats: &[&[f64]]) -> Vec<u8> {
    let n = ints
        .first()
        .map(|c| c.len())
        .or(floats.first().map(|c| c.len()))
        .unwrap_or(0);
    let mut out = Vec::with_capacity(8 + n * (2 * ints.len() + 8 * floats.len()));
    out.extend_from_slice(&[VERSION_PLAIN, ints.len() as u8, floats.len() as u8]);
    put_varint(&mut out, n as u64);
    for c in ints {
        let (mut prev, mut prev_d) = (0i64, 0i64);
        for (i, &v) in c.iter().enumerate() {
            let d = v.wrapping_sub(prev);
            put_varint(
                &mut out,
                zigzag(if i == 0 { v } else { d.wrapping_sub(prev_d) }),
            );
            prev_d = if i == 0 { 0 } else { d };
            prev = v;
        }
    }
    for c in floats {
        for v in c.iter() {
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
    }
    out
}

fn decode_plain(b: &[u8], mut pos: usize, n: usize, ni: u8, nf: u8) -> Result<Columns, ChunkError> {
    let mut cols = Columns::default();
    for column in 0..usize::from(ni) {
        // Each row takes at least a byte: a corrupt count cannot make us allocate much.
        if n > b.len() {
            return Err(ChunkError::Column {
                column,
                message: format!("{n} rows in {} bytes", b.len()),
            });
        }
        let mut v = Vec::with_capacity(n);
        let (mut prev, mut prev_d) = (0i64, 0i64);
        for i in 0..n {
            let x = unzigzag(get_varint(b, &mut pos)?);
            let t = if i == 0 {
                x
            } else {
                let d = prev_d.wrapping_add(x);
                prev_d = d;
                prev.wrapping_add(d)
            };
            prev = t;
            v.push(t);
        }
        cols.ints.push(v);
    }
    for column in usize::from(ni)..usize::from(ni) + usize::from(nf) {
        let need = n.checked_mul(8).ok_or(ChunkError::Truncated(pos))?;
        let bytes = b
            .get(pos..pos.saturating_add(need))
            .ok_or(ChunkError::Column {
                column,
                message: format!(
                    "{n} values need {need} bytes, {} left",
                    b.len().saturating_sub(pos)
                ),
            })?;
        pos += need;
        cols.floats.push(
            bytes
                .chunks_exact(8)
                .map(|c| f64::from_bits(u64::from_le_bytes(c.try_into().unwrap_or_default())))
                .collect(),
        );
    }
    Ok(cols)
}

/// Decoded columns.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Columns {
    /// The i64 columns.
    pub ints: Vec<Vec<i64>>,
    /// The f64 columns.
    pub floats: Vec<Vec<f64>>,
}

/// Decodes a chunk that must have `want_ints` i64 and `want_floats` f64 columns.
pub fn decode(b: &[u8], want_ints: u8, want_floats: u8) -> Result<Columns, ChunkError> {
    let hdr = b.get(..3).ok_or(ChunkError::Truncated(b.len()))?;
    if ![VERSION, VERSION_PLAIN, VERSION_PCO_V1].contains(&hdr[0]) {
        return Err(ChunkError::Version(hdr[0]));
    }
    if hdr[1] != want_ints || hdr[2] != want_floats {
        return Err(ChunkError::Shape {
            ints: hdr[1],
            floats: hdr[2],
            want_ints,
            want_floats,
        });
    }
    let mut pos = 3;
    let n = get_varint(b, &mut pos)? as usize;
    if hdr[0] == VERSION_PLAIN {
        return decode_plain(b, pos, n, want_ints, want_floats);
    }
    let mut cols = Columns::default();
    for column in 0..usize::from(want_ints) {
        let mode = if hdr[0] == VERSION {
            let m = *b.get(pos).ok_or(ChunkError::Truncated(pos))?;
            pos += 1;
            m
        } else {
            0
        };
        let v = match mode {
            0 => pco_column::<i64>(b, &mut pos, n, column)?,
            1 => {
                let first = unzigzag(get_varint(b, &mut pos)?);
                let step = get_varint(b, &mut pos)? as i64;
                let mut k = pco_column::<i64>(b, &mut pos, n, column)?;
                let e = pco_column::<i64>(b, &mut pos, n, column)?;
                // In place: a range query decodes every chunk it reads, and a fresh vector
                // per chunk is a fresh page fault per 4 KiB of it.
                for (k, &e) in k.iter_mut().zip(&e) {
                    *k = first.wrapping_add(k.wrapping_mul(step)).wrapping_add(e);
                }
                k
            }
            other => {
                return Err(ChunkError::Column {
                    column,
                    message: format!("unknown column mode {other}"),
                });
            }
        };
        cols.ints.push(v);
    }
    for column in usize::from(want_ints)..usize::from(want_ints) + usize::from(want_floats) {
        let mode = if hdr[0] == VERSION {
            let m = *b.get(pos).ok_or(ChunkError::Truncated(pos))?;
            pos += 1;
            m
        } else {
            0
        };
        let err = |message: String| ChunkError::Column { column, message };
        let v = match mode {
            0 => pco_column::<f64>(b, &mut pos, n, column)?,
            2 => {
                let count = get_varint(b, &mut pos)? as usize;
                // Each exception takes at least 9 bytes.
                if count > b.len() / 9 {
                    return Err(err(format!("{count} exceptions in {} bytes", b.len())));
                }
                let mut odd = Vec::with_capacity(count);
                let mut row = 0usize;
                for _ in 0..count {
                    row = row
                        .checked_add(get_varint(b, &mut pos)? as usize)
                        .ok_or_else(|| err("exception row overflows".into()))?;
                    let bits = b.get(pos..pos + 8).ok_or(ChunkError::Truncated(b.len()))?;
                    pos += 8;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(bits);
                    odd.push((row, f64::from_bits(u64::from_le_bytes(a))));
                }
                let mut v = pco_column::<f64>(b, &mut pos, n, column)?;
                for (row, x) in odd {
                    *v.get_mut(row)
                        .ok_or_else(|| err(format!("exception at row {row} of {n}")))? = x;
                }
                v
            }
            other => return Err(err(format!("unknown column mode {other}"))),
        };
        cols.floats.push(v);
    }
    Ok(cols)
}

/// Reads a pco part of `n` numbers at `pos`.
fn pco_column<T: pco::data_types::Number>(
    b: &[u8],
    pos: &mut usize,
    n: usize,
    column: usize,
) -> Result<Vec<T>, ChunkError> {
    let len = get_varint(b, pos)? as usize;
    let end = pos.checked_add(len).ok_or(ChunkError::Truncated(*pos))?;
    let bytes = b.get(*pos..end).ok_or(ChunkError::Truncated(b.len()))?;
    *pos = end;
    let err = |message: String| ChunkError::Column { column, message };
    let v: Vec<T> = if len == 0 {
        Vec::new()
    } else {
        simple_decompress(bytes).map_err(|e| err(e.to_string()))?
    };
    if v.len() != n {
        return Err(err(format!("{} rows, expected {n}", v.len())));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use telltale_common::model::STALE_NAN_BITS;

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(f64::from_bits(STALE_NAN_BITS)),
            Just(f64::MAX),
            Just(f64::MIN_POSITIVE),
            Just(-0.0),
            Just(5e-324),
            (0i64..1_000_000).prop_map(|i| i as f64 / 100.0),
        ]
    }

    fn timestamps() -> impl Strategy<Value = Vec<i64>> {
        prop_oneof![
            // Regular, equal, decreasing and arbitrary timestamps.
            (any::<i32>(), 0usize..300).prop_map(|(s, n)| (0..n as i64)
                .map(|i| s as i64 * 1000 + i * 10_000)
                .collect()),
            proptest::collection::vec(any::<i64>(), 0..200),
            (any::<i64>(), 0usize..50).prop_map(|(t, n)| vec![t; n]),
            // On a grid with jitter and missed slots, anywhere in the range (saturating at
            // the ends).
            (
                any::<i64>(),
                1i64..1_000_000,
                proptest::collection::vec((0u8..4, -30i64..30), 0..300)
            )
                .prop_map(|(base, step, rows)| {
                    let mut slot = 0i64;
                    rows.iter()
                        .map(|&(skip, j)| {
                            slot += 1 + i64::from(skip / 3);
                            base.saturating_add(slot.saturating_mul(step))
                                .saturating_add(j)
                        })
                        .collect()
                }),
        ]
    }

    proptest! {
        #[test]
        fn raw_chunks_round_trip_bit_for_bit(ts in timestamps(), seed in proptest::collection::vec(value(), 1..8)) {
            let vs: Vec<f64> = (0..ts.len()).map(|i| seed[i % seed.len()]).collect();
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            for b in [encode(&[&ts], &[&vs]), encode_plain(&[&ts], &[&vs])] {
                let c = decode(&b, 1, 1).unwrap();
                prop_assert_eq!(&c.ints[0], &ts);
                prop_assert_eq!(bits(&c.floats[0]), bits(&vs));
            }
        }

        #[test]
        fn any_bytes_decode_to_an_error_or_columns_never_a_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&b, 1, 1);
            for v in [VERSION, VERSION_PLAIN, VERSION_PCO_V1] {
                let mut with_header = vec![v, 1, 1];
                with_header.extend_from_slice(&b);
                let _ = decode(&with_header, 1, 1);
            }
        }

        #[test]
        fn a_flipped_byte_never_panics(flip in 0usize..10_000, bit in 0u8..8) {
            let ts: Vec<i64> = (0..100).map(|i| i * 10_000).collect();
            let vs: Vec<f64> = (0..100).map(|i| i as f64 * 1.5).collect();
            for mut b in [encode(&[&ts], &[&vs]), encode_plain(&[&ts], &[&vs])] {
                let i = flip % b.len();
                b[i] ^= 1 << bit;
                let _ = decode(&b, 1, 1);
            }
        }
    }

    #[test]
    fn jittered_timestamps_with_gaps_use_the_grid_and_cost_less() {
        let mut x = 7u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % 1000
        };
        let mut ts: Vec<i64> = Vec::new();
        for i in 0..2160 {
            if rnd() != 0 {
                ts.push(1_764_000_000_000 + i * 10_000 + (rnd() % 25) as i64);
            }
        }
        let vs = vec![1.0; ts.len()];
        let b = encode(&[&ts], &[&vs]);
        assert_eq!(b[0], VERSION);
        let at = 3 + {
            let mut p = 3;
            get_varint(&b, &mut p).unwrap();
            p - 3
        };
        assert_eq!(b[at], 1, "grid mode");
        assert_eq!(decode(&b, 1, 1).unwrap().ints[0], ts);
        let delta = simple_compress(&ts, &config()).unwrap().len();
        assert!(
            b.len() < delta,
            "grid {} bytes, delta coding {delta}",
            b.len()
        );
    }

    #[test]
    fn a_few_nans_and_stale_markers_are_kept_aside_exactly() {
        let stale = f64::from_bits(STALE_NAN_BITS);
        let ts: Vec<i64> = (0..2000).map(|i| i * 10_000).collect();
        let clean: Vec<f64> = (0..2000).map(|i| (i * 7 % 13) as f64 + i as f64).collect();
        let mut vs = clean.clone();
        for (i, x) in [
            (0, f64::NAN),
            (500, stale),
            (501, f64::INFINITY),
            (1999, stale),
        ] {
            vs[i] = x;
        }
        let b = encode(&[&ts], &[&vs]);
        let back = decode(&b, 1, 1).unwrap().floats.remove(0);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&vs));
        // Four exceptions cost their bytes, not a wider column.
        let plain = encode(&[&ts], &[&clean]).len();
        assert!(b.len() <= plain + 4 * 12, "{} vs {plain}", b.len());
    }

    #[test]
    fn shape_and_version_are_checked() {
        let b = encode(&[&[1, 2]], &[&[1.0, 2.0]]);
        assert!(matches!(decode(&b, 1, 5), Err(ChunkError::Shape { .. })));
        let mut v = b.clone();
        v[0] = 9;
        assert_eq!(decode(&v, 1, 1), Err(ChunkError::Version(9)));
        assert!(matches!(
            decode(&b[..b.len() - 1], 1, 1),
            Err(ChunkError::Truncated(_))
        ));
    }
}
