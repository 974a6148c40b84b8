//! The messages of the agent ↔ aggregator protocol.
//!
//! One bidirectional QUIC stream per connection carries the conversation, opened by the agent:
//!
//! 1. agent → [`ClientMessage::Hello`] with its protocol version;
//! 2. aggregator → [`ServerMessage::Welcome`] (or [`ServerMessage::Refused`] and a close);
//! 3. agent → any number of [`ClientMessage::Batch`], several in flight;
//! 4. aggregator → [`ServerMessage::Ack`] for each batch once it is durable, in any order, or
//!    [`ServerMessage::Rejected`] for a batch it will never accept (the agent drops it);
//! 5. remediation, only with agents whose hello lists the `remediation` capability: aggregator
//!    → [`ServerMessage::Command`] (an action of the agent's own allowlist, by name, with
//!    parameters, an id and a deadline); agent → [`ClientMessage::CommandResult`] once it ran or
//!    was refused (kept and resent until aggregator → [`ServerMessage::CommandAck`]).
//!
//! Log lines travel in the same batches as samples, in the optional [`Batch::logs`] field (see
//! [`LogStream`]): the agent puts them in batches of their own, which an aggregator from
//! before logs acknowledges and ignores. Spans travel the same way, in [`Batch::spans`].
//!
//! The agent's name is never in a message: the aggregator takes it from the client certificate.
//! Messages are MessagePack maps with named fields (`rmp_serde::to_vec_named`), so a field added
//! later is ignored by an older peer instead of breaking it.

use serde::{Deserialize, Serialize};

use crate::model::SeriesSamples;

/// What the agent sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// The first message on a connection.
    Hello(Hello),
    /// A batch of samples.
    Batch(Batch),
    /// The outcome of a [`ServerMessage::Command`].
    CommandResult(CommandResult),
}

/// The capability an agent announces when it can take commands.
pub const CAP_REMEDIATION: &str = "remediation";

/// QUIC application codes the aggregator closes agent connections with.
pub mod aggregator_close {
    /// Normal shutdown.
    pub const SHUTDOWN: u32 = 0;
    /// The certificate did not name a valid agent.
    pub const BAD_IDENTITY: u32 = 1;
    /// A frame was oversized, corrupt or not a valid message.
    pub const BAD_FRAME: u32 = 2;
    /// The handshake failed (wrong version, missing hello).
    pub const HANDSHAKE: u32 = 3;
    /// A newer connection of the same agent (the same certificate) replaced this one.
    pub const REPLACED: u32 = 4;
    /// The aggregator cannot store what it is sent (a full or failing disk): the agent keeps
    /// its data and waits its longest backoff before trying again.
    pub const STORAGE: u32 = 5;
}

/// QUIC application codes an agent closes its connections with (beside 0, a shutdown or a
/// reconnection).
pub mod agent_close {
    /// A connection made only to learn whether the aggregator is back (no session).
    pub const PROBE: u32 = 16;
    /// The agent moves to another aggregator of its list (failover or sharding): it is not
    /// down, so the aggregator it leaves ends its `up` series instead of writing 0.
    pub const MOVED: u32 = 17;
}

/// A request to run an allowlisted action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Unique id; an agent runs an id at most once, however often it is sent.
    pub id: String,
    /// The action's name in the agent's allowlist.
    pub action: String,
    /// Parameters, each validated by the agent against the action's pattern.
    pub params: Vec<(String, String)>,
    /// After this (ms since the epoch) the command must not start.
    pub deadline_ms: i64,
    /// Validate only; run nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What became of a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The command's id.
    pub id: String,
    /// `succeeded`, `failed` (non-zero exit), `timeout`, `refused` (not allowed, invalid
    /// parameter, rate or concurrency limit), `expired` (past its deadline), `dry_run` (valid,
    /// not run), `error` (could not start).
    pub status: String,
    /// Why, for refusals and errors.
    #[serde(default)]
    pub reason: String,
    /// The exit code, when it ran to the end.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// When it started (ms since the epoch), 0 if it did not.
    #[serde(default)]
    pub started_ms: i64,
    /// How long it ran (ms).
    #[serde(default)]
    pub duration_ms: u64,
    /// The end of its standard output (at most 4 KiB).
    #[serde(default)]
    pub stdout_tail: String,
    /// The end of its standard error (at most 4 KiB).
    #[serde(default)]
    pub stderr_tail: String,
}

/// What the aggregator sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// The handshake was accepted.
    Welcome(Welcome),
    /// The handshake was refused; the connection closes after this.
    Refused {
        /// Why, in words an operator can act on.
        reason: String,
    },
    /// Batch `sequence` is durable (or was already stored before): the agent may forget it.
    Ack {
        /// The acknowledged batch.
        sequence: u64,
    },
    /// Batch `sequence` can never be stored (for example it is invalid); the agent drops it.
    Rejected {
        /// The refused batch.
        sequence: u64,
        /// Why.
        reason: String,
    },
    /// Run an action of the agent's allowlist (see [`Command`]).
    Command(Command),
    /// The result of command `id` is recorded: the agent may forget it.
    CommandAck {
        /// The command.
        id: String,
    },
}

/// The agent's handshake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The wire protocol version the agent speaks.
    pub protocol_version: u16,
    /// The agent's software version, for `/api/v1/agents`.
    pub agent_version: String,
    /// Random identity of the agent's buffer, made when the buffer is created. Sequences are
    /// unique within one epoch: an agent whose data directory was wiped starts a new epoch, so
    /// its restarted sequence numbers are not mistaken for replays.
    #[serde(default)]
    pub epoch: u64,
    /// What the agent can do beyond shipping ([`CAP_REMEDIATION`] when it has actions).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The names of the actions of its allowlist, so a runbook naming one it lacks is caught
    /// before a command is sent (empty from agents before this field: then unknown).
    #[serde(default)]
    pub actions: Vec<String>,
    /// The agent's sources (`host`, `scrape:<job>`, `statsd`, `textfile`, `check:<name>`,
    /// `logs:<kind>`, `traces`), for the aggregator's pipeline diagram. Empty from agents
    /// before this field; absent on the wire when empty (so such a hello is byte for byte
    /// what it was).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

/// The aggregator's answer to a hello.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version the aggregator speaks.
    pub protocol_version: u16,
    /// The agent name the aggregator read from the client certificate.
    pub agent: String,
    /// Highest batch size in bytes the aggregator accepts.
    pub max_frame_bytes: u32,
}

/// A batch of samples, identified by the agent's sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Monotonic per agent, never reused, even across restarts.
    pub sequence: u64,
    /// When the agent made the batch (ms since the epoch).
    pub created_ms: i64,
    /// The series and their samples.
    pub series: Vec<SeriesSamples>,
    /// Events that happened on the host (a health check changing state, for example). Absent
    /// on the wire when empty, so batches without events are byte-for-byte what they were.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
    /// Log lines by stream. Absent on the wire when empty (so metric batches are byte for
    /// byte what they were); an aggregator from before logs ignores the field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogStream>,
    /// Spans (see [`crate::trace::Span`]), in batches of their own like log lines: absent on
    /// the wire when empty; an aggregator from before traces acknowledges and ignores them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spans: Vec<crate::trace::Span>,
    /// Exemplars of the batch's series (trace ids of spans counted into a histogram bucket,
    /// for example): absent when empty; an aggregator from before them ignores the field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exemplars: Vec<ExemplarSeries>,
}

/// The exemplars of one series: `labels` as the series' own (after the agent's pipeline),
/// `exemplars` oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExemplarSeries {
    /// The series' labels, `__name__` included.
    pub labels: Vec<(String, String)>,
    /// Its exemplars.
    pub exemplars: Vec<Exemplar>,
}

/// One exemplar (OpenMetrics'): labels such as `trace_id`, a value and a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exemplar {
    /// Its labels (`trace_id`, `span_id`).
    pub labels: Vec<(String, String)>,
    /// When (ms since the epoch).
    pub t_ms: i64,
    /// The observed value.
    pub value: f64,
}

/// The lines of one log stream in a batch.
///
/// On the wire (MessagePack map, named fields): `labels` — an array of `[name, value]` pairs,
/// the stream's identity (the source's name and its configured and extracted labels; the
/// aggregator adds `instance` from the agent's certificate, as for series); `entries` — an
/// array of [`LogEntry`] maps in the order the lines were read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogStream {
    /// The stream's labels (low cardinality: they name the stream, not the line).
    pub labels: Vec<(String, String)>,
    /// Its lines.
    pub entries: Vec<LogEntry>,
}

/// One log line.
///
/// On the wire: `t_ns` (integer, nanoseconds since the epoch, as Loki counts), `line` (UTF-8
/// string; invalid bytes were replaced by U+FFFD at the source), and `metadata` (absent when
/// empty: an array of `[name, value]` pairs of fields parsed from the line that are not
/// labels — Loki's structured metadata).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When the line was written (ns since the epoch).
    pub t_ns: i64,
    /// The line.
    pub line: String,
    /// Parsed fields that are not labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata: Vec<(String, String)>,
}

impl LogStream {
    /// Bytes of its lines (what rate limits, caps and `bytes_over_time` count).
    pub fn line_bytes(&self) -> usize {
        self.entries.iter().map(|e| e.line.len()).sum()
    }
}

/// Something that happened on the host at one moment, with words for a person: a health check
/// changing state, for example. Labels say what it is about (`check`, `state`, ...); the
/// aggregator adds `instance` from the agent's certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened (ms since the epoch).
    pub t_ms: i64,
    /// What kind of event: `check_state` for a health check changing state.
    pub kind: String,
    /// What it is about, sorted by name.
    pub labels: Vec<(String, String)>,
    /// A sentence for a person.
    pub message: String,
}

impl Batch {
    /// Number of samples in the batch.
    pub fn sample_count(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }
}

/// A batch decoded without copying its strings: label names and values borrow from the
/// payload. The aggregator's hot path decodes this instead of [`Batch`], which would allocate
/// two strings per label per series.
#[derive(Debug, Deserialize)]
pub struct BatchRef<'a> {
    /// See [`Batch::sequence`].
    pub sequence: u64,
    /// See [`Batch::created_ms`].
    #[serde(default)]
    pub created_ms: i64,
    /// The series, borrowing from the payload.
    #[serde(borrow)]
    pub series: Vec<SeriesRef<'a>>,
    /// See [`Batch::events`].
    #[serde(default)]
    pub events: Vec<Event>,
}

/// One series of a [`BatchRef`].
#[derive(Debug, Deserialize)]
pub struct SeriesRef<'a> {
    /// `(name, value)` pairs as sent (not necessarily sorted).
    #[serde(borrow)]
    pub labels: Vec<(&'a str, &'a str)>,
    /// The samples.
    pub samples: Vec<crate::model::Sample>,
}

/// [`ClientMessage`] decoded borrowing from its payload.
#[derive(Debug, Deserialize)]
pub enum ClientMessageRef<'a> {
    /// See [`ClientMessage::Hello`].
    Hello(Hello),
    /// See [`ClientMessage::Batch`].
    #[serde(borrow)]
    Batch(BatchRef<'a>),
    /// See [`ClientMessage::CommandResult`].
    CommandResult(CommandResult),
}

/// Only what the aggregator's connection loop needs of a client message: which kind it is and
/// a batch's sequence. The rest is skipped without allocating.
#[derive(Debug, Deserialize)]
pub enum ClientMessageHead {
    /// A hello.
    Hello(Hello),
    /// A batch, by its sequence.
    Batch(BatchHead),
    /// A command's result.
    CommandResult(CommandResult),
}

/// The sequence of a batch and when it was made.
#[derive(Debug, Deserialize)]
pub struct BatchHead {
    /// See [`Batch::sequence`].
    pub sequence: u64,
    /// See [`Batch::created_ms`] (0 when absent).
    #[serde(default)]
    pub created_ms: i64,
}

/// The `logs` of a `ClientMessage::Batch` payload, found without decoding its series (their
/// bytes are skipped): what the aggregator's ingest hands to the log store. Empty for any
/// other message and for batches without logs.
pub fn batch_logs(payload: &[u8]) -> Result<Vec<LogStream>, crate::codec::CodecError> {
    batch_field(payload, "logs")
}

/// The `spans` of a `ClientMessage::Batch` payload, found like [`batch_logs`] (empty for any
/// other message and for batches without spans).
pub fn batch_spans(payload: &[u8]) -> Result<Vec<crate::trace::Span>, crate::codec::CodecError> {
    batch_field(payload, "spans")
}

/// The `exemplars` of a `ClientMessage::Batch` payload, found like [`batch_logs`].
pub fn batch_exemplars(payload: &[u8]) -> Result<Vec<ExemplarSeries>, crate::codec::CodecError> {
    batch_field(payload, "exemplars")
}

/// Field `name` of a batch payload, decoded alone; its default when absent.
fn batch_field<T: serde::de::DeserializeOwned + Default>(
    payload: &[u8],
    name: &str,
) -> Result<T, crate::codec::CodecError> {
    let bad = || crate::codec::CodecError::Malformed("not a batch as rmp_serde writes it".into());
    let mut r = scan::Reader::new(payload);
    // An externally tagged enum: a map of one entry, the variant's name to its fields.
    if r.map_len().ok_or_else(bad)? != 1 || r.str().ok_or_else(bad)? != "Batch" {
        return Ok(T::default());
    }
    let fields = r.map_len().ok_or_else(bad)?;
    for _ in 0..fields {
        let key = r.str().ok_or_else(bad)?;
        let start = r.pos();
        r.skip().ok_or_else(bad)?;
        if key == name {
            return crate::codec::decode_payload(&payload[start..r.pos()]);
        }
    }
    Ok(T::default())
}

mod scan {
    //! Just enough of MessagePack to walk a map and skip values.

    pub struct Reader<'a> {
        b: &'a [u8],
        pos: usize,
    }

    impl<'a> Reader<'a> {
        pub fn new(b: &'a [u8]) -> Self {
            Reader { b, pos: 0 }
        }

        pub fn pos(&self) -> usize {
            self.pos
        }

        fn byte(&mut self) -> Option<u8> {
            let v = *self.b.get(self.pos)?;
            self.pos += 1;
            Some(v)
        }

        fn be(&mut self, n: usize) -> Option<usize> {
            let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
            self.pos += n;
            Some(s.iter().fold(0usize, |a, &x| (a << 8) | usize::from(x)))
        }

        fn advance(&mut self, n: usize) -> Option<()> {
            let end = self.pos.checked_add(n)?;
            (end <= self.b.len()).then(|| self.pos = end)
        }

        pub fn map_len(&mut self) -> Option<usize> {
            match self.byte()? {
                m @ 0x80..=0x8f => Some(usize::from(m & 0x0f)),
                0xde => self.be(2),
                0xdf => self.be(4),
                _ => None,
            }
        }

        pub fn str(&mut self) -> Option<&'a str> {
            let n = match self.byte()? {
                m @ 0xa0..=0xbf => usize::from(m & 0x1f),
                0xd9 => self.be(1)?,
                0xda => self.be(2)?,
                0xdb => self.be(4)?,
                _ => return None,
            };
            let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
            self.pos += n;
            std::str::from_utf8(s).ok()
        }

        /// Skips one value (iteratively: nesting depth cannot overflow the stack).
        pub fn skip(&mut self) -> Option<()> {
            let mut pending: usize = 1;
            while pending > 0 {
                pending -= 1;
                let m = self.byte()?;
                let (skip, items) = match m {
                    0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
                    0x80..=0x8f => (0, 2 * usize::from(m & 0x0f)),
                    0x90..=0x9f => (0, usize::from(m & 0x0f)),
                    0xa0..=0xbf => (usize::from(m & 0x1f), 0),
                    0xc4 | 0xd9 => (self.be(1)?, 0),
                    0xc5 | 0xda => (self.be(2)?, 0),
                    0xc6 | 0xdb => (self.be(4)?, 0),
                    0xc7 => (self.be(1)? + 1, 0),
                    0xc8 => (self.be(2)? + 1, 0),
                    0xc9 => (self.be(4)? + 1, 0),
                    0xca | 0xce | 0xd2 => (4, 0),
                    0xcb | 0xcf | 0xd3 => (8, 0),
                    0xcc | 0xd0 => (1, 0),
                    0xcd | 0xd1 => (2, 0),
                    0xd4 => (2, 0),
                    0xd5 => (3, 0),
                    0xd6 => (5, 0),
                    0xd7 => (9, 0),
                    0xd8 => (17, 0),
                    0xdc => (0, self.be(2)?),
                    0xdd => (0, self.be(4)?),
                    0xde => (0, 2 * self.be(2)?),
                    0xdf => (0, 2 * self.be(4)?),
                    _ => return None,
                };
                self.advance(skip)?;
                // Each item takes at least a byte: a count beyond the rest is damage.
                if items > self.b.len() - self.pos {
                    return None;
                }
                pending += items;
            }
            Some(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Labels, Sample};

    fn batch(series: usize, logs: Vec<LogStream>) -> Vec<u8> {
        batch_with(series, logs, Vec::new())
    }

    fn batch_with(series: usize, logs: Vec<LogStream>, spans: Vec<crate::trace::Span>) -> Vec<u8> {
        crate::codec::encode_payload(&ClientMessage::Batch(Batch {
            sequence: 3,
            created_ms: 4,
            series: (0..series)
                .map(|i| SeriesSamples {
                    labels: Labels::from_pairs([("__name__", "m"), ("i", &*i.to_string())]),
                    samples: vec![Sample(1, 2.5), Sample(2, f64::NAN)],
                })
                .collect(),
            events: Vec::new(),
            spans,
            exemplars: Vec::new(),
            logs,
        }))
        .expect("encodes")
    }

    #[test]
    fn logs_are_found_past_any_series_and_absent_ones_are_empty() {
        let logs = vec![LogStream {
            labels: vec![("source".into(), "app".into())],
            entries: vec![LogEntry {
                t_ns: 1,
                line: "hello".into(),
                metadata: vec![("k".into(), "v".into())],
            }],
        }];
        assert_eq!(batch_logs(&batch(50, logs.clone())).expect("logs"), logs);
        assert!(batch_logs(&batch(50, Vec::new())).expect("none").is_empty());
        let hello = crate::codec::encode_payload(&ClientMessage::Hello(Hello {
            protocol_version: 1,
            agent_version: "x".into(),
            epoch: 1,
            capabilities: Vec::new(),
            actions: Vec::new(),
            sources: Vec::new(),
        }))
        .expect("encodes");
        assert!(batch_logs(&hello).expect("not a batch").is_empty());
        // Cut anywhere, or garbage: an error or nothing, never a panic.
        let full = batch(3, logs);
        for cut in 0..full.len() {
            let _ = batch_logs(&full[..cut]);
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..500 {
            let junk: Vec<u8> = (0..32)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = batch_logs(&junk);
        }
    }

    #[test]
    fn spans_are_found_beside_series_and_logs() {
        let span = crate::trace::Span {
            trace_id: [7; 16],
            span_id: [9; 8],
            parent: Some([1; 8]),
            service: "checkout".into(),
            name: "GET /cart".into(),
            kind: crate::trace::SpanKind::Server,
            start_ns: 1_700_000_000_000_000_000,
            end_ns: 1_700_000_000_250_000_000,
            status: crate::trace::SpanStatus::Error,
            status_message: "boom".into(),
            attributes: vec![("http.status_code".into(), "500".into())],
            resource: vec![("host.name".into(), "web-1".into())],
            events: vec![crate::trace::SpanEvent {
                t_ns: 1_700_000_000_100_000_000,
                name: "exception".into(),
                attributes: Vec::new(),
            }],
            links: Vec::new(),
        };
        let logs = vec![LogStream {
            labels: vec![("source".into(), "app".into())],
            entries: Vec::new(),
        }];
        let p = batch_with(20, logs.clone(), vec![span.clone(), span.clone()]);
        assert_eq!(batch_spans(&p).expect("spans"), vec![span.clone(), span]);
        assert_eq!(batch_logs(&p).expect("logs"), logs);
        assert!(batch_spans(&batch(5, logs)).expect("none").is_empty());
        for cut in 0..p.len() {
            let _ = batch_spans(&p[..cut]);
        }
    }
}
