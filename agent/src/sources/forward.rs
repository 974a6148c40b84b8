//! Fluentd's forward protocol on the agent (`[[log]]` with `type = "forward"`), so
//! applications logging through a Fluentd logger send to the agent unchanged: MessagePack
//! over TCP in the four modes of the protocol (v1) — Message `[tag, time, record, option?]`,
//! Forward `[tag, [[time, record], ...], option?]`, PackedForward `[tag, bin, option?]` (the
//! entries' MessagePack stream in one binary) and CompressedPackedForward (the same,
//! gzip-compressed, `option.compressed = "gzip"`). When the option carries a `chunk` id the
//! agent answers `{"ack": id}` once the entries are in its batch.
//!
//! A record's `message`, `log` or `msg` field (a string) is the line and its other fields
//! are structured metadata; a record without one is written as JSON. The tag is a label
//! (`tag`), next to `source` and `level` (from a `level`/`severity` field, or the line).

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use telltale_common::model::now_ms;
use telltale_common::wire::LogEntry;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::logbatch::{Admission, BadMessage, Gate, LogBatcher};
use super::logfile::LogStats;
use super::logparse;
use crate::pipeline::logsink::LogSink;

/// A validated forward source.
#[derive(Debug, Clone)]
pub struct ForwardSource {
    /// The `source` label.
    pub name: String,
    /// Where to listen (TCP).
    pub listen: SocketAddr,
    /// Static labels.
    pub labels: Vec<(String, String)>,
    /// Longest line kept (longer ones cut and counted); also bounds a message.
    pub max_line_bytes: usize,
    /// Rate limit and counters.
    pub admission: Admission,
}

/// A MessagePack value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// nil
    Nil,
    /// true/false
    Bool(bool),
    /// An integer.
    Int(i128),
    /// A float.
    Float(f64),
    /// A string (invalid UTF-8 replaced).
    Str(String),
    /// Bytes.
    Bin(Vec<u8>),
    /// An array.
    Array(Vec<Value>),
    /// A map.
    Map(Vec<(Value, Value)>),
    /// An extension (Fluentd's EventTime is type 0).
    Ext(i8, Vec<u8>),
}

/// Why a value could not be read.
#[derive(Debug, PartialEq)]
pub enum DecodeError {
    /// More bytes are needed.
    Incomplete,
    /// Not MessagePack, or nested deeper than allowed.
    Malformed,
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Malformed)?;
        let s = self.b.get(self.pos..end).ok_or(DecodeError::Incomplete)?;
        self.pos = end;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |a, &x| (a << 8) | u64::from(x)))
    }

    /// A length; what it claims is only ever read element by element (no allocation up
    /// front), and the connection's buffer limit bounds what may be waited for.
    fn len(&mut self, n: usize) -> Result<usize, DecodeError> {
        usize::try_from(self.uint(n)?).map_err(|_| DecodeError::Malformed)
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > 32 {
            return Err(DecodeError::Malformed);
        }
        let m = self.take(1)?[0];
        let str = |r: &mut Self, n: usize| -> Result<Value, DecodeError> {
            Ok(Value::Str(String::from_utf8_lossy(r.take(n)?).into_owned()))
        };
        let arr = |r: &mut Self, n: usize| -> Result<Value, DecodeError> {
            (0..n)
                .map(|_| r.value(depth + 1))
                .collect::<Result<_, _>>()
                .map(Value::Array)
        };
        let map = |r: &mut Self, n: usize| -> Result<Value, DecodeError> {
            (0..n)
                .map(|_| Ok((r.value(depth + 1)?, r.value(depth + 1)?)))
                .collect::<Result<_, _>>()
                .map(Value::Map)
        };
        let ext = |r: &mut Self, n: usize| -> Result<Value, DecodeError> {
            let t = r.take(1)?[0] as i8;
            Ok(Value::Ext(t, r.take(n)?.to_vec()))
        };
        Ok(match m {
            0x00..=0x7f => Value::Int(i128::from(m)),
            0xe0..=0xff => Value::Int(i128::from(m as i8)),
            0x80..=0x8f => return map(self, usize::from(m & 0x0f)),
            0x90..=0x9f => return arr(self, usize::from(m & 0x0f)),
            0xa0..=0xbf => return str(self, usize::from(m & 0x1f)),
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                let n = self.len(1 << (m - 0xc4))?;
                Value::Bin(self.take(n)?.to_vec())
            }
            0xc7..=0xc9 => {
                let n = self.len(1 << (m - 0xc7))?;
                return ext(self, n);
            }
            0xca => Value::Float(f64::from(f32::from_bits(self.uint(4)? as u32))),
            0xcb => Value::Float(f64::from_bits(self.uint(8)?)),
            0xcc..=0xcf => Value::Int(i128::from(self.uint(1 << (m - 0xcc))?)),
            0xd0 => Value::Int(i128::from(self.uint(1)? as u8 as i8)),
            0xd1 => Value::Int(i128::from(self.uint(2)? as u16 as i16)),
            0xd2 => Value::Int(i128::from(self.uint(4)? as u32 as i32)),
            0xd3 => Value::Int(i128::from(self.uint(8)? as i64)),
            0xd4..=0xd8 => return ext(self, 1 << (m - 0xd4)),
            0xd9..=0xdb => {
                let n = self.len(1 << (m - 0xd9))?;
                return str(self, n);
            }
            0xdc | 0xdd => {
                let n = self.len(2 << (m - 0xdc))?;
                return arr(self, n);
            }
            0xde | 0xdf => {
                let n = self.len(2 << (m - 0xde))?;
                return map(self, n);
            }
            _ => return Err(DecodeError::Malformed),
        })
    }
}

/// Where the first MessagePack value of a growing buffer ends, found without building it and
/// resumably: each call goes on from where the last one stopped, so a message that arrives
/// in many reads is scanned once in all (decoding it again on every read costs the square
/// of its size: a 16 MiB array of small entries sent 64 KiB at a time was 256 decodes).
/// It accepts and refuses exactly what [`decode`] does (same depth limit, same markers).
#[derive(Default)]
pub struct Scan {
    pos: usize,
    /// Items still to read at each open array or map, outermost first.
    open: Vec<usize>,
    started: bool,
}

impl Scan {
    /// `Ok(Some(end))` once the first value of `b` is whole (it is `b[..end]`), `Ok(None)`
    /// while it is not; `b` may only have grown since the last call.
    pub fn advance(&mut self, b: &[u8]) -> Result<Option<usize>, DecodeError> {
        loop {
            if self.started && self.open.is_empty() {
                return Ok(Some(self.pos));
            }
            if self.open.len() > 32 {
                return Err(DecodeError::Malformed);
            }
            let rest = &b[self.pos.min(b.len())..];
            let Some((size, children)) = item(rest)? else {
                return Ok(None);
            };
            if rest.len() < size {
                return Ok(None);
            }
            self.pos += size;
            self.started = true;
            if let Some(top) = self.open.last_mut() {
                *top -= 1;
            }
            if children > 0 {
                self.open.push(children);
            }
            while self.open.last() == Some(&0) {
                self.open.pop();
            }
        }
    }
}

/// The bytes of the item at the front of `b` without its children, and how many child values
/// follow it; `None` while its header is incomplete.
fn item(b: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let Some(&m) = b.first() else {
        return Ok(None);
    };
    // A big-endian length of `n` bytes after the marker (and after `skip` more).
    let len = |n: usize| -> Result<Option<usize>, DecodeError> {
        let Some(x) = b.get(1..1 + n) else {
            return Ok(None);
        };
        let v = x.iter().fold(0u64, |a, &y| (a << 8) | u64::from(y));
        usize::try_from(v)
            .map(Some)
            .map_err(|_| DecodeError::Malformed)
    };
    let add = |a: usize, b: usize| a.checked_add(b).ok_or(DecodeError::Malformed);
    Ok(Some(match m {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (1, 0),
        0x80..=0x8f => (1, 2 * usize::from(m & 0x0f)),
        0x90..=0x9f => (1, usize::from(m & 0x0f)),
        0xa0..=0xbf => (1 + usize::from(m & 0x1f), 0),
        0xc4..=0xc6 | 0xd9..=0xdb => {
            let n = if m <= 0xc6 {
                1 << (m - 0xc4)
            } else {
                1 << (m - 0xd9)
            };
            let Some(l) = len(n)? else { return Ok(None) };
            (add(1 + n, l)?, 0)
        }
        0xc7..=0xc9 => {
            let n = 1 << (m - 0xc7);
            let Some(l) = len(n)? else { return Ok(None) };
            (add(2 + n, l)?, 0)
        }
        0xca => (5, 0),
        0xcb => (9, 0),
        0xcc..=0xcf => (1 + (1 << (m - 0xcc)), 0),
        0xd0..=0xd3 => (1 + (1 << (m - 0xd0)), 0),
        0xd4..=0xd8 => (2 + (1 << (m - 0xd4)), 0),
        0xdc | 0xdd => {
            let n = 2 << (m - 0xdc);
            let Some(l) = len(n)? else { return Ok(None) };
            (1 + n, l)
        }
        0xde | 0xdf => {
            let n = 2 << (m - 0xde);
            let Some(l) = len(n)? else { return Ok(None) };
            (1 + n, l.checked_mul(2).ok_or(DecodeError::Malformed)?)
        }
        _ => return Err(DecodeError::Malformed),
    }))
}

/// Reads one value from the front of `b`; returns it and the bytes it took.
pub fn decode(b: &[u8]) -> Result<(Value, usize), DecodeError> {
    let mut r = Reader { b, pos: 0 };
    let v = r.value(0)?;
    Ok((v, r.pos))
}

fn get<'a>(m: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    m.iter()
        .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
        .map(|(_, v)| v)
}

/// A time: seconds (integer or float) or an EventTime (ext 0: u32 seconds, u32 ns).
fn time_ns(v: &Value) -> Option<i64> {
    match v {
        Value::Int(s) => i64::try_from(*s).ok()?.checked_mul(1_000_000_000),
        Value::Float(f) if f.is_finite() => Some((f * 1e9) as i64),
        Value::Ext(0, b) if b.len() == 8 => {
            let s = i64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            let ns = i64::from(u32::from_be_bytes([b[4], b[5], b[6], b[7]]));
            Some(s * 1_000_000_000 + ns)
        }
        _ => None,
    }
}

fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => i64::try_from(*i).map(J::from).unwrap_or(J::Null),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .unwrap_or(J::Null),
        Value::Str(s) => J::String(s.clone()),
        Value::Bin(b) => J::String(String::from_utf8_lossy(b).into_owned()),
        Value::Array(a) => J::Array(a.iter().map(to_json).collect()),
        Value::Map(m) => J::Object(
            m.iter()
                .map(|(k, v)| {
                    let k = match k {
                        Value::Str(s) => s.clone(),
                        other => to_json(other).to_string(),
                    };
                    (k, to_json(v))
                })
                .collect(),
        ),
        Value::Ext(..) => J::Null,
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        other => to_json(other).to_string(),
    }
}

/// The entries of one forward-protocol message: tag, `(time ns, record)`s, and the chunk id
/// to acknowledge.
pub type Entries = (String, Vec<(i64, Value)>, Option<String>);

/// The entries of one forward-protocol message.
pub fn entries(msg: &Value) -> Result<Entries, BadMessage> {
    let Value::Array(a) = msg else {
        return Err(BadMessage("a message is an array"));
    };
    let tag = match a.first() {
        Some(Value::Str(t)) => t.clone(),
        _ => return Err(BadMessage("no tag")),
    };
    // The option map follows the entries: after the record in Message mode, after the
    // entries otherwise.
    let message_mode = matches!(
        a.get(1),
        Some(Value::Int(_) | Value::Float(_) | Value::Ext(..))
    );
    let option = match a.get(if message_mode { 3 } else { 2 }) {
        Some(Value::Map(m)) => Some(m),
        _ => None,
    };
    let chunk = option.and_then(|m| get(m, "chunk")).map(text);
    let gzip = option
        .and_then(|m| get(m, "compressed"))
        .is_some_and(|c| matches!(c, Value::Str(s) if s == "gzip"));
    let now = now_ms().saturating_mul(1_000_000);
    let pair = |v: &Value| -> Option<(i64, Value)> {
        let Value::Array(e) = v else { return None };
        let t = e.first().and_then(time_ns).unwrap_or(now);
        Some((t, e.get(1)?.clone()))
    };
    let out = match a.get(1) {
        // Message: [tag, time, record, option?]
        Some(t @ (Value::Int(_) | Value::Float(_) | Value::Ext(..))) => {
            let record = a.get(2).ok_or(BadMessage("no record"))?.clone();
            vec![(time_ns(t).unwrap_or(now), record)]
        }
        // Forward: [tag, [[time, record], ...], option?]
        Some(Value::Array(es)) => es.iter().filter_map(pair).collect(),
        // PackedForward and CompressedPackedForward: [tag, bin, option?]
        Some(Value::Bin(_) | Value::Str(_)) => {
            let raw: Vec<u8> = match a.get(1) {
                Some(Value::Bin(b)) => b.clone(),
                Some(Value::Str(s)) => s.as_bytes().to_vec(),
                _ => Vec::new(),
            };
            let raw = if gzip {
                let mut out = Vec::new();
                flate2::read::MultiGzDecoder::new(raw.as_slice())
                    .take(64 << 20)
                    .read_to_end(&mut out)
                    .map_err(|_| BadMessage("bad gzip"))?;
                out
            } else {
                raw
            };
            let mut es = Vec::new();
            let mut at = 0;
            while at < raw.len() {
                let (v, n) = decode(&raw[at..]).map_err(|_| BadMessage("bad packed entries"))?;
                at += n;
                es.extend(pair(&v));
            }
            es
        }
        _ => return Err(BadMessage("unknown mode")),
    };
    Ok((tag, out, chunk))
}

/// Turns entries into lines of the batch.
fn take(
    cfg: &ForwardSource,
    stats: &LogStats,
    gate: &Mutex<Gate>,
    batch: &Mutex<LogBatcher>,
    tag: &str,
    es: Vec<(i64, Value)>,
) {
    for (t, record) in es {
        stats.lines.fetch_add(1, Ordering::Relaxed);
        let (mut line, mut metadata) = match &record {
            Value::Map(m) => {
                let key = ["message", "log", "msg"]
                    .into_iter()
                    .find(|k| matches!(get(m, k), Some(Value::Str(_))));
                match key {
                    Some(k) => (
                        get(m, k).map(text).unwrap_or_default(),
                        m.iter()
                            .filter(|(kk, _)| !matches!(kk, Value::Str(s) if s == k))
                            .map(|(kk, v)| (text(kk), text(v)))
                            .collect::<Vec<_>>(),
                    ),
                    None => (to_json(&record).to_string(), Vec::new()),
                }
            }
            other => (text(other), Vec::new()),
        };
        stats.bytes.fetch_add(line.len() as u64, Ordering::Relaxed);
        if super::logbatch::cut_line(&mut line, cfg.max_line_bytes) {
            stats.cut.fetch_add(1, Ordering::Relaxed);
        }
        metadata.truncate(32);
        let level = logparse::level(&metadata, &line);
        metadata.retain(|(k, _)| k != "level");
        let admitted = gate
            .lock()
            .map(|mut g| g.admit(&stats.counts, level, &line))
            .unwrap_or(true);
        if !admitted {
            continue;
        }
        let mut labels = cfg.labels.clone();
        labels.push(("source".into(), cfg.name.clone()));
        labels.push(("tag".into(), tag.to_string()));
        labels.push(("level".into(), level.into()));
        if let Ok(mut b) = batch.lock() {
            b.add(
                labels,
                LogEntry {
                    t_ns: t,
                    line,
                    metadata,
                },
            );
        }
    }
}

/// The `{"ack": id}` answer.
fn ack(id: &str) -> Vec<u8> {
    let mut out = vec![0x81, 0xa3, b'a', b'c', b'k'];
    let b = id.as_bytes();
    if b.len() < 32 {
        out.push(0xa0 | b.len() as u8);
    } else {
        out.push(0xd9);
        out.push(b.len().min(255) as u8);
    }
    out.extend_from_slice(&b[..b.len().min(255)]);
    out
}

/// Reads one connection's messages, acknowledging each whole one that asks; bounded by
/// [`super::streams`] (idle time, the source's buffer budget).
async fn connection(
    mut s: tokio::net::TcpStream,
    (cfg, stats, gate, batch): super::streams::Shared<ForwardSource>,
    activity: super::streams::Activity,
    mut held: super::streams::Reservation,
) {
    // A message may hold many entries: bound it well above one line.
    let max = (cfg.max_line_bytes * 64).max(8 << 20);
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut scan = Scan::default();
    loop {
        loop {
            // Decoded only once whole: the scan goes on from where it stopped.
            let whole = scan
                .advance(&buf)
                .and_then(|end| end.ok_or(DecodeError::Incomplete))
                .and_then(|end| decode(&buf[..end]));
            match whole {
                Ok((v, n)) => {
                    buf.drain(..n);
                    scan = Scan::default();
                    match entries(&v) {
                        Ok((tag, es, id)) => {
                            take(&cfg, &stats, &gate, &batch, &tag, es);
                            if let Some(id) = id
                                && s.write_all(&ack(&id)).await.is_err()
                            {
                                return;
                            }
                        }
                        Err(why) => {
                            stats.malformed.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(source = %cfg.name, %why, "forward message skipped");
                        }
                    }
                }
                Err(DecodeError::Incomplete) if buf.len() <= max => break,
                Err(_) => {
                    stats.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(source = %cfg.name, "malformed or oversized forward message: connection closed");
                    return;
                }
            }
        }
        if !held.hold(buf.len()) {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(source = %cfg.name, bytes = buf.len(), "forward senders together hold more unfinished messages than the source's buffer budget: connection closed (the sender resends what was not acknowledged)");
            return;
        }
        match super::streams::read(&mut s, &mut chunk, &activity).await {
            0 => return,
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Runs a forward source until `stop`.
pub async fn run(
    cfg: ForwardSource,
    sink: Arc<dyn LogSink>,
    stats: Arc<LogStats>,
    mut stop: watch::Receiver<bool>,
) {
    let tcp = match tokio::net::TcpListener::bind(cfg.listen).await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(source = %cfg.name, listen = %cfg.listen, error = %e, "cannot listen for the forward protocol; running without this source");
            return;
        }
    };
    tracing::info!(source = %cfg.name, listen = %cfg.listen, "forward listener started");
    let cfg = Arc::new(cfg);
    let batch = Arc::new(Mutex::new(LogBatcher::default()));
    let gate = Arc::new(Mutex::new(Gate::new(&cfg.name, cfg.admission.clone())));
    let mut conns = super::streams::Conns::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let flush = tokio::select! {
            a = tcp.accept() => {
                if let Ok((s, _)) = a {
                    let shared = (cfg.clone(), stats.clone(), gate.clone(), batch.clone());
                    if conns.spawn(|act, held| connection(s, shared, act, held)) {
                        tracing::info!(source = %cfg.name, "forward connections at their limit: the one idle longest was closed");
                    }
                }
                batch.lock().map(|b| b.full()).unwrap_or(false)
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => false,
            _ = tick.tick() => true,
            _ = stop.changed() => true,
        };
        if flush {
            super::logbatch::flush(&batch, sink.as_ref(), &cfg.name).await;
        }
        if *stop.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp(v: &serde_json::Value) -> Vec<u8> {
        rmp_serde::to_vec(v).expect("encodes")
    }

    #[test]
    fn the_four_modes_decode() {
        let rec = serde_json::json!({"message": "hello", "user": "ann"});
        let msg = mp(&serde_json::json!(["app.web", 1_700_000_000, rec, {"chunk": "abc"}]));
        let (v, n) = decode(&msg).expect("decodes");
        assert_eq!(n, msg.len());
        let (tag, es, chunk) = entries(&v).expect("message mode");
        assert_eq!(
            (tag.as_str(), es.len(), chunk.as_deref()),
            ("app.web", 1, Some("abc"))
        );
        assert_eq!(es[0].0, 1_700_000_000_000_000_000);
        let fwd = mp(&serde_json::json!(["t", [[1, {"log": "a"}], [2, {"log": "b"}]]]));
        assert_eq!(
            entries(&decode(&fwd).expect("d").0)
                .expect("forward")
                .1
                .len(),
            2
        );
        // PackedForward: the entries' stream as one binary; EventTime as ext 0.
        let mut packed = Vec::new();
        for i in 0..3u32 {
            packed.extend_from_slice(&[0x92, 0xd7, 0x00]);
            packed.extend_from_slice(&1_700_000_000u32.to_be_bytes());
            packed.extend_from_slice(&(i * 10).to_be_bytes());
            packed.extend_from_slice(&mp(&serde_json::json!({"message": format!("m{i}")})));
        }
        let mut msg = vec![0x92, 0xa1, b't', 0xc5];
        msg.extend_from_slice(&(packed.len() as u16).to_be_bytes());
        msg.extend_from_slice(&packed);
        let (tag, es, _) = entries(&decode(&msg).expect("d").0).expect("packed");
        assert_eq!((tag.as_str(), es.len()), ("t", 3));
        assert_eq!(es[2].0, 1_700_000_000_000_000_020);
        // CompressedPackedForward.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &packed).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let mut msg = vec![0x93, 0xa1, b't', 0xc5];
        msg.extend_from_slice(&(gz.len() as u16).to_be_bytes());
        msg.extend_from_slice(&gz);
        msg.extend_from_slice(&mp(&serde_json::json!({"compressed": "gzip"})));
        assert_eq!(
            entries(&decode(&msg).expect("d").0)
                .expect("compressed")
                .1
                .len(),
            3
        );
    }

    #[test]
    fn truncated_and_hostile_bytes_are_incomplete_or_malformed_never_a_panic() {
        let msg = mp(&serde_json::json!(["t", 1, {"message": "x"}]));
        for cut in 0..msg.len() {
            assert_eq!(
                decode(&msg[..cut]).map(|_| ()),
                Err(DecodeError::Incomplete)
            );
        }
        assert_eq!(decode(&[0xc1]).map(|_| ()), Err(DecodeError::Malformed));
        let deep = vec![0x91; 100];
        assert!(decode(&deep).is_err());
        // A 4-billion-element claim is not an allocation: it waits for data that the
        // connection's limit never lets come.
        assert_eq!(
            decode(&[0xdd, 0xff, 0xff, 0xff, 0xff]).map(|_| ()),
            Err(DecodeError::Incomplete)
        );
        for _ in 0..1000 {
            let n = rand::random::<u8>() as usize % 40;
            let junk: Vec<u8> = (0..n).map(|_| rand::random::<u8>()).collect();
            if let Ok((v, _)) = decode(&junk) {
                let _ = entries(&v);
            }
        }
        assert!(entries(&Value::Int(1)).is_err());
    }

    /// By hand (`cargo test --release -p telltale-agent --lib forward_message_cost -- --ignored
    /// --nocapture`): the CPU a 16 MiB Forward-mode message costs when it arrives 64 KiB at a
    /// time, decoding every prefix (before) and scanning resumably (now).
    #[test]
    #[ignore]
    fn forward_message_cost() {
        let entry = mp(&serde_json::json!([1_700_000_000u32, {"log": "GET /x 200", "n": 1}]));
        let count = (16 << 20) / entry.len();
        let mut msg = vec![0x92, 0xa1, b't', 0xdd];
        msg.extend_from_slice(&(count as u32).to_be_bytes());
        for _ in 0..count {
            msg.extend_from_slice(&entry);
        }
        let cuts: Vec<usize> = (1..=msg.len().div_ceil(64 << 10))
            .map(|k| (k * (64 << 10)).min(msg.len()))
            .collect();
        let t = std::time::Instant::now();
        let mut found = None;
        for &c in &cuts {
            if let Ok((_, n)) = decode(&msg[..c]) {
                found = Some(n);
            }
        }
        let before = t.elapsed();
        assert_eq!(found, Some(msg.len()));
        let t = std::time::Instant::now();
        let mut scan = Scan::default();
        let mut end = None;
        for &c in &cuts {
            if let Ok(Some(n)) = scan.advance(&msg[..c]) {
                end = Some(n);
            }
        }
        let (_, n) = decode(&msg[..end.expect("whole")]).expect("decodes");
        let now = t.elapsed();
        assert_eq!(n, msg.len());
        println!(
            "{} entries, {} reads: decoding every prefix {before:?}, scanning then decoding once {now:?} ({:.0}x)",
            count,
            cuts.len(),
            before.as_secs_f64() / now.as_secs_f64()
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        /// The resumable scan finds, at every prefix of any bytes — real messages of every
        /// MessagePack type, nested ones, garbage after them, pure garbage — what decoding
        /// that prefix finds: the same end, incomplete where it is incomplete, malformed where
        /// it is malformed; fed the prefixes one after another, as reads arrive.
        #[test]
        fn the_scan_agrees_with_decoding_at_every_prefix(
            kind in 0u8..4,
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..48),
            depth in 0usize..40,
            n in 0usize..300,
        ) {
            let mut bytes = match kind {
                0 => mp(&serde_json::json!(["tag", [[1_700_000_000u32, {"m": "x".repeat(n), "n": -5, "f": 1.5}], [2, {"a": [1, 2, {"b": null}]}]], {"chunk": "c"}])),
                1 => {
                    // Every marker family: bin, ext, fixext, float32, ints of each width, str8-32.
                    let mut v = vec![0x9f];
                    v.extend([0xc4, 2, 1, 2, 0xc5, 0, 1, 9, 0xc7, 1, 0, 7, 0xd4, 0, 1, 0xd8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                    v.extend([0xca, 0, 0, 0, 0, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, 0xcc, 1, 0xcd, 0, 1, 0xce, 0, 0, 0, 1, 0xcf, 0, 0, 0, 0, 0, 0, 0, 1]);
                    v.extend([0xd0, 0xff, 0xd1, 0, 1, 0xd2, 0, 0, 0, 1, 0xd3, 0, 0, 0, 0, 0, 0, 0, 1, 0xd9, 1, b'a', 0xda, 0, 1, b'b', 0xdb, 0, 0, 0, 1, b'c']);
                    v.extend([0xc0, 0xc2, 0xde, 0, 1, 0xc3, 0xdc, 0, 0]);
                    v
                }
                2 => {
                    // Nested arrays around one map: past the depth limit from 33 levels.
                    let mut v = vec![0x91; depth];
                    v.extend([0x81, 0xa1, b'k', 0x05]);
                    v
                }
                _ => Vec::new(),
            };
            bytes.extend(&junk);
            let mut scan = Scan::default();
            let mut failed = false;
            for cut in 0..=bytes.len() {
                let want = decode(&bytes[..cut]).map(|(_, n)| n);
                let got = if failed {
                    Err(DecodeError::Malformed)
                } else {
                    scan.advance(&bytes[..cut])
                };
                failed |= got.is_err();
                match (&want, &got) {
                    (Ok(n), Ok(Some(m))) => proptest::prop_assert_eq!(n, m, "cut {}", cut),
                    (Err(DecodeError::Incomplete), Ok(None)) => {}
                    (Err(DecodeError::Malformed), Err(DecodeError::Malformed)) => {}
                    _ => proptest::prop_assert!(false, "cut {}: decode {:?}, scan {:?}", cut, want, got),
                }
                if want.is_ok() {
                    break;
                }
            }
        }
    }
}
