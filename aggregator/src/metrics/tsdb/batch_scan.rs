//! An agent's batch (a `ClientMessage::Batch` payload, MessagePack as `rmp_serde` writes it
//! with named fields) walked without decoding labels: each series' label array as encoded
//! (its key, as [`crate::metrics::remote_write::RawSeries::key`] is for remote_write) and all
//! samples in one list. Anything not in the expected shape gives `None`, and the caller takes
//! the serde path, which decodes (or refuses) every form — so this walker only has to be
//! right about what it accepts.

use std::ops::Range;

use telltale_common::model::Sample;
use telltale_common::wire::Event;

/// A batch walked by [`scan`].
#[derive(Debug, Default)]
pub struct RawBatch<'a> {
    /// Per series: its label array's bytes and its range in `samples`.
    pub series: Vec<(&'a [u8], Range<usize>)>,
    /// Every series' samples.
    pub samples: Vec<Sample>,
    /// The host events.
    pub events: Vec<Event>,
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let v = *self.b.get(self.pos)?;
        self.pos += 1;
        Some(v)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |a, &x| (a << 8) | u64::from(x)),
        )
    }

    fn map_len(&mut self) -> Option<usize> {
        match self.byte()? {
            m @ 0x80..=0x8f => Some(usize::from(m & 0x0f)),
            0xde => Some(self.be(2)? as usize),
            0xdf => Some(self.be(4)? as usize),
            _ => None,
        }
    }

    fn array_len(&mut self) -> Option<usize> {
        match self.byte()? {
            m @ 0x90..=0x9f => Some(usize::from(m & 0x0f)),
            0xdc => Some(self.be(2)? as usize),
            0xdd => Some(self.be(4)? as usize),
            _ => None,
        }
    }

    fn str(&mut self) -> Option<&'a str> {
        let n = match self.byte()? {
            m @ 0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 => self.be(1)? as usize,
            0xda => self.be(2)? as usize,
            0xdb => self.be(4)? as usize,
            _ => return None,
        };
        std::str::from_utf8(self.take(n)?).ok()
    }

    fn int(&mut self) -> Option<i64> {
        match self.byte()? {
            m @ 0x00..=0x7f => Some(i64::from(m)),
            m @ 0xe0..=0xff => Some(i64::from(m as i8)),
            0xcc => Some(self.be(1)? as i64),
            0xcd => Some(self.be(2)? as i64),
            0xce => Some(self.be(4)? as i64),
            0xcf => i64::try_from(self.be(8)?).ok(),
            0xd0 => Some(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => Some(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => Some(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => Some(self.be(8)? as i64),
            _ => None,
        }
    }

    fn f64(&mut self) -> Option<f64> {
        match self.b.get(self.pos)? {
            0xcb => {
                self.pos += 1;
                Some(f64::from_bits(self.be(8)?))
            }
            0xca => {
                self.pos += 1;
                Some(f64::from(f32::from_bits(self.be(4)? as u32)))
            }
            _ => None,
        }
    }

    /// Skips one value of any type; `depth` bounds nesting.
    fn skip(&mut self, depth: u32) -> Option<()> {
        if depth > 64 {
            return None;
        }
        let m = self.byte()?;
        let n = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 0,
            0x80..=0x8f => return self.skip_n(2 * usize::from(m & 0x0f), depth),
            0x90..=0x9f => return self.skip_n(usize::from(m & 0x0f), depth),
            0xa0..=0xbf => usize::from(m & 0x1f),
            0xcc | 0xd0 => 1,
            0xcd | 0xd1 => 2,
            0xce | 0xd2 | 0xca => 4,
            0xcf | 0xd3 | 0xcb => 8,
            0xd9 | 0xc4 => self.be(1)? as usize,
            0xda | 0xc5 => self.be(2)? as usize,
            0xdb | 0xc6 => self.be(4)? as usize,
            0xdc => {
                let k = self.be(2)? as usize;
                return self.skip_n(k, depth);
            }
            0xdd => {
                let k = self.be(4)? as usize;
                return self.skip_n(k, depth);
            }
            0xde => {
                let k = self.be(2)? as usize;
                return self.skip_n(2 * k, depth);
            }
            0xdf => {
                let k = self.be(4)? as usize;
                return self.skip_n(2 * k, depth);
            }
            0xd4 => 2,
            0xd5 => 3,
            0xd6 => 5,
            0xd7 => 9,
            0xd8 => 17,
            0xc7 => self.be(1)? as usize + 1,
            0xc8 => self.be(2)? as usize + 1,
            0xc9 => self.be(4)? as usize + 1,
            _ => return None,
        };
        self.take(n).map(|_| ())
    }

    fn skip_n(&mut self, n: usize, depth: u32) -> Option<()> {
        for _ in 0..n {
            self.skip(depth + 1)?;
        }
        Some(())
    }
}

/// Walks a batch payload; `None` when it is not a batch of the expected shape.
pub fn scan(payload: &[u8]) -> Option<RawBatch<'_>> {
    let mut r = Reader { b: payload, pos: 0 };
    if r.map_len()? != 1 || r.str()? != "Batch" {
        return None;
    }
    let mut out = RawBatch::default();
    let (mut seen_series, mut seen_events) = (false, false);
    for _ in 0..r.map_len()? {
        match r.str()? {
            // A field given twice is refused by serde: left to it.
            "series" if seen_series => return None,
            "events" if seen_events => return None,
            "series" => {
                seen_series = true;
                let n = r.array_len()?;
                // Each series takes a few bytes at least: no allocation from a claimed count.
                out.series.reserve(n.min(payload.len() / 4));
                for _ in 0..n {
                    series(&mut r, &mut out)?;
                }
            }
            "events" => {
                seen_events = true;
                let start = r.pos;
                r.skip(0)?;
                out.events =
                    telltale_common::codec::decode_borrowed(&payload[start..r.pos]).ok()?;
            }
            _ => r.skip(0)?,
        }
    }
    (seen_series && r.pos == payload.len()).then_some(out)
}

fn series<'a>(r: &mut Reader<'a>, out: &mut RawBatch<'a>) -> Option<()> {
    let (mut labels, mut samples) = (None, None);
    for _ in 0..r.map_len()? {
        match r.str()? {
            "labels" if labels.is_some() => return None,
            "samples" if samples.is_some() => return None,
            "labels" => {
                let start = r.pos;
                for _ in 0..r.array_len()? {
                    if r.array_len()? != 2 {
                        return None;
                    }
                    r.str()?;
                    r.str()?;
                }
                labels = Some(&r.b[start..r.pos]);
            }
            "samples" => {
                let first = out.samples.len();
                for _ in 0..r.array_len()? {
                    if r.array_len()? != 2 {
                        return None;
                    }
                    let t = r.int()?;
                    let v = r.f64()?;
                    out.samples.push(Sample(t, v));
                }
                samples = Some(first..out.samples.len());
            }
            _ => r.skip(0)?,
        }
    }
    out.series.push((labels?, samples?));
    Some(())
}

/// The label pairs of a series key from [`scan`], as sent.
pub fn pairs(key: &[u8]) -> Option<Vec<(&str, &str)>> {
    let mut r = Reader { b: key, pos: 0 };
    let n = r.array_len()?;
    let mut out = Vec::with_capacity(n.min(key.len()));
    for _ in 0..n {
        if r.array_len()? != 2 {
            return None;
        }
        out.push((r.str()?, r.str()?));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use telltale_common::codec;
    use telltale_common::model::{Labels, SeriesSamples};
    use telltale_common::wire::{Batch, ClientMessage, ClientMessageRef};

    fn payload(series: Vec<SeriesSamples>, events: Vec<Event>) -> Vec<u8> {
        codec::encode_payload(&ClientMessage::Batch(Batch {
            sequence: 9,
            created_ms: -5,
            series,
            events,
            spans: Vec::new(),
            exemplars: Vec::new(),
            logs: Vec::new(),
        }))
        .unwrap()
    }

    proptest::proptest! {
        /// The walk reads what serde decodes, for any batch.
        #[test]
        fn scan_agrees_with_serde(
            series in proptest::collection::vec(
                (
                    proptest::collection::vec(("[a-z_]{0,5}", "\\PC{0,40}"), 0..4),
                    proptest::collection::vec(
                        (proptest::num::i64::ANY, proptest::num::f64::ANY),
                        0..20,
                    ),
                ),
                0..20,
            ),
            events in 0usize..3,
        ) {
            let series: Vec<SeriesSamples> = series
                .into_iter()
                .map(|(l, s)| SeriesSamples {
                    labels: Labels::from_pairs(l),
                    samples: s.into_iter().map(|(t, v)| Sample(t, v)).collect(),
                })
                .collect();
            let events: Vec<Event> = (0..events)
                .map(|i| Event {
                    t_ms: i as i64,
                    kind: "k".into(),
                    labels: vec![("a".into(), "b".into())],
                    message: "m".into(),
                })
                .collect();
            let p = payload(series, events);
            let raw = scan(&p).expect("a batch");
            let ClientMessageRef::Batch(b) = codec::decode_borrowed::<ClientMessageRef>(&p).unwrap() else {
                panic!("not a batch");
            };
            proptest::prop_assert_eq!(raw.series.len(), b.series.len());
            proptest::prop_assert_eq!(raw.events, b.events);
            for ((key, range), s) in raw.series.iter().zip(&b.series) {
                proptest::prop_assert_eq!(pairs(key).unwrap(), s.labels.clone());
                let bits = |v: &[Sample]| v.iter().map(|x| (x.0, x.1.to_bits())).collect::<Vec<_>>();
                proptest::prop_assert_eq!(bits(&raw.samples[range.clone()]), bits(&s.samples));
            }
        }

        /// Any bytes: an answer or `None`, never a panic.
        #[test]
        fn hostile_bytes_never_panic(b in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = scan(&b);
            let _ = pairs(&b);
            let mut framed = vec![0x81, 0xa5];
            framed.extend_from_slice(b"Batch");
            framed.extend_from_slice(&b);
            let _ = scan(&framed);
        }
    }

    /// A field given twice is left to serde (which refuses it): the walk does not accept
    /// what the serde path would not.
    #[test]
    fn repeated_fields_are_not_accepted() {
        #[derive(serde::Serialize)]
        struct Field<T> {
            series: T,
        }
        let series = vec![SeriesSamples {
            labels: Labels::from_pairs([("__name__", "m")]),
            samples: vec![Sample(1, 1.0)],
        }];
        let mut p = payload(series.clone(), Vec::new());
        assert!(scan(&p).is_some());
        // {"Batch": {fields}}: the inner map's header (a fixmap) follows the 6 bytes of "Batch".
        assert!((0x81..0x8f).contains(&p[7]), "{:x}", p[7]);
        p[7] += 1;
        let extra = codec::encode_payload(&Field { series }).unwrap();
        p.extend_from_slice(&extra[1..]);
        assert!(scan(&p).is_none());
        assert!(codec::decode_borrowed::<ClientMessageRef>(&p).is_err());
    }
}
