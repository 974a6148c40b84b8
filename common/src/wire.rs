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

/// The sequence of a batch.
#[derive(Debug, Deserialize)]
pub struct BatchHead {
    /// See [`Batch::sequence`].
    pub sequence: u64,
}
