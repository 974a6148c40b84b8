//! Ships buffered batches to the aggregator over QUIC with mutual TLS.
//!
//! One connection, one bidirectional stream: hello, welcome, then batches out and
//! acknowledgements back. Up to `max_in_flight` batches are unacknowledged at once. After an
//! outage the backlog drains oldest-first, but every other send slot goes to the newest batch,
//! so fresh data keeps flowing while the backlog drains. A batch leaves the buffer only when
//! its acknowledgement arrives. Reconnects back off exponentially (0.5 s doubling to 5 s) with
//! full jitter, so a fleet does not reconnect in lockstep after an aggregator restart. An
//! aggregator that closes the connection because it cannot store data
//! ([`aggregator_close::STORAGE`](telltale_common::wire::aggregator_close::STORAGE), a full
//! disk) is tried again after 2.5 to 5 s, however much it stored before; with several, the
//! next one is tried at once, the wait comes when all of them said so in a row, and the
//! failback probes leave it out for a minute.
//!
//! With several aggregators (`aggregators`, in this agent's order of preference), a failed
//! connection attempt or a lost session moves on to the next one at once (the backoff applies
//! once all failed in a row). While on a later one, the
//! earlier ones are probed every [`FAILBACK_PROBE`] (a QUIC handshake, closed at once with
//! [`agent_close::PROBE`]); when one answers, the session ends as at a shutdown (acknowledgements
//! in flight awaited briefly) and closes with [`agent_close::MOVED`], so the aggregator left
//! behind knows the agent moved rather than went down.
//!
//! The protocol's state (hello and welcome, the window, acknowledgements, commands and their
//! results) is [`telltale_common::session::Client`]'s; this driver moves bytes between it, the
//! QUIC stream, the buffer and a [`RemediationLink`] — two channels to whatever runs
//! commands (the executor, wired in `run.rs`; the shipper does not know it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use telltale_common::session::{Client, ClientEvent, SessionError};
use telltale_common::wire::{Command, CommandResult, agent_close};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use crate::buffer::{Buffer, Stored};

/// The shipper's counters, shipped as `telltale_agent_*` series.
#[derive(Debug, Default)]
pub struct ShipStats {
    /// Batches acknowledged.
    pub batches: AtomicU64,
    /// Samples acknowledged.
    pub samples: AtomicU64,
    /// Acknowledgement latency (send to ack, as the agent sees it).
    pub ack_latency: telltale_common::histogram::Histogram,
    /// Connections established.
    pub connects: AtomicU64,
    /// 1 while connected.
    pub connected: AtomicU64,
}

/// One aggregator.
#[derive(Debug, Clone)]
pub struct Peer {
    /// `HOST:PORT`.
    pub address: String,
    /// Name to verify in its certificate.
    pub server_name: String,
}

/// Where and how to connect.
pub struct Target {
    /// The aggregators, in order of preference (at least one).
    pub aggregators: Vec<Peer>,
    /// The agent's sources, named in the hello (see [`telltale_common::wire::Hello::sources`]).
    pub sources: Vec<String>,
    /// TLS client configuration.
    pub client: quinn::ClientConfig,
    /// Most unacknowledged batches at once.
    pub max_in_flight: usize,
}

/// Whether the aggregator closed `conn` because it cannot store data (its disk is full). The
/// aggregator ends the stream and then closes the connection, and the stream's end can arrive
/// first: the close is awaited briefly.
async fn refused_storage(conn: &quinn::Connection) -> bool {
    let reason = match conn.close_reason() {
        Some(r) => Some(r),
        None => tokio::time::timeout(Duration::from_millis(250), conn.closed())
            .await
            .ok(),
    };
    matches!(
        reason,
        Some(quinn::ConnectionError::ApplicationClosed(c))
            if c.error_code == quinn::VarInt::from_u32(telltale_common::wire::aggregator_close::STORAGE)
    )
}

const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Short enough that an aggregator back after a restart is found within seconds.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// QUIC retransmits its first packet with growing gaps: a shorter attempt, made again, finds
/// an aggregator that has just come back sooner than one long attempt.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A batch unacknowledged this long, with nothing heard from the aggregator for as long,
/// means the connection is stuck (an aggregator that died without closing it): reconnect.
/// Acknowledgements normally take milliseconds; see [`Client::ack_deadline`] for why an
/// aggregator that still answers is waited for.
const ACK_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the welcome may take once the QUIC handshake is done. The aggregator is up then;
/// after a restart it welcomes thousands of agents while it ingests their backlogs, and
/// giving up early wastes the handshake it already made.
const WELCOME_TIMEOUT: Duration = ACK_TIMEOUT;
/// How often an agent on a later aggregator of its list probes the earlier ones. Well inside
/// the default `AgentDown` rule's minute, so an aggregator back from a restart has its agents
/// back before it would call them down.
pub const FAILBACK_PROBE: Duration = Duration::from_secs(10);
/// How long an aggregator that ended a session because it cannot store data is left out of
/// the failback probes: its handshake still works, and moving back to it every probe would
/// only have it refuse again.
const FULL_HOLD: Duration = Duration::from_secs(60);
/// How long a move waits for acknowledgements in flight (the rest are sent again, to the
/// aggregator moved to).
const MOVE_DRAIN: Duration = Duration::from_secs(2);

/// How a session ended without an error.
enum End {
    /// The agent shuts down.
    Shutdown,
    /// A preferred aggregator (its index) answered a probe.
    Moved(usize),
}

#[derive(Debug, thiserror::Error)]
enum ShipError {
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("connect: {0}")]
    Connect(String),
    #[error("refused by the aggregator: {0}")]
    Refused(String),
    #[error("connection lost: {0}")]
    Lost(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("buffer: {0}")]
    Buffer(#[from] crate::buffer::BufferError),
}

impl From<SessionError> for ShipError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Refused(r) => ShipError::Refused(r),
            other => ShipError::Protocol(other.to_string()),
        }
    }
}

/// What the shipper hands to remediation.
#[derive(Debug)]
pub enum ToRemediation {
    /// A command from the aggregator.
    Command(Command),
    /// The aggregator has the result of this command id.
    ResultAcked(String),
}

/// The shipper's ends of the channels to remediation.
pub struct RemediationLink {
    /// The allowlist's action names, announced in the hello.
    pub actions: Vec<String>,
    /// Commands and result acknowledgements, in arrival order.
    pub to: mpsc::UnboundedSender<ToRemediation>,
    /// The results the aggregator has not acknowledged, published whenever they change; sent
    /// on every connection until acknowledged (each once per connection).
    pub results: watch::Receiver<Vec<CommandResult>>,
}

/// The shipper.
pub struct Shipper {
    /// The way to remediation (only with `[[action]]`s configured; without it every command
    /// is refused).
    pub remediation: Option<RemediationLink>,
    /// The durable queue.
    pub buffer: Arc<Buffer>,
    /// Where to.
    pub target: Target,
    /// Counters.
    pub stats: Arc<ShipStats>,
    /// Signalled when a batch is added to the buffer.
    pub notify: Arc<Notify>,
}

fn jitter(max: Duration) -> Duration {
    max.mul_f64(rand::random::<f64>())
}

impl Shipper {
    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut endpoint = match quinn::Endpoint::client(
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        )
        .or_else(|_| quinn::Endpoint::client((std::net::Ipv4Addr::UNSPECIFIED, 0).into()))
        {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "cannot open a UDP socket: nothing will be shipped");
                return;
            }
        };
        endpoint.set_default_client_config(self.target.client.clone());
        let mut backoff = BACKOFF_MIN;
        // The shortest wait before the next attempt: half the longest backoff after an
        // aggregator said it cannot store data, so the full jitter cannot bring the attempts
        // close together while its disk stays full.
        let mut floor = Duration::from_millis(100);
        let n = self.target.aggregators.len().max(1);
        // The aggregator tried next, and connection attempts failed in a row.
        let (mut idx, mut failed) = (0usize, 0usize);
        // Sessions in a row that the aggregator ended because it cannot store data, and until
        // when each such aggregator is left out of the failback probes.
        let mut full = 0usize;
        let mut held: Vec<Option<Instant>> = vec![None; n];
        loop {
            if *shutdown.borrow() {
                break;
            }
            let Some(peer) = self.target.aggregators.get(idx).cloned() else {
                tracing::error!("no aggregator to ship to: nothing will be shipped");
                return;
            };
            match self.connect(&endpoint, &peer).await {
                Ok((conn, send, recv, client)) => {
                    failed = 0;
                    let (acked_before, since) =
                        (self.stats.batches.load(Ordering::Relaxed), Instant::now());
                    self.stats.connects.fetch_add(1, Ordering::Relaxed);
                    self.stats.connected.store(1, Ordering::Relaxed);
                    tracing::info!(aggregator = %peer.address, backlog = self.buffer.len(), "connected");
                    let (moves_tx, mut moves) = mpsc::channel(1);
                    let _prober = (idx > 0).then(|| {
                        AbortOnDrop(tokio::spawn(probe(
                            endpoint.clone(),
                            self.target.aggregators[..idx].to_vec(),
                            held[..idx].to_vec(),
                            moves_tx,
                        )))
                    });
                    let r = self
                        .session(&conn, send, recv, client, &mut shutdown, &mut moves)
                        .await;
                    self.stats.connected.store(0, Ordering::Relaxed);
                    match r {
                        Ok(End::Shutdown) => {
                            conn.close(0u32.into(), b"agent shutting down");
                            endpoint.wait_idle().await;
                            break;
                        }
                        Ok(End::Moved(j)) => {
                            full = 0;
                            let to = self
                                .target
                                .aggregators
                                .get(j)
                                .map(|p| p.address.clone())
                                .unwrap_or_default();
                            tracing::info!(from = %peer.address, %to, "moving back to a preferred aggregator");
                            conn.close(
                                agent_close::MOVED.into(),
                                b"moved to a preferred aggregator",
                            );
                            idx = j;
                            backoff = BACKOFF_MIN;
                            continue;
                        }
                        Err(e) => {
                            // A session that worked starts the backoff afresh; one that ended
                            // having stored at most one batch keeps backing off, instead of
                            // reconnecting several times a second: an aggregator whose disk is
                            // full closes it at the first batch it cannot write, and may still
                            // have written one small batch into the bytes a failed write freed.
                            floor = Duration::from_millis(100);
                            let refused = refused_storage(&conn).await;
                            if refused {
                                // Said outright: wait the longest, however much was stored.
                                backoff = BACKOFF_MAX;
                                floor = BACKOFF_MAX / 2;
                                full += 1;
                                held[idx] = Some(Instant::now() + FULL_HOLD);
                            } else if self.stats.batches.load(Ordering::Relaxed) > acked_before + 1
                                || since.elapsed() > Duration::from_secs(30)
                            {
                                backoff = BACKOFF_MIN;
                            }
                            tracing::warn!(aggregator = %peer.address, error = %e, retry_in = ?backoff, "disconnected");
                            conn.close(0u32.into(), b"reconnecting");
                            // With several, the next one: the lost one may be down (a dead
                            // peer costs a handshake timeout to find again), and if it was a
                            // blip the probes bring the agent back within seconds.
                            idx = (idx + 1) % n;
                            if !refused {
                                full = 0;
                            } else if !full.is_multiple_of(n) {
                                // Another aggregator may have room: it is tried at once, and
                                // the wait comes when every one of them said it has none.
                                continue;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(aggregator = %peer.address, error = %e, "cannot connect");
                    // The next aggregator of the list, at once until all failed in a row.
                    failed += 1;
                    idx = (idx + 1) % n;
                    if failed % n != 0 {
                        continue;
                    }
                }
            }
            let wait = jitter(backoff).max(floor);
            backoff = (backoff * 2).min(BACKOFF_MAX);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    async fn connect(
        &self,
        endpoint: &quinn::Endpoint,
        peer: &Peer,
    ) -> Result<
        (
            quinn::Connection,
            quinn::SendStream,
            quinn::RecvStream,
            Client,
        ),
        ShipError,
    > {
        let conn = handshake(endpoint, peer).await?;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| ShipError::Connect(e.to_string()))?;
        let mut hello = Client::hello(
            self.buffer.epoch(),
            self.remediation.as_ref().map(|r| r.actions.clone()),
        );
        hello.sources = self.target.sources.clone();
        let (mut client, hello) = Client::new(&hello, self.target.max_in_flight);
        send.write_all(&hello)
            .await
            .map_err(|e| ShipError::Connect(e.to_string()))?;
        let first = tokio::time::timeout(WELCOME_TIMEOUT, async {
            loop {
                if let Some(ev) = client.poll(0)? {
                    return Ok(Some(ev));
                }
                match recv.read_chunk(64 * 1024, true).await {
                    Ok(Some(c)) => client.receive(&c.bytes)?,
                    Ok(None) => return Ok(None),
                    // With TLS 1.3 a refused client certificate shows here, as the
                    // connection's close: said by the aggregator, or by QUIC (a timeout);
                    // the reason is the connection's, not the stream's bare "connection lost".
                    Err(quinn::ReadError::ConnectionLost(
                        e @ (quinn::ConnectionError::ApplicationClosed(_)
                        | quinn::ConnectionError::ConnectionClosed(_)),
                    )) => return Err(ShipError::Refused(e.to_string())),
                    Err(quinn::ReadError::ConnectionLost(e)) => {
                        return Err(ShipError::Lost(format!("before the welcome: {e}")));
                    }
                    Err(e) => return Err(ShipError::Refused(e.to_string())),
                }
            }
        })
        .await
        .map_err(|_| {
            ShipError::Connect(format!("no welcome within {}s", WELCOME_TIMEOUT.as_secs()))
        })?;
        match first? {
            Some(ClientEvent::Welcomed { agent }) => {
                tracing::debug!(%agent, "welcome");
                Ok((conn, send, recv, client))
            }
            other => Err(ShipError::Protocol(format!(
                "expected welcome, got {other:?}"
            ))),
        }
    }

    async fn session(
        &self,
        conn: &quinn::Connection,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        mut client: Client,
        shutdown: &mut watch::Receiver<bool>,
        moves: &mut mpsc::Receiver<usize>,
    ) -> Result<End, ShipError> {
        // The reader only moves bytes; the client turns them into events.
        let (tx, mut rx) = mpsc::channel::<Result<Option<Vec<u8>>, String>>(64);
        let reader = tokio::spawn(async move {
            loop {
                let item = match recv.read_chunk(64 * 1024, true).await {
                    Ok(Some(c)) => Ok(Some(c.bytes.to_vec())),
                    Ok(None) => Ok(None),
                    Err(e) => Err(e.to_string()),
                };
                let end = !matches!(item, Ok(Some(_)));
                if tx.send(item).await.is_err() || end {
                    break;
                }
            }
        });
        let _reader = AbortOnDrop(reader);
        // The client's clock: microseconds since the session began.
        let start = Instant::now();
        let now = || start.elapsed().as_micros() as i64;
        let ack_timeout = ACK_TIMEOUT.as_micros() as i64;
        // Results waiting from before this connection go first; later ones as they come.
        let mut results = self.remediation.as_ref().map(|r| r.results.clone());
        if let Some(r) = results.as_mut() {
            let pending = r.borrow_and_update().clone();
            let frames = client.results(pending);
            if !frames.is_empty() {
                send.write_all(&frames)
                    .await
                    .map_err(|e| ShipError::Lost(e.to_string()))?;
            }
        }
        let (mut low, mut fresh_turn) = (0u64, false);
        // A backlog found at connecting is logged when it has been sent and acknowledged:
        // how long a drain takes (after a partition, at a long round trip) is in the log. It
        // is the batches up to the newest buffered now; the buffer's size says nothing of it,
        // since at a round trip near the interval fresh batches keep one or two in flight.
        let mut backlog = Some(self.buffer.len())
            .filter(|&n| n > 2)
            .zip(self.buffer.last()?);
        loop {
            while client.room() > 0 {
                let Some(b) = pick(
                    &self.buffer,
                    |s| client.is_in_flight(s),
                    &mut low,
                    &mut fresh_turn,
                )?
                else {
                    break;
                };
                send.write_all(&b.frame)
                    .await
                    .map_err(|e| ShipError::Lost(e.to_string()))?;
                client.sent(b.seq, b.samples, now());
            }
            let deadline = client
                .ack_deadline(ack_timeout)
                .map(|t| start + Duration::from_micros(t.max(0) as u64));
            tokio::select! {
                chunk = rx.recv() => {
                    match chunk {
                        Some(Ok(Some(bytes))) => client.receive(&bytes)?,
                        Some(Ok(None)) => {
                            client.finish()?;
                            return Err(ShipError::Lost("aggregator closed the stream".into()));
                        }
                        Some(Err(e)) => return Err(ShipError::Lost(e)),
                        None => return Err(ShipError::Lost("reader stopped".into())),
                    }
                    while let Some(ev) = client.poll(now())? {
                        self.on_event(ev, &mut send).await?;
                    }
                    if let Some((n, newest)) = backlog
                        && self.buffer.next_from(0, |_| false)?.is_none_or(|s| s > newest)
                    {
                        // The path's figures say whether a slow drain was the round trip,
                        // losses, or a congestion window kept small.
                        let path = conn.stats().path;
                        tracing::info!(
                            backlog = n,
                            took = ?start.elapsed(),
                            rtt = ?path.rtt,
                            cwnd = path.cwnd,
                            lost_packets = path.lost_packets,
                            congestion_events = path.congestion_events,
                            "backlog sent"
                        );
                        backlog = None;
                    }
                }
                _ = self.notify.notified() => {}
                pending = results_changed(&mut results) => {
                    let frames = client.results(pending);
                    if !frames.is_empty() {
                        send.write_all(&frames).await.map_err(|e| ShipError::Lost(e.to_string()))?;
                    }
                }
                // Only armed while something is in flight, so an idle agent has no timer.
                _ = sleep_until_opt(deadline) => {
                    return Err(ShipError::Lost(format!("no acknowledgement for {}s", ACK_TIMEOUT.as_secs())));
                }
                r = conn.closed() => return Err(ShipError::Lost(r.to_string())),
                Some(j) = moves.recv() => {
                    self.drain(&mut client, &mut rx, MOVE_DRAIN, now).await;
                    let _ = send.finish();
                    return Ok(End::Moved(j));
                }
                _ = shutdown.changed() => {
                    // Give acknowledgements in flight a moment, then leave: the rest is resent.
                    self.drain(&mut client, &mut rx, Duration::from_millis(500), now).await;
                    let _ = send.finish();
                    return Ok(End::Shutdown);
                }
            }
        }
    }

    /// Waits up to `limit` for the acknowledgements of batches in flight (removing what they
    /// acknowledge from the buffer); what stays unacknowledged is sent again later.
    async fn drain(
        &self,
        client: &mut Client,
        rx: &mut mpsc::Receiver<Result<Option<Vec<u8>>, String>>,
        limit: Duration,
        now: impl Fn() -> i64,
    ) {
        let _ = tokio::time::timeout(limit, async {
            while client.in_flight() > 0 {
                let Some(Ok(Some(bytes))) = rx.recv().await else {
                    break;
                };
                if client.receive(&bytes).is_err() {
                    break;
                }
                while let Ok(Some(ev)) = client.poll(now()) {
                    if let ClientEvent::Acked { sequence, .. } = ev {
                        let _ = self.buffer.remove(sequence);
                    }
                }
            }
        })
        .await;
    }

    /// Carries out what the aggregator said.
    async fn on_event(
        &self,
        ev: ClientEvent,
        send: &mut quinn::SendStream,
    ) -> Result<(), ShipError> {
        match ev {
            ClientEvent::Acked {
                sequence,
                samples,
                latency,
            } => {
                self.buffer.remove(sequence)?;
                if let (Some(samples), Some(latency)) = (samples, latency) {
                    self.stats.batches.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .samples
                        .fetch_add(samples as u64, Ordering::Relaxed);
                    self.stats
                        .ack_latency
                        .observe_secs(latency.max(0) as f64 / 1e6);
                }
            }
            ClientEvent::Rejected { sequence, reason } => {
                tracing::error!(sequence, %reason, "aggregator rejected a batch: dropped");
                self.buffer.remove(sequence)?;
                self.buffer.note_dropped();
            }
            ClientEvent::Command(c) => match &self.remediation {
                // Remediation stops only with the process: a closed channel is a shutdown.
                Some(r) => {
                    let _ = r.to.send(ToRemediation::Command(c));
                }
                None => {
                    // Not announced, so not expected; refusing is the only answer.
                    tracing::warn!(action = %c.action, "command refused: this agent has no actions");
                    send.write_all(&Client::refusal(&c))
                        .await
                        .map_err(|e| ShipError::Lost(e.to_string()))?;
                }
            },
            ClientEvent::ResultAcked(id) => {
                if let Some(r) = &self.remediation {
                    let _ = r.to.send(ToRemediation::ResultAcked(id));
                }
            }
            ClientEvent::Welcomed { .. } => {
                return Err(ShipError::Protocol("a second welcome".into()));
            }
        }
        Ok(())
    }
}

/// Chooses the next batch to send: alternately the newest unsent metric batch (so fresh data
/// flows during a backlog) and the oldest unsent one at or after `low` (so the backlog drains
/// in order); log batches, oldest first, only when no metric batch waits. `low` and `fresh_turn` are the caller's cursor state for this connection.
fn pick(
    buffer: &Buffer,
    in_flight: impl Fn(u64) -> bool,
    low: &mut u64,
    fresh_turn: &mut bool,
) -> Result<Option<Stored>, crate::buffer::BufferError> {
    loop {
        *fresh_turn = !*fresh_turn;
        let mut candidate = None;
        if *fresh_turn
            && let Some(last) = buffer.last()?
            && last >= *low
            && !in_flight(last)
        {
            candidate = Some(last);
        }
        if candidate.is_none() {
            candidate = buffer.next_from(*low, &in_flight)?;
            if let Some(c) = candidate {
                *low = c + 1;
            }
        }
        // Log batches go only when no metric batch waits: metrics are the critical path.
        if candidate.is_none() {
            candidate = buffer.next_log_from(0, &in_flight)?;
        }
        let Some(seq) = candidate else {
            return Ok(None);
        };
        // A corrupt record reads as absent (and is dropped): try the next one.
        if let Some(s) = buffer.get(seq)? {
            return Ok(Some(s));
        }
    }
}

/// The pending results once they change; never without a link (or once it is closed).
async fn results_changed(
    rx: &mut Option<watch::Receiver<Vec<CommandResult>>>,
) -> Vec<CommandResult> {
    if let Some(r) = rx.as_mut() {
        if r.changed().await.is_ok() {
            return r.borrow_and_update().clone();
        }
        *rx = None;
    }
    std::future::pending().await
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A QUIC connection to `peer` (TLS both ways), within [`HANDSHAKE_TIMEOUT`].
async fn handshake(
    endpoint: &quinn::Endpoint,
    peer: &Peer,
) -> Result<quinn::Connection, ShipError> {
    let addr = tokio::net::lookup_host(&peer.address)
        .await
        .map_err(|e| ShipError::Resolve(format!("{}: {e}", peer.address)))?
        .next()
        .ok_or_else(|| ShipError::Resolve(peer.address.clone()))?;
    tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        endpoint
            .connect(addr, &peer.server_name)
            .map_err(|e| ShipError::Connect(e.to_string()))?
            .await
            .map_err(|e| ShipError::Connect(e.to_string()))
    })
    .await
    .map_err(|_| ShipError::Connect("timed out".into()))?
}

/// Every [`FAILBACK_PROBE`] (with jitter), tries the `preferred` aggregators in order, but
/// not one `held` until a time still to come (it said it cannot store data); sends the index
/// of the first that completes a handshake, then stops.
async fn probe(
    endpoint: quinn::Endpoint,
    preferred: Vec<Peer>,
    held: Vec<Option<Instant>>,
    found: mpsc::Sender<usize>,
) {
    loop {
        tokio::time::sleep(FAILBACK_PROBE / 2 + jitter(FAILBACK_PROBE / 2)).await;
        for (j, p) in preferred.iter().enumerate() {
            if held
                .get(j)
                .copied()
                .flatten()
                .is_some_and(|t| Instant::now() < t)
            {
                continue;
            }
            if let Ok(conn) = handshake(&endpoint, p).await {
                conn.close(agent_close::PROBE.into(), b"probe");
                let _ = found.send(j).await;
                return;
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use telltale_common::wire::Batch;

    fn empty() -> Batch {
        Batch {
            sequence: 0,
            created_ms: 0,
            series: Vec::new(),
            events: Vec::new(),
            spans: Vec::new(),
            exemplars: Vec::new(),
            logs: Vec::new(),
        }
    }

    #[tokio::test]
    async fn the_backlog_drains_oldest_first_while_fresh_batches_go_out() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = Buffer::open(dir.path(), 1 << 20).unwrap();
        for _ in 0..50 {
            buffer.push(empty()).await.unwrap();
        }
        let mut inflight = BTreeMap::new();
        let (mut low, mut fresh) = (0, false);
        let mut sent = Vec::new();
        let send =
            |inflight: &mut BTreeMap<u64, (Instant, u32)>, low: &mut u64, fresh: &mut bool| {
                let b = pick(&buffer, |s| inflight.contains_key(&s), low, fresh)
                    .unwrap()
                    .unwrap();
                inflight.insert(b.seq, (Instant::now(), 0));
                b.seq
            };
        for _ in 0..6 {
            sent.push(send(&mut inflight, &mut low, &mut fresh));
        }
        assert_eq!(
            sent,
            vec![50, 1, 2, 3, 4, 5],
            "newest first, then the backlog in order"
        );
        // A batch collected during the drain goes out within two sends, not after the backlog.
        buffer.push(empty()).await.unwrap();
        let next_two = [
            send(&mut inflight, &mut low, &mut fresh),
            send(&mut inflight, &mut low, &mut fresh),
        ];
        assert!(next_two.contains(&51), "{next_two:?}");
        // Everything is sent exactly once.
        while let Some(b) =
            pick(&buffer, |s| inflight.contains_key(&s), &mut low, &mut fresh).unwrap()
        {
            assert!(
                inflight.insert(b.seq, (Instant::now(), 0)).is_none(),
                "{} sent twice",
                b.seq
            );
        }
        assert_eq!(inflight.len(), 51);
    }
}
