//! QUIC ingest: accepts agents over mutual TLS, reads their frames, stores batches and
//! acknowledges each one only once storage says it is durable.
//!
//! The protocol's state (hello first, the welcome or refusal, which frames may follow) is
//! [`telltale_common::session::Server`]'s; this driver moves bytes between it, the QUIC
//! stream, storage and the remediation hub.
//!
//! Every connection is independent: a bad frame, an oversized frame or a broken handshake
//! closes that connection with a logged error and a counted metric; the others keep going.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use telltale_common::codec::CodecError;
use telltale_common::model::{Labels, Sample, SeriesSamples, now_ms};
use telltale_common::session::{self, Server, ServerEvent};
use telltale_common::tls::peer_agent_name;
use telltale_common::wire::{ServerMessage, agent_close};
use tokio::sync::{Semaphore, mpsc};

use crate::agents::Registry;
use crate::metrics::storage::{
    AGENT_JOB, AppendData, AppendOutcome, AppendRequest, Appender, Origin,
};
use crate::selfmetrics::{LATENCY, SelfMetrics};

/// QUIC application error codes used when the aggregator closes a connection.
pub use telltale_common::wire::aggregator_close as close_code;

/// Whether the agent closed `conn` with the application code `code`.
fn closed_with(conn: &quinn::Connection, code: u32) -> bool {
    matches!(
        conn.close_reason(),
        Some(quinn::ConnectionError::ApplicationClosed(c)) if c.error_code == quinn::VarInt::from_u32(code)
    )
}

/// How long an agent may take to open its stream and say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Batches of one connection being stored at the same time.
const IN_FLIGHT_PER_CONNECTION: usize = 256;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{0}")]
    Frame(#[from] CodecError),
    #[error("handshake: {0}")]
    Handshake(String),
    #[error("connection lost: {0}")]
    Lost(String),
    #[error("storage: {0}")]
    Storage(String),
}

impl From<session::SessionError> for SessionError {
    fn from(e: session::SessionError) -> Self {
        match e {
            session::SessionError::Frame(f) => SessionError::Frame(f),
            session::SessionError::Protocol(m) | session::SessionError::Refused(m) => {
                SessionError::Handshake(m)
            }
        }
    }
}

/// The ingest service.
pub struct Ingest {
    /// Where batches go.
    pub storage: Arc<dyn Appender>,
    /// Where the log lines of batches go.
    pub logs: Arc<dyn crate::logs::store::LogAppender>,
    /// Where the spans of batches go.
    pub traces: Arc<dyn crate::traces::store::SpanAppender>,
    /// Where the exemplars of batches go.
    pub exemplars: Arc<crate::metrics::exemplars::Exemplars>,
    /// Agent state.
    pub registry: Arc<Registry>,
    /// Counters.
    pub metrics: Arc<SelfMetrics>,
    /// Largest accepted frame payload.
    pub max_frame: u32,
    /// Connections that take remediation commands.
    pub hub: Arc<crate::remediate::hub::Hub>,
    /// Each agent's current connection: a newer one replaces it (an agent restarted before
    /// its old connection timed out, or two hosts using one certificate).
    pub current: std::sync::Mutex<std::collections::HashMap<String, quinn::Connection>>,
}

/// The `up` series of an agent.
pub fn up_series(agent: &str, t_ms: i64, value: f64) -> SeriesSamples {
    SeriesSamples {
        labels: Labels::from_pairs([("__name__", "up"), ("instance", agent), ("job", AGENT_JOB)]),
        samples: vec![Sample(t_ms, value)],
    }
}

/// The timestamp of an `up` write: never one an earlier write used. The ticker, a connection
/// and a disconnection each write `up`; two in one millisecond (an agent restarted while the
/// ticker wrote) stored the second onto the first — a sample stored twice, found by the
/// agent crash loop (tests/tests/chaos.rs) — and the later one in time, not the newer fact,
/// could win.
fn up_time(now: i64) -> i64 {
    static LAST: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(i64::MIN);
    let order = std::sync::atomic::Ordering::Relaxed;
    let prev = LAST
        .fetch_update(order, order, |l| Some(now.max(l.saturating_add(1))))
        .unwrap_or(now);
    now.max(prev.saturating_add(1))
}

/// Handshakes in progress past which a client whose address QUIC has not validated is sent a
/// Retry first (stateless, one round trip): a flood from spoofed addresses then costs no TLS
/// work, while agents connect without the extra round trip the rest of the time.
const RETRY_ABOVE: usize = 64;
/// Handshakes in progress past which new connections are refused outright (agents back off
/// and try again): a flood of handshakes cannot take the memory the agents' sessions need.
const MAX_HANDSHAKES: usize = 4096;

/// Lines about refused handshakes logged per [`LogBudget::WINDOW`]; past them they are only
/// counted, and the next line logged says how many were left out. A flood of bad handshakes
/// (a scan, a misconfigured fleet, an attack) must not fill the disk with log lines; the
/// counter `telltale_aggregator_handshake_errors_total` still counts every one.
struct LogBudget {
    /// When the window began, lines logged in it, lines left out since the last logged.
    state: std::sync::Mutex<(Option<std::time::Instant>, u32, u64)>,
}

/// The budget of the process's lines about refused handshakes.
static HANDSHAKE_LOG: LogBudget = LogBudget::new();

impl LogBudget {
    const WINDOW: std::time::Duration = std::time::Duration::from_secs(10);
    const LINES: u32 = 20;

    const fn new() -> Self {
        LogBudget {
            state: std::sync::Mutex::new((None, 0, 0)),
        }
    }

    /// `Some(lines left out before this one)` when a line may be logged now.
    fn take(&self) -> Option<u64> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.0.is_none_or(|t| t.elapsed() >= Self::WINDOW) {
            st.0 = Some(std::time::Instant::now());
            st.1 = 0;
        }
        if st.1 < Self::LINES {
            st.1 += 1;
            Some(std::mem::take(&mut st.2))
        } else {
            st.2 += 1;
            None
        }
    }
}

/// Counts a handshake in progress until dropped.
struct Handshaking(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Ingest {
    /// Accepts connections until the endpoint closes.
    pub async fn run(self: Arc<Self>, endpoint: quinn::Endpoint) {
        let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        while let Some(incoming) = endpoint.accept().await {
            let now = pending.load(std::sync::atomic::Ordering::Acquire);
            if now >= MAX_HANDSHAKES {
                SelfMetrics::inc(&self.metrics.handshake_errors, 1);
                Self::refused(incoming.remote_address(), "too many handshakes in progress");
                incoming.refuse();
                continue;
            }
            if now >= RETRY_ABOVE && !incoming.remote_address_validated() && incoming.may_retry() {
                SelfMetrics::inc(&self.metrics.handshake_retries, 1);
                let _ = incoming.retry();
                continue;
            }
            pending.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            let counted = Handshaking(pending.clone());
            let me = self.clone();
            tokio::spawn(async move { me.handle(incoming, counted).await });
        }
    }

    /// Logs a refused handshake within the log budget.
    fn refused(addr: std::net::SocketAddr, error: &str) {
        if let Some(left_out) = HANDSHAKE_LOG.take() {
            if left_out > 0 {
                tracing::warn!(%addr, error, left_out, "QUIC/TLS handshake refused (and {left_out} more not logged)");
            } else {
                tracing::warn!(%addr, error, "QUIC/TLS handshake refused");
            }
        }
    }

    /// Ends an agent's `up` series with a staleness marker (as Prometheus does for a target
    /// that went away).
    async fn end_up(&self, agent: &str) {
        let t = up_time(now_ms());
        let req = AppendRequest {
            origin: None,
            data: AppendData::Series(vec![up_series(
                agent,
                t,
                f64::from_bits(telltale_common::model::STALE_NAN_BITS),
            )]),
        };
        if let Err(e) = self.storage.append(req).await {
            tracing::warn!(error = %e, "cannot end an up series");
        }
    }

    /// Writes `up` samples for the given agents.
    pub async fn write_up(&self, agents: &[(String, bool)]) {
        if agents.is_empty() {
            return;
        }
        let t = up_time(now_ms());
        let series = agents
            .iter()
            .map(|(a, up)| up_series(a, t, if *up { 1.0 } else { 0.0 }))
            .collect();
        let req = AppendRequest {
            origin: None,
            data: AppendData::Series(series),
        };
        if let Err(e) = self.storage.append(req).await {
            tracing::warn!(error = %e, "cannot store up series");
        }
    }

    async fn handle(self: Arc<Self>, incoming: quinn::Incoming, counted: Handshaking) {
        let addr = incoming.remote_address();
        let conn = incoming.await;
        drop(counted);
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                SelfMetrics::inc(&self.metrics.handshake_errors, 1);
                Self::refused(addr, &e.to_string());
                return;
            }
        };
        let name = match peer_agent_name(&conn) {
            Ok(n) => n,
            Err(e) => {
                SelfMetrics::inc(&self.metrics.handshake_errors, 1);
                Self::refused(addr, &format!("refusing connection: {e}"));
                conn.close(close_code::BAD_IDENTITY.into(), e.to_string().as_bytes());
                return;
            }
        };
        let result = self.session(&conn, &name, addr).await;
        let (code, reason) = match &result {
            Ok(()) => (close_code::SHUTDOWN, String::new()),
            Err(SessionError::Frame(e)) => {
                SelfMetrics::inc(&self.metrics.frame_errors, 1);
                tracing::error!(agent = %name, %addr, error = %e, "closing agent connection: bad frame");
                (close_code::BAD_FRAME, e.to_string())
            }
            Err(SessionError::Handshake(e)) => {
                SelfMetrics::inc(&self.metrics.handshake_errors, 1);
                tracing::warn!(agent = %name, %addr, error = %e, "closing agent connection: handshake failed");
                (close_code::HANDSHAKE, e.clone())
            }
            Err(SessionError::Lost(_)) if closed_with(&conn, agent_close::PROBE) => {
                // An agent on another aggregator of its list checking that this one is back.
                tracing::debug!(agent = %name, %addr, "probed");
                (close_code::SHUTDOWN, String::new())
            }
            Err(e @ SessionError::Lost(_)) => {
                tracing::info!(agent = %name, %addr, reason = %e, "agent disconnected");
                (close_code::SHUTDOWN, String::new())
            }
            Err(e @ SessionError::Storage(_)) => {
                tracing::error!(agent = %name, %addr, error = %e, "closing agent connection: storage failed");
                (close_code::STORAGE, e.to_string())
            }
        };
        conn.close(code.into(), reason.as_bytes());
    }

    async fn session(
        &self,
        conn: &quinn::Connection,
        name: &str,
        addr: SocketAddr,
    ) -> Result<(), SessionError> {
        let (mut send, mut recv) = tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi())
            .await
            .map_err(|_| SessionError::Handshake("no stream opened within 10s".into()))?
            .map_err(|e| SessionError::Lost(e.to_string()))?;
        let mut server = Server::new(self.max_frame);
        let hello = tokio::time::timeout(HELLO_TIMEOUT, async {
            loop {
                match server.poll() {
                    Ok(Some(ServerEvent::Hello(h))) => return Ok(h),
                    Ok(Some(_)) => {
                        return Err(SessionError::Handshake("expected a hello first".into()));
                    }
                    Ok(None) => {}
                    Err(Ok(refusal)) => {
                        let _ = send.write_all(&refusal.frame).await;
                        let _ = send.finish();
                        return Err(SessionError::Handshake(refusal.reason));
                    }
                    Err(Err(e)) => return Err(e.into()),
                }
                match recv.read_chunk(64 * 1024, true).await {
                    Ok(Some(c)) => server.receive(&c.bytes)?,
                    Ok(None) => {
                        server.finish()?;
                        return Err(SessionError::Lost("stream closed before hello".into()));
                    }
                    Err(e) => return Err(SessionError::Lost(e.to_string())),
                }
            }
        })
        .await
        .map_err(|_| SessionError::Handshake("no hello within 10s".into()))??;
        send.write_all(&Server::welcome(name, self.max_frame))
            .await
            .map_err(|e| SessionError::Lost(e.to_string()))?;
        let older = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), conn.clone());
        if let Some(old) = older
            && old.stable_id() != conn.stable_id()
        {
            SelfMetrics::inc(&self.metrics.connections_replaced, 1);
            tracing::warn!(agent = %name, old = %old.remote_address(), new = %addr,
                "a newer connection of this agent replaces its older one (a restarted agent, or two hosts sharing one certificate)");
            old.close(
                close_code::REPLACED.into(),
                b"replaced by a newer connection of the same agent",
            );
        }
        self.registry
            .connected(name, addr, &hello.agent_version, &hello.sources, now_ms());
        tracing::info!(agent = %name, %addr, version = %hello.agent_version, epoch = hello.epoch, "agent connected");
        self.write_up(&[(name.to_string(), true)]).await;

        let commands = hello
            .capabilities
            .iter()
            .any(|c| c == telltale_common::wire::CAP_REMEDIATION);
        let result = self
            .batches(
                name,
                hello.epoch,
                commands.then_some(hello.actions),
                send,
                recv,
                server,
            )
            .await;
        if result.is_ok() && conn.close_reason().is_none() {
            // The agent finished its stream: its close, saying why, follows at once.
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
        }
        {
            let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
            if cur
                .get(name)
                .is_some_and(|c| c.stable_id() == conn.stable_id())
            {
                cur.remove(name);
            }
        }
        if self.registry.disconnected(name) {
            if closed_with(conn, agent_close::MOVED) {
                // Up elsewhere: its `up` here ends rather than turning 0.
                tracing::info!(agent = %name, "agent moved to another aggregator of its list");
                self.registry.moved(name);
                self.end_up(name).await;
            } else {
                self.write_up(&[(name.to_string(), false)]).await;
            }
        }
        result
    }

    async fn batches(
        &self,
        name: &str,
        epoch: u64,
        commands: Option<Vec<String>>,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        mut server: Server,
    ) -> Result<(), SessionError> {
        let (ack_tx, mut ack_rx) = mpsc::channel::<ServerMessage>(IN_FLIGHT_PER_CONNECTION);
        let writer = tokio::spawn(async move {
            while let Some(m) = ack_rx.recv().await {
                send.write_all(&Server::message(&m))
                    .await
                    .map_err(|e| SessionError::Lost(e.to_string()))?;
            }
            Ok::<_, SessionError>(())
        });
        // Commands go out through the same writer as acknowledgements.
        let conn_id = commands.map(|actions| self.hub.register(name, ack_tx.clone(), actions));
        let permits = Arc::new(Semaphore::new(IN_FLIGHT_PER_CONNECTION));
        let (fail_tx, mut fail_rx) = mpsc::channel::<SessionError>(1);
        let result = loop {
            // Frames already buffered first: the chunk that carried the hello may hold more.
            let mut failed = None;
            loop {
                let (sequence, created_ms, payload) = match server.poll() {
                    Ok(Some(ServerEvent::Batch {
                        sequence,
                        created_ms,
                        payload,
                    })) => (sequence, created_ms, payload),
                    Ok(Some(ServerEvent::CommandResult(r))) => {
                        let id = r.id.clone();
                        self.hub.result(name, r);
                        let _ = ack_tx.send(ServerMessage::CommandAck { id }).await;
                        continue;
                    }
                    Ok(Some(ServerEvent::Hello(_))) => {
                        failed = Some(SessionError::Frame(CodecError::Malformed(
                            "unexpected hello after the handshake".into(),
                        )));
                        break;
                    }
                    Ok(None) => break,
                    Err(Ok(r)) => {
                        failed = Some(SessionError::Handshake(r.reason));
                        break;
                    }
                    Err(Err(e)) => {
                        failed = Some(e.into());
                        break;
                    }
                };
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let job = StoreJob {
                    storage: self.storage.clone(),
                    logs: self.logs.clone(),
                    traces: self.traces.clone(),
                    exemplars: self.exemplars.clone(),
                    registry: self.registry.clone(),
                    metrics: self.metrics.clone(),
                    agent: name.to_string(),
                    epoch,
                };
                let (acks, fails) = (ack_tx.clone(), fail_tx.clone());
                let arrived = std::time::Instant::now();
                if created_ms > 0 {
                    LATENCY
                        .batch_delay
                        .observe_secs((now_ms() - created_ms) as f64 / 1000.0);
                }
                tokio::spawn(async move {
                    let _permit = permit;
                    match job.store(sequence, payload).await {
                        Ok(m) => {
                            if matches!(m, ServerMessage::Ack { .. }) {
                                LATENCY.ingest.observe(arrived.elapsed());
                            }
                            let _ = acks.send(m).await;
                        }
                        Err(e) => {
                            let _ = fails.try_send(e);
                        }
                    }
                });
            }
            if let Some(e) = failed {
                break Err(e);
            }
            let chunk = tokio::select! {
                c = recv.read_chunk(256 * 1024, true) => c,
                Some(e) = fail_rx.recv() => break Err(e),
            };
            match chunk {
                Ok(Some(c)) => {
                    if let Err(e) = server.receive(&c.bytes) {
                        break Err(e.into());
                    }
                }
                Ok(None) => break server.finish().map_err(SessionError::from),
                Err(e) => break Err(SessionError::Lost(e.to_string())),
            }
        };
        if let Some(id) = conn_id {
            self.hub.unregister(name, id);
        }
        // Let stores in progress finish and their acks go out before closing.
        let _ = permits.acquire_many(IN_FLIGHT_PER_CONNECTION as u32).await;
        drop(ack_tx);
        if result.is_ok()
            && let Ok(Err(e)) = writer.await
        {
            return Err(e);
        }
        result
    }
}

struct StoreJob {
    storage: Arc<dyn Appender>,
    logs: Arc<dyn crate::logs::store::LogAppender>,
    traces: Arc<dyn crate::traces::store::SpanAppender>,
    exemplars: Arc<crate::metrics::exemplars::Exemplars>,
    registry: Arc<Registry>,
    metrics: Arc<SelfMetrics>,
    agent: String,
    epoch: u64,
}

impl StoreJob {
    async fn store(self, sequence: u64, payload: Vec<u8>) -> Result<ServerMessage, SessionError> {
        // Log lines and spans first: the batch is acknowledged only once every store has it
        // (each de-duplicates by origin, so a batch replayed after a failure in between is
        // stored once in each).
        let logs = match telltale_common::wire::batch_logs(&payload) {
            Ok(l) => l,
            Err(e) => {
                SelfMetrics::inc(&self.metrics.rejected_batches, 1);
                let reason = format!("undecodable log lines: {e}");
                tracing::error!(agent = %self.agent, sequence, %reason, "batch rejected");
                return Ok(ServerMessage::Rejected { sequence, reason });
            }
        };
        if !logs.is_empty() {
            let req = crate::logs::store::LogAppend {
                origin: Some(Origin {
                    agent: self.agent.clone(),
                    epoch: self.epoch,
                    sequence,
                }),
                streams: logs,
            };
            let (t, lines) = (
                std::time::Instant::now(),
                req.streams
                    .iter()
                    .map(|s| s.entries.len() as u64)
                    .sum::<u64>(),
            );
            match self.logs.append(req).await {
                Ok(_) => {
                    LATENCY.log_append.observe(t.elapsed());
                    SelfMetrics::inc(&LATENCY.log_lines, lines);
                }
                Err(crate::logs::store::LogStoreError::Invalid(reason)) => {
                    SelfMetrics::inc(&self.metrics.rejected_batches, 1);
                    tracing::error!(agent = %self.agent, sequence, %reason, "batch rejected");
                    return Ok(ServerMessage::Rejected { sequence, reason });
                }
                Err(e) => return Err(SessionError::Storage(e.to_string())),
            }
        }
        let spans = match telltale_common::wire::batch_spans(&payload) {
            Ok(s) => s,
            Err(e) => {
                SelfMetrics::inc(&self.metrics.rejected_batches, 1);
                let reason = format!("undecodable spans: {e}");
                tracing::error!(agent = %self.agent, sequence, %reason, "batch rejected");
                return Ok(ServerMessage::Rejected { sequence, reason });
            }
        };
        if !spans.is_empty() {
            let req = crate::traces::store::SpanAppend {
                origin: Some(Origin {
                    agent: self.agent.clone(),
                    epoch: self.epoch,
                    sequence,
                }),
                spans,
            };
            let (t, n) = (std::time::Instant::now(), req.spans.len() as u64);
            if let Err(e) = self.traces.append(req).await {
                return Err(SessionError::Storage(e.to_string()));
            }
            LATENCY.span_append.observe(t.elapsed());
            SelfMetrics::inc(&LATENCY.spans, n);
        }
        // Exemplars before the samples: a batch replayed after a failure in between may
        // add its exemplars twice (harmless: the newest are kept), never lose them.
        match telltale_common::wire::batch_exemplars(&payload) {
            Ok(x) if !x.is_empty() => {
                let (store, agent) = (self.exemplars.clone(), self.agent.clone());
                tokio::task::spawn_blocking(move || store.add(&agent, x))
                    .await
                    .map_err(|e| SessionError::Storage(e.to_string()))?
                    .map_err(|e| SessionError::Storage(format!("exemplars: {e}")))?;
            }
            Ok(_) => {}
            Err(e) => {
                SelfMetrics::inc(&self.metrics.rejected_batches, 1);
                let reason = format!("undecodable exemplars: {e}");
                tracing::error!(agent = %self.agent, sequence, %reason, "batch rejected");
                return Ok(ServerMessage::Rejected { sequence, reason });
            }
        }
        let req = AppendRequest {
            origin: Some(Origin {
                agent: self.agent.clone(),
                epoch: self.epoch,
                sequence,
            }),
            data: AppendData::Encoded(payload),
        };
        let t = std::time::Instant::now();
        match self.storage.append(req).await {
            Ok(AppendOutcome::Stored { samples }) => {
                LATENCY.tsdb_append.observe(t.elapsed());
                SelfMetrics::inc(&self.metrics.batches, 1);
                SelfMetrics::inc(&self.metrics.samples, samples as u64);
                self.registry
                    .batch(&self.agent, sequence, samples, now_ms());
            }
            Ok(AppendOutcome::Invalid { reason }) => {
                SelfMetrics::inc(&self.metrics.rejected_batches, 1);
                tracing::error!(agent = %self.agent, sequence, %reason, "batch rejected");
                return Ok(ServerMessage::Rejected { sequence, reason });
            }
            Ok(AppendOutcome::Duplicate) => {
                SelfMetrics::inc(&self.metrics.duplicate_batches, 1);
                tracing::debug!(agent = %self.agent, sequence, "replayed batch acknowledged, not stored twice");
            }
            Err(e) => return Err(SessionError::Storage(e.to_string())),
        }
        Ok(ServerMessage::Ack { sequence })
    }
}

#[cfg(test)]
mod tests {
    /// Two `up` writes never share a timestamp, even in one millisecond or with the clock
    /// stepping back; and they follow the clock when it moves on.
    #[test]
    fn up_writes_never_share_a_timestamp() {
        let a = super::up_time(1_000);
        let b = super::up_time(1_000);
        let c = super::up_time(500);
        assert!(a < b && b < c, "{a} {b} {c}");
        let later = c + 60_000;
        assert_eq!(super::up_time(later), later);
    }
}
