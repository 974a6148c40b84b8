//! Ships buffered batches to the aggregator over QUIC with mutual TLS.
//!
//! One connection, one bidirectional stream: hello, welcome, then batches out and
//! acknowledgements back. Up to `max_in_flight` batches are unacknowledged at once. After an
//! outage the backlog drains oldest-first, but every other send slot goes to the newest batch,
//! so fresh data keeps flowing while the backlog drains. A batch leaves the buffer only when
//! its acknowledgement arrives. Reconnects back off exponentially (0.5 s doubling to 5 s) with
//! full jitter, so a fleet does not reconnect in lockstep after an aggregator restart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use telltale_common::codec::{self, FrameDecoder};
use telltale_common::wire::{ClientMessage, Hello, ServerMessage};
use telltale_common::{PROTOCOL_VERSION, VERSION};
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
    /// Last acknowledgement latency in microseconds.
    pub ack_latency_us: AtomicU64,
    /// Connections established.
    pub connects: AtomicU64,
    /// 1 while connected.
    pub connected: AtomicU64,
}

/// Where and how to connect.
pub struct Target {
    /// `HOST:PORT` of the aggregator.
    pub address: String,
    /// Name to verify in the aggregator's certificate.
    pub server_name: String,
    /// TLS client configuration.
    pub client: quinn::ClientConfig,
    /// Most unacknowledged batches at once.
    pub max_in_flight: usize,
}

const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Short enough that an aggregator back after a restart is found within seconds.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// QUIC retransmits its first packet with growing gaps: a shorter attempt, made again, finds
/// an aggregator that has just come back sooner than one long attempt.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A batch unacknowledged this long means the connection is stuck (an aggregator that died
/// without closing it): reconnect. Acknowledgements normally take milliseconds.
const ACK_TIMEOUT: Duration = Duration::from_secs(15);

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

/// The shipper.
pub struct Shipper {
    /// Runs commands from the aggregator (only with `[[action]]`s configured).
    pub executor: Option<Arc<crate::remediate::Executor>>,
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
        loop {
            if *shutdown.borrow() {
                break;
            }
            match self.connect(&endpoint).await {
                Ok((conn, send, recv)) => {
                    let (acked_before, since) =
                        (self.stats.batches.load(Ordering::Relaxed), Instant::now());
                    self.stats.connects.fetch_add(1, Ordering::Relaxed);
                    self.stats.connected.store(1, Ordering::Relaxed);
                    tracing::info!(aggregator = %self.target.address, backlog = self.buffer.len(), "connected");
                    let r = self.session(&conn, send, recv, &mut shutdown).await;
                    self.stats.connected.store(0, Ordering::Relaxed);
                    match r {
                        Ok(()) => {
                            conn.close(0u32.into(), b"agent shutting down");
                            endpoint.wait_idle().await;
                            break;
                        }
                        Err(e) => {
                            // A session that worked starts the backoff afresh; one that ended
                            // having stored at most one batch keeps backing off, instead of
                            // reconnecting several times a second: an aggregator whose disk is
                            // full closes it at the first batch it cannot write, and may still
                            // have written one small batch into the bytes a failed write freed.
                            if self.stats.batches.load(Ordering::Relaxed) > acked_before + 1
                                || since.elapsed() > Duration::from_secs(30)
                            {
                                backoff = BACKOFF_MIN;
                            }
                            tracing::warn!(aggregator = %self.target.address, error = %e, retry_in = ?backoff, "disconnected");
                            conn.close(0u32.into(), b"reconnecting");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(aggregator = %self.target.address, error = %e, retry_in = ?backoff, "cannot connect")
                }
            }
            let wait = jitter(backoff).max(Duration::from_millis(100));
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
    ) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream), ShipError> {
        let addr = tokio::net::lookup_host(&self.target.address)
            .await
            .map_err(|e| ShipError::Resolve(format!("{}: {e}", self.target.address)))?
            .next()
            .ok_or_else(|| ShipError::Resolve(self.target.address.clone()))?;
        let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
            endpoint
                .connect(addr, &self.target.server_name)
                .map_err(|e| ShipError::Connect(e.to_string()))?
                .await
                .map_err(|e| ShipError::Connect(e.to_string()))
        })
        .await
        .map_err(|_| ShipError::Connect("timed out".into()))??;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| ShipError::Connect(e.to_string()))?;
        let hello = codec::encode_frame(&ClientMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_version: VERSION.to_string(),
            epoch: self.buffer.epoch(),
            capabilities: match &self.executor {
                Some(_) => vec![telltale_common::wire::CAP_REMEDIATION.to_string()],
                None => Vec::new(),
            },
            actions: self
                .executor
                .as_ref()
                .map(|e| e.action_names())
                .unwrap_or_default(),
        }))
        .map_err(|e| ShipError::Protocol(e.to_string()))?;
        send.write_all(&hello)
            .await
            .map_err(|e| ShipError::Connect(e.to_string()))?;
        let mut dec = FrameDecoder::new(codec::DEFAULT_MAX_FRAME);
        let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_message(&mut recv, &mut dec))
            .await
            .map_err(|_| {
                ShipError::Connect(format!(
                    "no welcome within {}s",
                    HANDSHAKE_TIMEOUT.as_secs()
                ))
            })?;
        match first {
            Ok(Some(ServerMessage::Welcome(w))) => {
                tracing::debug!(agent = %w.agent, "welcome");
                Ok((conn, send, recv))
            }
            Ok(Some(ServerMessage::Refused { reason })) => Err(ShipError::Refused(reason)),
            Ok(other) => Err(ShipError::Protocol(format!(
                "expected welcome, got {other:?}"
            ))),
            // With TLS 1.3 a refused client certificate shows here, as the connection's close.
            Err(e) => Err(ShipError::Refused(e.to_string())),
        }
    }

    async fn session(
        &self,
        conn: &quinn::Connection,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), ShipError> {
        let (tx, mut rx) = mpsc::channel::<Result<ServerMessage, ShipError>>(1024);
        let reader = tokio::spawn(async move {
            let mut dec = FrameDecoder::new(codec::DEFAULT_MAX_FRAME);
            loop {
                let m = read_message(&mut recv, &mut dec).await;
                let end = !matches!(m, Ok(Some(_)));
                let item = match m {
                    Ok(Some(m)) => Ok(m),
                    Ok(None) => Err(ShipError::Lost("aggregator closed the stream".into())),
                    Err(e) => Err(e),
                };
                if tx.send(item).await.is_err() || end {
                    break;
                }
            }
        });
        let _reader = AbortOnDrop(reader);
        let mut inflight: BTreeMap<u64, (Instant, u32)> = BTreeMap::new();
        // Results sent on this connection; a new connection resends every unacknowledged one.
        let mut sent_results: std::collections::HashSet<String> = Default::default();
        if let Some(ex) = &self.executor
            && !ex.pending().is_empty()
        {
            ex.ready.notify_one();
        }
        let (mut low, mut fresh_turn) = (0u64, false);
        loop {
            while inflight.len() < self.target.max_in_flight {
                let Some(b) = pick(&self.buffer, &inflight, &mut low, &mut fresh_turn)? else {
                    break;
                };
                send.write_all(&b.frame)
                    .await
                    .map_err(|e| ShipError::Lost(e.to_string()))?;
                inflight.insert(b.seq, (Instant::now(), b.samples));
            }
            tokio::select! {
                m = rx.recv() => match m {
                    Some(Ok(ServerMessage::Ack { sequence })) => {
                        self.buffer.remove(sequence)?;
                        if let Some((sent, samples)) = inflight.remove(&sequence) {
                            self.stats.batches.fetch_add(1, Ordering::Relaxed);
                            self.stats.samples.fetch_add(samples as u64, Ordering::Relaxed);
                            self.stats.ack_latency_us.store(sent.elapsed().as_micros() as u64, Ordering::Relaxed);
                        }
                    }
                    Some(Ok(ServerMessage::Rejected { sequence, reason })) => {
                        tracing::error!(sequence, %reason, "aggregator rejected a batch: dropped");
                        self.buffer.remove(sequence)?;
                        self.buffer.note_dropped();
                        inflight.remove(&sequence);
                    }
                    Some(Ok(ServerMessage::Command(c))) => match &self.executor {
                        Some(ex) => {
                            let ex = ex.clone();
                            tokio::spawn(async move {
                                if let Err(e) = ex.handle(c).await {
                                    tracing::error!(error = %e, "remediation command failed");
                                }
                            });
                        }
                        None => {
                            // Not announced, so not expected; refusing is the only answer.
                            tracing::warn!(action = %c.action, "command refused: this agent has no actions");
                            let r = telltale_common::wire::CommandResult {
                                id: c.id, status: "refused".into(),
                                reason: "this agent has no actions configured".into(),
                                exit_code: None, started_ms: 0, duration_ms: 0,
                                stdout_tail: String::new(), stderr_tail: String::new(),
                            };
                            let f = codec::encode_frame(&ClientMessage::CommandResult(r))
                                .map_err(|e| ShipError::Protocol(e.to_string()))?;
                            send.write_all(&f).await.map_err(|e| ShipError::Lost(e.to_string()))?;
                        }
                    },
                    Some(Ok(ServerMessage::CommandAck { id })) => {
                        if let Some(ex) = &self.executor {
                            ex.ack(&id);
                            sent_results.remove(&id);
                        }
                    }
                    Some(Ok(other)) => return Err(ShipError::Protocol(format!("unexpected {other:?}"))),
                    Some(Err(e)) => return Err(e),
                    None => return Err(ShipError::Lost("reader stopped".into())),
                },
                _ = self.notify.notified() => {}
                _ = results_ready(&self.executor) => {
                    if let Some(ex) = &self.executor {
                        for r in ex.pending() {
                            if sent_results.insert(r.id.clone()) {
                                let f = codec::encode_frame(&ClientMessage::CommandResult(r))
                                    .map_err(|e| ShipError::Protocol(e.to_string()))?;
                                send.write_all(&f).await.map_err(|e| ShipError::Lost(e.to_string()))?;
                            }
                        }
                    }
                }
                // Only armed while something is in flight, so an idle agent has no timer.
                _ = sleep_until_opt(inflight.values().map(|(t, _)| *t).min().map(|t| t + ACK_TIMEOUT)) => {
                    return Err(ShipError::Lost(format!("no acknowledgement for {}s", ACK_TIMEOUT.as_secs())));
                }
                r = conn.closed() => return Err(ShipError::Lost(r.to_string())),
                _ = shutdown.changed() => {
                    // Give acknowledgements in flight a moment, then leave: the rest is resent.
                    let _ = tokio::time::timeout(Duration::from_millis(500), async {
                        while !inflight.is_empty() {
                            match rx.recv().await {
                                Some(Ok(ServerMessage::Ack { sequence })) => {
                                    let _ = self.buffer.remove(sequence);
                                    inflight.remove(&sequence);
                                }
                                _ => break,
                            }
                        }
                    }).await;
                    let _ = send.finish();
                    return Ok(());
                }
            }
        }
    }
}

/// Chooses the next batch to send: alternately the newest unsent batch (so fresh data flows
/// during a backlog) and the oldest unsent one at or after `low` (so the backlog drains in
/// order). `low` and `fresh_turn` are the caller's cursor state for this connection.
fn pick(
    buffer: &Buffer,
    inflight: &BTreeMap<u64, (Instant, u32)>,
    low: &mut u64,
    fresh_turn: &mut bool,
) -> Result<Option<Stored>, crate::buffer::BufferError> {
    loop {
        *fresh_turn = !*fresh_turn;
        let mut candidate = None;
        if *fresh_turn
            && let Some(last) = buffer.last()?
            && last >= *low
            && !inflight.contains_key(&last)
        {
            candidate = Some(last);
        }
        if candidate.is_none() {
            candidate = buffer.next_from(*low, |s| inflight.contains_key(&s))?;
            if let Some(c) = candidate {
                *low = c + 1;
            }
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

/// Resolves when the executor has a result to send; never without one.
async fn results_ready(ex: &Option<Arc<crate::remediate::Executor>>) {
    match ex {
        Some(e) => e.ready.notified().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn read_message(
    recv: &mut quinn::RecvStream,
    dec: &mut FrameDecoder,
) -> Result<Option<ServerMessage>, ShipError> {
    loop {
        if let Some(p) = dec
            .poll_frame()
            .map_err(|e| ShipError::Protocol(e.to_string()))?
        {
            return codec::decode_payload(&p)
                .map(Some)
                .map_err(|e| ShipError::Protocol(e.to_string()));
        }
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(c)) => dec
                .push(&c.bytes)
                .map_err(|e| ShipError::Protocol(e.to_string()))?,
            Ok(None) => return Ok(None),
            Err(e) => return Err(ShipError::Lost(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telltale_common::wire::Batch;

    fn empty() -> Batch {
        Batch {
            sequence: 0,
            created_ms: 0,
            series: Vec::new(),
            events: Vec::new(),
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
                let b = pick(&buffer, inflight, low, fresh).unwrap().unwrap();
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
        while let Some(b) = pick(&buffer, &inflight, &mut low, &mut fresh).unwrap() {
            assert!(
                inflight.insert(b.seq, (Instant::now(), 0)).is_none(),
                "{} sent twice",
                b.seq
            );
        }
        assert_eq!(inflight.len(), 51);
    }
}
