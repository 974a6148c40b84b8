//! The chunk codec: a series' samples (or rollup buckets) in one time range, compressed
//! column by column with pco.
//!
//! # Layout
//! ```text
//! u8      version: 1 = pco columns, 2 = plain columns
//! u8      number of i64 columns (I)
//! u8      number of f64 columns (F)
//! varint  rows (n)
//! version 1: I + F × { varint byte length, pco standalone bytes of n numbers }
//! version 2: I × { n zigzag varints: the first value, then deltas of deltas }
//!            F × { n × 8 bytes, the values' bits little-endian }
//! ```
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

use pco::ChunkConfig;
use pco::standalone::{simple_compress, simple_decompress};

/// The chunk format version of pco chunks.
pub const VERSION: u8 = 1;
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

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &[u8], pos: &mut usize) -> Result<u64, ChunkError> {
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

/// pco's level 2: on node-like columns of 120 to 8640 numbers it writes the same bytes as
/// the default level 8 and encodes about twice as fast (measured with the chunk_codecs
/// example's data).
fn config() -> ChunkConfig {
    ChunkConfig::default().with_compression_level(2)
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
    // pco only fails on invalid configs; the default config is valid, and an empty column
    // is written as zero bytes.
    let mut push = |bytes: Vec<u8>| {
        put_varint(&mut out, bytes.len() as u64);
        out.extend_from_slice(&bytes);
    };
    for c in ints {
        push(if c.is_empty() {
            Vec::new()
        } else {
            simple_compress(c, &cfg).unwrap_or_default()
        });
    }
    for c in floats {
        push(if c.is_empty() {
            Vec::new()
        } else {
            simple_compress(c, &cfg).unwrap_or_default()
        });
    }
    out
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
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
    if hdr[0] != VERSION && hdr[0] != VERSION_PLAIN {
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
    for column in 0..usize::from(want_ints) + usize::from(want_floats) {
        let len = get_varint(b, &mut pos)? as usize;
        let end = pos.checked_add(len).ok_or(ChunkError::Truncated(pos))?;
        let bytes = b.get(pos..end).ok_or(ChunkError::Truncated(b.len()))?;
        pos = end;
        let err = |message: String| ChunkError::Column { column, message };
        if column < usize::from(want_ints) {
            let v: Vec<i64> = if len == 0 {
                Vec::new()
            } else {
                simple_decompress(bytes).map_err(|e| err(e.to_string()))?
            };
            if v.len() != n {
                return Err(err(format!("{} rows, expected {n}", v.len())));
            }
            cols.ints.push(v);
        } else {
            let v: Vec<f64> = if len == 0 {
                Vec::new()
            } else {
                simple_decompress(bytes).map_err(|e| err(e.to_string()))?
            };
            if v.len() != n {
                return Err(err(format!("{} rows, expected {n}", v.len())));
            }
            cols.floats.push(v);
        }
    }
    Ok(cols)
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
            for v in [VERSION, VERSION_PLAIN] {
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
