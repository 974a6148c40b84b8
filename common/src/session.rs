//! The agent ↔ aggregator session as two state machines without I/O (in the manner of
//! quinn-proto): bytes and the clock go in, events and frames to write come out. The agent's
//! shipper and the aggregator's ingest only move bytes between these and a QUIC stream, so
//! every protocol rule — hello first, the welcome or refusal, the in-flight window and its
//! acknowledgements, commands and their results resent on every new connection until
//! acknowledged — is tested here with a client and a server joined in memory (see the tests:
//! reconnects, lost acknowledgements, replays, a command interrupted by a reconnect).
//!
//! The conversation is described in [`crate::wire`].

use std::collections::{BTreeMap, HashSet};

use crate::codec::{self, CodecError, FrameDecoder};
use crate::wire::{
    ClientMessage, ClientMessageHead, Command, CommandResult, Hello, ServerMessage, Welcome,
};
use crate::{PROTOCOL_VERSION, VERSION};

/// Why a session cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A frame was malformed (bad header, checksum, size or payload).
    #[error("bad frame: {0}")]
    Frame(#[from] CodecError),
    /// The peer said something out of turn.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The aggregator refused the agent (version, certificate...).
    #[error("refused by the aggregator: {0}")]
    Refused(String),
}

fn frame(m: &impl serde::Serialize) -> Vec<u8> {
    // Encoding our own enums cannot fail (named MessagePack of plain data); an empty frame
    // would only be an empty write.
    codec::encode_frame(m).unwrap_or_default()
}

/// What the client learns from the aggregator.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// The aggregator accepted the hello; batches may flow.
    Welcomed {
        /// The agent's name, from its certificate.
        agent: String,
    },
    /// Batch `sequence` is durable: it may leave the buffer.
    Acked {
        /// The batch.
        sequence: u64,
        /// Its samples, if it was sent on this connection.
        samples: Option<u32>,
        /// Time from sending to acknowledgement (in the unit of the clock given to
        /// [`Client::poll`]), if sent on this connection.
        latency: Option<i64>,
    },
    /// Batch `sequence` can never be stored: drop it.
    Rejected {
        /// The batch.
        sequence: u64,
        /// Why.
        reason: String,
    },
    /// Run this command (or refuse it: see [`Client::refusal`]).
    Command(Command),
    /// The aggregator has the result of command `id`: forget it.
    ResultAcked(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    AwaitingWelcome,
    Open,
}

/// The agent's side of one connection.
#[derive(Debug)]
pub struct Client {
    state: ClientState,
    decoder: FrameDecoder,
    max_in_flight: usize,
    /// Sent and not acknowledged: sequence → (sent at, samples).
    in_flight: BTreeMap<u64, (i64, u32)>,
    /// Results sent on this connection (a new connection sends every unacknowledged one).
    results_sent: HashSet<String>,
    /// When the aggregator last answered anything (`poll`'s clock), `i64::MIN` before.
    last_heard: i64,
}

impl Client {
    /// A new connection's client and the hello frame to write first.
    pub fn new(hello: &Hello, max_in_flight: usize) -> (Client, Vec<u8>) {
        let c = Client {
            state: ClientState::AwaitingWelcome,
            decoder: FrameDecoder::new(codec::DEFAULT_MAX_FRAME),
            max_in_flight: max_in_flight.max(1),
            in_flight: BTreeMap::new(),
            results_sent: HashSet::new(),
            last_heard: i64::MIN,
        };
        (c, frame(&ClientMessage::Hello(hello.clone())))
    }

    /// The hello of this agent (version, buffer epoch, what it can run).
    pub fn hello(epoch: u64, actions: Option<Vec<String>>) -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_version: VERSION.to_string(),
            epoch,
            capabilities: match &actions {
                Some(_) => vec![crate::wire::CAP_REMEDIATION.to_string()],
                None => Vec::new(),
            },
            actions: actions.unwrap_or_default(),
            sources: Vec::new(),
        }
    }

    /// Bytes read from the stream.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        Ok(self.decoder.push(bytes)?)
    }

    /// The stream ended: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), SessionError> {
        Ok(self.decoder.finish()?)
    }

    /// The next event from what was received, if a whole message is there. `now` is any
    /// monotonic clock (the shipper uses microseconds); latencies come back in its unit.
    pub fn poll(&mut self, now: i64) -> Result<Option<ClientEvent>, SessionError> {
        let Some(p) = self.decoder.poll_frame()? else {
            return Ok(None);
        };
        let m: ServerMessage = codec::decode_payload(&p)?;
        self.last_heard = now;
        let ev = match (self.state, m) {
            (ClientState::AwaitingWelcome, ServerMessage::Welcome(w)) => {
                self.state = ClientState::Open;
                ClientEvent::Welcomed { agent: w.agent }
            }
            (ClientState::AwaitingWelcome, ServerMessage::Refused { reason }) => {
                return Err(SessionError::Refused(reason));
            }
            (ClientState::AwaitingWelcome, other) => {
                return Err(SessionError::Protocol(format!(
                    "expected welcome, got {other:?}"
                )));
            }
            (ClientState::Open, ServerMessage::Ack { sequence }) => {
                let sent = self.in_flight.remove(&sequence);
                ClientEvent::Acked {
                    sequence,
                    samples: sent.map(|s| s.1),
                    latency: sent.map(|s| now - s.0),
                }
            }
            (ClientState::Open, ServerMessage::Rejected { sequence, reason }) => {
                self.in_flight.remove(&sequence);
                ClientEvent::Rejected { sequence, reason }
            }
            (ClientState::Open, ServerMessage::Command(c)) => ClientEvent::Command(c),
            (ClientState::Open, ServerMessage::CommandAck { id }) => {
                self.results_sent.remove(&id);
                ClientEvent::ResultAcked(id)
            }
            (ClientState::Open, other) => {
                return Err(SessionError::Protocol(format!("unexpected {other:?}")));
            }
        };
        Ok(Some(ev))
    }

    /// Whether the welcome came.
    pub fn is_open(&self) -> bool {
        self.state == ClientState::Open
    }

    /// How many more batches may be sent now.
    pub fn room(&self) -> usize {
        if self.is_open() {
            self.max_in_flight.saturating_sub(self.in_flight.len())
        } else {
            0
        }
    }

    /// Whether batch `sequence` is sent and unacknowledged.
    pub fn is_in_flight(&self, sequence: u64) -> bool {
        self.in_flight.contains_key(&sequence)
    }

    /// Unacknowledged batches.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Records that batch `sequence` (its frame as the buffer holds it) was written at `now`.
    pub fn sent(&mut self, sequence: u64, samples: u32, now: i64) {
        self.in_flight.insert(sequence, (now, samples));
    }

    /// When the connection counts as stuck: `timeout` after the oldest unacknowledged batch
    /// was sent *and* after the aggregator last answered; `None` with nothing in flight.
    ///
    /// An aggregator that answers is alive, however slowly: after a restart it works through
    /// every agent's backlog at once and acknowledgements can lag well past `timeout`.
    /// Reconnecting then throws away the work in progress, costs a handshake and sends the
    /// whole window again — the retry storm that kept a restarted 10 000-agent fleet from
    /// ever settling (`telltale-bench fleet`). A dead one answers nothing.
    pub fn ack_deadline(&self, timeout: i64) -> Option<i64> {
        let oldest = self.in_flight.values().map(|s| s.0).min()?;
        Some(oldest.max(self.last_heard).saturating_add(timeout))
    }

    /// The frames of the results not yet sent on this connection.
    pub fn results(&mut self, pending: Vec<CommandResult>) -> Vec<u8> {
        let mut out = Vec::new();
        for r in pending {
            if self.results_sent.insert(r.id.clone()) {
                out.extend(frame(&ClientMessage::CommandResult(r)));
            }
        }
        out
    }

    /// The frame refusing a command this agent cannot run (it announced no actions).
    pub fn refusal(c: &Command) -> Vec<u8> {
        frame(&ClientMessage::CommandResult(CommandResult {
            id: c.id.clone(),
            status: "refused".into(),
            reason: "this agent has no actions configured".into(),
            exit_code: None,
            started_ms: 0,
            duration_ms: 0,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
        }))
    }
}

/// What the server learns from an agent.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// The agent's hello, accepted: write [`Server::welcome`].
    Hello(Hello),
    /// A batch to store, as its payload (the sequence is all that was decoded); write
    /// [`Server::ack`] once it is durable.
    Batch {
        /// The batch's sequence.
        sequence: u64,
        /// When the agent made it (ms since the epoch; 0 from a sender that does not say).
        created_ms: i64,
        /// The MessagePack payload, for storage to walk.
        payload: Vec<u8>,
    },
    /// A command's result; write [`Server::command_ack`] once it is taken.
    CommandResult(CommandResult),
}

/// Why a hello is refused: the frame to write before closing, and the reason.
#[derive(Debug)]
pub struct Refusal {
    /// The `Refused` frame.
    pub frame: Vec<u8>,
    /// Why.
    pub reason: String,
}

/// The aggregator's side of one connection.
#[derive(Debug)]
pub struct Server {
    decoder: FrameDecoder,
    hello: bool,
}

impl Server {
    /// A new connection's server, accepting frames up to `max_frame` bytes.
    pub fn new(max_frame: u32) -> Server {
        Server {
            decoder: FrameDecoder::new(max_frame),
            hello: false,
        }
    }

    /// Bytes read from the stream.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        Ok(self.decoder.push(bytes)?)
    }

    /// The stream ended: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), SessionError> {
        Ok(self.decoder.finish()?)
    }

    /// Whether the hello came.
    pub fn greeted(&self) -> bool {
        self.hello
    }

    /// The next event, if a whole message is there. A hello of an unsupported protocol
    /// version is `Err(Ok(refusal))`; a protocol error is `Err(Err(e))`.
    #[allow(clippy::type_complexity)]
    pub fn poll(&mut self) -> Result<Option<ServerEvent>, Result<Refusal, SessionError>> {
        let p = match self.decoder.poll_frame() {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(None),
            Err(e) => return Err(Err(e.into())),
        };
        if !self.hello {
            let m: ClientMessage = codec::decode_payload(&p).map_err(|e| Err(e.into()))?;
            let ClientMessage::Hello(h) = m else {
                let kind = match m {
                    ClientMessage::Batch(_) => "batch",
                    _ => "command result",
                };
                return Err(Err(SessionError::Protocol(format!(
                    "expected a hello first, got a {kind}"
                ))));
            };
            if h.protocol_version != PROTOCOL_VERSION {
                let reason = format!(
                    "protocol version {} is not supported; aggregator {VERSION} speaks version {PROTOCOL_VERSION}",
                    h.protocol_version
                );
                return Err(Ok(Refusal {
                    frame: frame(&ServerMessage::Refused {
                        reason: reason.clone(),
                    }),
                    reason,
                }));
            }
            self.hello = true;
            return Ok(Some(ServerEvent::Hello(h)));
        }
        // Only the sequence and creation time here; storage decodes the rest without copying strings.
        match codec::decode_payload::<ClientMessageHead>(&p) {
            Ok(ClientMessageHead::Batch(b)) => Ok(Some(ServerEvent::Batch {
                sequence: b.sequence,
                created_ms: b.created_ms,
                payload: p,
            })),
            Ok(ClientMessageHead::CommandResult(r)) => Ok(Some(ServerEvent::CommandResult(r))),
            Ok(ClientMessageHead::Hello(_)) => Err(Err(SessionError::Frame(
                CodecError::Malformed("unexpected hello after the handshake".into()),
            ))),
            Err(e) => Err(Err(e.into())),
        }
    }

    /// The welcome frame for `agent`.
    pub fn welcome(agent: &str, max_frame: u32) -> Vec<u8> {
        frame(&ServerMessage::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            agent: agent.to_string(),
            max_frame_bytes: max_frame,
        }))
    }

    /// The frame of a server message (acknowledgements, rejections, commands).
    pub fn message(m: &ServerMessage) -> Vec<u8> {
        frame(m)
    }
}

#[cfg(test)]
mod tests;
