//! A chunk's traces in columns, before compression: spans of one trace share its id, start
//! near each other and name parents among themselves, and spans of a chunk share services,
//! names and attribute keys — columns of like values let zstd find all of that.
//!
//! ```text
//! varint traces, varint strings          header
//! strings: varint length + bytes, each   the table of services, names, keys (and values
//!                                        that repeat: method, route, status...)
//! trace ids: empty (the block's index holds every id in order, so a chunk does not repeat
//!   them; chunks written before that hold 16 bytes a trace here, and are read so still)
//! per trace: varint spans, varint start  (start: ns, delta from the chunk's first trace)
//! per span, one column each:
//!   span id (8 bytes) · parent (varint: 0 none, i + 1 the trace's i-th span, 1 << 32 an id
//!   outside the trace, its 8 bytes in the `outside` column) · service, name (table
//!   indexes) · kind, status (a byte each) · start (delta from the trace's start) ·
//!   duration · status message (table index + 1, 0 none) · attributes, resource (count, then
//!   key index + value index) · events and links (MessagePack, usually an empty array)
//! ```
//!
//! Every value is either a table index or a number; the table holds each distinct string
//! once per chunk (high-cardinality values included: a user id appears once and then by
//! index).

use std::collections::HashMap;

use telltale_common::trace::{Span, SpanEvent, SpanKind, SpanLink, SpanStatus, TraceId};

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

/// Strings by first appearance.
#[derive(Default)]
struct Table<'a> {
    index: HashMap<&'a str, u64>,
    list: Vec<&'a str>,
}

impl<'a> Table<'a> {
    fn id(&mut self, s: &'a str) -> u64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.list.len() as u64;
        self.index.insert(s, i);
        self.list.push(s);
        i
    }
}

/// Encodes traces (each a non-empty list of spans of one trace id). Their ids are not
/// written: [`decode`] is given them.
pub fn encode(traces: &[&[Span]]) -> Vec<u8> {
    encode_columns(traces, false)
}

/// [`encode`], or with the ids inline as chunks were first written.
fn encode_columns(traces: &[&[Span]], ids_inline: bool) -> Vec<u8> {
    let mut t = Table::default();
    let (mut count, mut ids, mut shape, mut span_ids, mut parents, mut outside) = (
        0u64,
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let (mut svc, mut name, mut flags, mut starts, mut durs, mut msgs) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let (mut attrs, mut extra) = (Vec::new(), Vec::new());
    let base = traces
        .first()
        .and_then(|s| s.iter().map(|x| x.start_ns).min())
        .unwrap_or(0);
    for spans in traces {
        if spans.is_empty() {
            continue;
        }
        count += 1;
        if ids_inline {
            ids.extend_from_slice(&spans[0].trace_id);
        }
        let t0 = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
        put(&mut shape, spans.len() as u64);
        put(&mut shape, zigzag(t0 as i64 - base as i64));
        let pos: HashMap<[u8; 8], usize> = spans
            .iter()
            .enumerate()
            .map(|(i, s)| (s.span_id, i))
            .collect();
        for s in spans.iter() {
            span_ids.extend_from_slice(&s.span_id);
            match s.parent {
                None => put(&mut parents, 0),
                Some(p) => match pos.get(&p) {
                    Some(&i) => put(&mut parents, i as u64 + 1),
                    None => {
                        put(&mut parents, 1 << 32);
                        outside.extend_from_slice(&p);
                    }
                },
            }
            put(&mut svc, t.id(&s.service));
            put(&mut name, t.id(&s.name));
            flags.push(s.kind as u8);
            flags.push(s.status as u8);
            put(&mut starts, s.start_ns - t0);
            put(&mut durs, s.duration_ns());
            put(
                &mut msgs,
                if s.status_message.is_empty() {
                    0
                } else {
                    t.id(&s.status_message) + 1
                },
            );
            for pairs in [&s.attributes, &s.resource] {
                put(&mut attrs, pairs.len() as u64);
                for (k, v) in pairs {
                    put(&mut attrs, t.id(k));
                    put(&mut attrs, t.id(v));
                }
            }
            // Events and links: rare; MessagePack (an empty pair is two bytes).
            let _ = rmp_serde::encode::write(&mut extra, &(&s.events, &s.links));
        }
    }
    let mut out = Vec::new();
    put(&mut out, count);
    put(&mut out, t.list.len() as u64);
    put(&mut out, base);
    for s in &t.list {
        put(&mut out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
    for col in [
        &ids, &shape, &span_ids, &parents, &outside, &svc, &name, &flags, &starts, &durs, &msgs,
        &attrs,
    ] {
        put(&mut out, col.len() as u64);
        out.extend_from_slice(col);
    }
    out.extend_from_slice(&extra);
    out
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn var(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.b.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    fn column(&mut self) -> Option<Reader<'a>> {
        let n = usize::try_from(self.var()?).ok()?;
        Some(Reader {
            b: self.take(n)?,
            pos: 0,
        })
    }
}

/// Decodes the traces of a chunk (`None`: damaged) whose ids are `ids` (16 bytes each, in
/// order, from the block's index). `want` picks which (by position; all when `None`): the
/// others are walked, not built.
pub fn decode(b: &[u8], given: &[u8], want: Option<&[usize]>) -> Option<Vec<(usize, Vec<Span>)>> {
    let mut r = Reader { b, pos: 0 };
    let traces = usize::try_from(r.var()?).ok()?;
    let strings = usize::try_from(r.var()?).ok()?;
    let base = r.var()?;
    if strings > b.len() || traces > b.len() {
        return None;
    }
    let mut table = Vec::with_capacity(strings);
    for _ in 0..strings {
        let n = usize::try_from(r.var()?).ok()?;
        table.push(std::str::from_utf8(r.take(n)?).ok()?);
    }
    let (mut ids, mut shape, mut span_ids, mut parents, mut outside) = (
        r.column()?,
        r.column()?,
        r.column()?,
        r.column()?,
        r.column()?,
    );
    let (mut svc, mut name, mut flags, mut starts, mut durs, mut msgs, mut attrs) = (
        r.column()?,
        r.column()?,
        r.column()?,
        r.column()?,
        r.column()?,
        r.column()?,
        r.column()?,
    );
    // Chunks written before ids moved to the index carry their own.
    if ids.b.is_empty() {
        ids = Reader { b: given, pos: 0 };
    }
    if ids.b.len() != traces.checked_mul(16)? {
        return None;
    }
    let mut extra = &b[r.pos..];
    let s = |i: u64| table.get(usize::try_from(i).ok()?).map(|x| x.to_string());
    let mut out = Vec::new();
    for ti in 0..traces {
        let id: TraceId = ids.take(16)?.try_into().ok()?;
        let n = usize::try_from(shape.var()?).ok()?;
        let t0 = (base as i64).checked_add(unzigzag(shape.var()?))? as u64;
        let keep = want.is_none_or(|w| w.contains(&ti));
        let mut spans: Vec<Span> = Vec::with_capacity(if keep { n } else { 0 });
        // Every span id of the trace first: a parent may come after its child (spans are
        // kept in arrival order, and a child often arrives first).
        let own: Vec<[u8; 8]> = (0..n)
            .map(|_| span_ids.take(8)?.try_into().ok())
            .collect::<Option<_>>()?;
        for &span_id in &own {
            let p = parents.var()?;
            let parent = match p {
                0 => None,
                x if x == 1 << 32 => Some(outside.take(8)?.try_into().ok()?),
                x => Some(*own.get(usize::try_from(x - 1).ok()?)?),
            };
            let (sv, nm) = (svc.var()?, name.var()?);
            let f = flags.take(2)?;
            let start = t0.checked_add(starts.var()?)?;
            let dur = durs.var()?;
            let msg = msgs.var()?;
            let mut pairs = [Vec::new(), Vec::new()];
            for p in pairs.iter_mut() {
                let c = attrs.var()?;
                for _ in 0..c {
                    let (k, v) = (attrs.var()?, attrs.var()?);
                    if keep {
                        p.push((s(k)?, s(v)?));
                    }
                }
            }
            let (events, links): (Vec<SpanEvent>, Vec<SpanLink>) =
                rmp_serde::decode::from_read(&mut extra).ok()?;
            if keep {
                let [attributes, resource] = pairs;
                spans.push(Span {
                    trace_id: id,
                    span_id,
                    parent,
                    service: s(sv)?,
                    name: s(nm)?,
                    kind: SpanKind::from_otlp(i32::from(f[0])),
                    start_ns: start,
                    end_ns: start.checked_add(dur)?,
                    status: SpanStatus::from_otlp(i32::from(f[1])),
                    status_message: if msg == 0 { String::new() } else { s(msg - 1)? },
                    attributes,
                    resource,
                    events,
                    links,
                });
            }
        }
        if keep {
            out.push((ti, spans));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_round_trip_every_field_and_damage_is_refused() {
        let mk = |t: u8, i: u64, parent: Option<[u8; 8]>| Span {
            trace_id: [t; 16],
            span_id: (i + 1).to_be_bytes(),
            parent,
            service: format!("s{}", i % 3),
            name: format!("op{}", i % 2),
            kind: SpanKind::from_otlp((i % 6) as i32),
            start_ns: 1_700_000_000_000_000_000 + i * 1000,
            end_ns: 1_700_000_000_000_000_000 + i * 1000 + 77,
            status: SpanStatus::from_otlp((i % 3) as i32),
            status_message: if i.is_multiple_of(2) {
                String::new()
            } else {
                "boom".into()
            },
            attributes: vec![("k".into(), format!("v{i}")), ("é".into(), "ü".into())],
            resource: vec![("host".into(), "h".into())],
            events: if i == 2 {
                vec![SpanEvent {
                    t_ns: 5,
                    name: "ex".into(),
                    attributes: vec![("a".into(), "b".into())],
                }]
            } else {
                Vec::new()
            },
            links: if i == 1 {
                vec![SpanLink {
                    trace_id: [9; 16],
                    span_id: [8; 8],
                }]
            } else {
                Vec::new()
            },
        };
        let a: Vec<Span> = vec![
            mk(1, 0, None),
            mk(1, 1, Some(1u64.to_be_bytes())),
            mk(1, 2, Some([0xee; 8])),
        ];
        // A trace starting before the chunk's first (its delta is negative).
        let mut b: Vec<Span> = vec![mk(2, 5, None), mk(2, 6, Some(6u64.to_be_bytes()))];
        for s in &mut b {
            s.start_ns -= 10_000;
            s.end_ns -= 10_000;
        }
        // Children before their parents, as spans arrive from several hosts.
        let c: Vec<Span> = vec![
            mk(3, 7, Some(9u64.to_be_bytes())),
            mk(3, 9, Some(10u64.to_be_bytes())),
            mk(3, 8, None),
        ];
        let ids = [[1u8; 16], [3u8; 16]].concat();
        let all = decode(&encode(&[&a, &c]), &ids, None).expect("decodes");
        assert_eq!(all, vec![(0, a.clone()), (1, c)]);
        let enc = encode(&[&a, &b]);
        let ids = [[1u8; 16], [2u8; 16]].concat();
        let all = decode(&enc, &ids, None).expect("decodes");
        assert_eq!(all, vec![(0, a.clone()), (1, b.clone())]);
        assert_eq!(
            decode(&enc, &ids, Some(&[1])).expect("one"),
            vec![(1, b.clone())]
        );
        for cut in 0..enc.len() {
            assert!(decode(&enc[..cut], &ids, None).is_none(), "cut at {cut}");
        }
        // Ids that do not fit the chunk are damage, not a panic.
        assert!(decode(&enc, &ids[..16], None).is_none());
        // A chunk written with its ids inline reads the same without the index's.
        let old = encode_columns(&[&a, &b], true);
        assert_eq!(decode(&old, &[], None).expect("old chunk"), all);
    }
}
