//! Rollup chunks: how the engine stores [`Bucket`]s (see [`crate::metrics::storage::rollup`]
//! for what a bucket is). Block windows are left-open and right-closed like buckets, so a
//! block window holds whole buckets.
//!
//! Chunk columns: i64 `end`, `last_t`; f64 `min`, `max`, `sum`, `count`, `last`.

use super::chunk::{self, ChunkError};
use crate::metrics::storage::rollup::Bucket;

/// i64 columns of a rollup chunk.
pub const INTS: u8 = 2;
/// f64 columns of a rollup chunk.
pub const FLOATS: u8 = 5;

/// Encodes buckets as a chunk.
pub fn encode(b: &[Bucket]) -> Vec<u8> {
    let col_i = |f: fn(&Bucket) -> i64| b.iter().map(f).collect::<Vec<_>>();
    let col_f = |f: fn(&Bucket) -> f64| b.iter().map(f).collect::<Vec<_>>();
    let (end, last_t) = (col_i(|x| x.end), col_i(|x| x.last_t));
    let (min, max, sum, count, last) = (
        col_f(|x| x.min),
        col_f(|x| x.max),
        col_f(|x| x.sum),
        col_f(|x| x.count),
        col_f(|x| x.last),
    );
    chunk::encode(&[&end, &last_t], &[&min, &max, &sum, &count, &last])
}

/// Rebuilds buckets from decoded columns.
pub fn from_columns(c: &chunk::Columns) -> Result<Vec<Bucket>, ChunkError> {
    let (Some(end), Some(last_t)) = (c.ints.first(), c.ints.get(1)) else {
        return Err(ChunkError::Truncated(0));
    };
    let f = |i: usize| c.floats.get(i).ok_or(ChunkError::Truncated(0));
    let (min, max, sum, count, last) = (f(0)?, f(1)?, f(2)?, f(3)?, f(4)?);
    Ok((0..end.len())
        .map(|i| Bucket {
            end: end[i],
            last_t: last_t[i],
            min: min[i],
            max: max[i],
            sum: sum[i],
            count: count[i],
            last: last[i],
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::storage::rollup::{RESOLUTIONS, buckets};
    use proptest::prelude::*;
    use telltale_common::model::{STALE_NAN_BITS, Sample};

    proptest! {
        /// Buckets come back from a chunk exactly as they went in.
        #[test]
        fn rollup_chunks_round_trip(
            steps in proptest::collection::vec((1i64..200_000, -1000i64..1000, 0u8..20), 1..300),
            res_k in 0usize..2,
        ) {
            let w = RESOLUTIONS[res_k];
            let mut t = 0i64;
            let s: Vec<Sample> = steps.iter().map(|&(dt, v, k)| {
                t += if k == 0 { w - t.rem_euclid(w) } else { dt };
                Sample(t, if k == 1 { f64::from_bits(STALE_NAN_BITS) } else { v as f64 / 7.0 })
            }).collect();
            let b = buckets(&s, w);
            let back = from_columns(&chunk::decode(&encode(&b), INTS, FLOATS).unwrap()).unwrap();
            prop_assert_eq!(back.len(), b.len());
            for (x, y) in back.iter().zip(&b) {
                // Bitwise: NaN buckets compare equal too.
                prop_assert_eq!(
                    (x.end, x.last_t, x.min.to_bits(), x.max.to_bits(), x.sum.to_bits(), x.count.to_bits(), x.last.to_bits()),
                    (y.end, y.last_t, y.min.to_bits(), y.max.to_bits(), y.sum.to_bits(), y.count.to_bits(), y.last.to_bits())
                );
            }
        }
    }
}
