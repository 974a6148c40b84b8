//! Wiring: opens storage, starts QUIC ingest, the `up` ticker and the HTTP API, and shuts
//! them down on SIGINT or SIGTERM.

pub mod http;
pub mod https;
pub mod lenient;
pub mod memory;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use telltale_common::tls::{CaFiles, TlsPaths};

use crate::agents::Registry;
use crate::alerting::service::{AlertingService, StateStore};
use crate::api::{self, ApiState};
use crate::config::Config;
use crate::ingest::Ingest;
use crate::metrics::promql::Engine;
use crate::metrics::storage::{AGENT_JOB, Admin, Matcher, Storage};
use crate::metrics::tsdb::Tsdb;
use crate::metrics::tsdb::progress::{Phase, Progress};
use crate::reload::{Alerting, Reload, ReloadStatus};
use crate::remediate::driver::Remediator;
use crate::rules::manager::{RuleManager, Settings as RuleSettings};
use crate::selfmetrics::SelfMetrics;

/// A running aggregator, as tests and the demo need it.
pub struct Running {
    /// The bound HTTP address.
    pub http: SocketAddr,
    /// The bound QUIC address.
    pub quic: SocketAddr,
}

/// The QUIC endpoint, with a stateless-reset key derived from the server's private key: it
/// is the same after a restart, so the first packet an agent sends on its old connection is
/// answered with a reset the agent recognises, and it reconnects at once instead of waiting
/// out the idle timeout (a random key per process, quinn's default, would be ignored).
fn quic_endpoint(
    server_cfg: quinn::ServerConfig,
    addr: SocketAddr,
    key_file: &std::path::Path,
) -> anyhow::Result<quinn::Endpoint> {
    use ring::hmac;
    let key_bytes =
        std::fs::read(key_file).with_context(|| format!("cannot read {}", key_file.display()))?;
    let derive = hmac::Key::new(hmac::HMAC_SHA256, b"telltale-aggregator stateless reset v1");
    let secret = hmac::sign(&derive, &key_bytes);
    let reset_key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_ref());
    let mut endpoint_cfg = quinn::EndpointConfig::new(Arc::new(reset_key));
    // quinn's default generator has a random key per process and drops packets for ids it
    // did not make without answering them: a restarted aggregator must answer them.
    endpoint_cfg.cid_generator(|| Box::new(AnyInstanceCids));
    // quinn answers at most one unknown packet with a reset per 20 ms, for the whole
    // endpoint: after a restart under a fleet of 1 000 agents, 44 % waited out their 15 s ack
    // timeout instead (`telltale-bench fleet`). A reset is smaller than the packet that
    // incites it (no amplification) and costs one HMAC; 4 000 a second lets 10 000 agents
    // find out within the few seconds their next packets take to arrive.
    endpoint_cfg.min_reset_interval(std::time::Duration::from_micros(250));
    let socket = std::net::UdpSocket::bind(addr)?;
    enlarge_receive_buffer(&socket);
    Ok(quinn::Endpoint::new(
        endpoint_cfg,
        Some(server_cfg),
        socket,
        Arc::new(quinn::TokioRuntime),
    )?)
}

/// What the QUIC socket asks for to receive into. One socket takes every agent's packets; the
/// kernel's default (208 KiB, about a hundred packets) overflowed when a restarted aggregator's
/// 10 000 agents came back at once: a third of the datagrams were dropped at the socket,
/// handshakes and acknowledgements were lost, and agents gave up sessions that were working —
/// the storm never settled (`telltale-bench fleet`). quic-go asks for 7 MiB for the same reason.
const QUIC_RECEIVE_BUFFER: usize = 32 << 20;

/// Sets the socket's receive buffer to [`QUIC_RECEIVE_BUFFER`]: beyond `net.core.rmem_max`
/// when the process may (CAP_NET_ADMIN, as root), else up to it, with a warning that says how
/// to raise it. Linux reports twice what was set (it counts its bookkeeping).
fn enlarge_receive_buffer(socket: &std::net::UdpSocket) {
    use rustix::net::sockopt;
    if sockopt::set_socket_recv_buffer_size_force(socket, QUIC_RECEIVE_BUFFER).is_err() {
        let _ = sockopt::set_socket_recv_buffer_size(socket, QUIC_RECEIVE_BUFFER);
    }
    match sockopt::socket_recv_buffer_size(socket) {
        Ok(n) if n < QUIC_RECEIVE_BUFFER => tracing::warn!(
            bytes = n,
            wanted = QUIC_RECEIVE_BUFFER,
            "the QUIC socket's receive buffer is small for a large fleet; raise it with \
             `sysctl -w net.core.rmem_max={QUIC_RECEIVE_BUFFER}` (the packages' sysctl file does)"
        ),
        Ok(n) => tracing::debug!(bytes = n, "QUIC socket receive buffer"),
        Err(e) => tracing::warn!(error = %e, "cannot read the QUIC socket's receive buffer size"),
    }
}

/// Random 8-byte QUIC connection ids that every instance accepts as possibly its own
/// (`validate` keeps its default), so a packet for a connection of an earlier instance is
/// answered with a stateless reset instead of being dropped.
struct AnyInstanceCids;

impl quinn::ConnectionIdGenerator for AnyInstanceCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        quinn::ConnectionId::new(&rand::random::<[u8; 8]>())
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<std::time::Duration> {
        None
    }
}

/// Runs the aggregator until a shutdown signal.
pub async fn serve(cfg: Config, alerting: Alerting) -> anyhow::Result<()> {
    crate::api::status::started();
    // Resident memory follows the live heap, not its largest peak (serve/memory.rs).
    if !memory::configure() {
        tracing::debug!("the allocator's mmap threshold is not adjustable here");
    }
    tokio::spawn(async {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(30));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let _ = tokio::task::spawn_blocking(memory::trim).await;
        }
    });
    let tls = TlsPaths {
        ca: cfg.tls_dir.join(CaFiles::CA_CERT),
        cert: cfg.tls_dir.join(CaFiles::SERVER_CERT),
        key: cfg.tls_dir.join(CaFiles::SERVER_KEY),
    };
    let server_cfg = tls.load()?.server_config()?;
    // HTTPS material is read before anything else starts: a bad file stops start-up.
    let http_tls = match &cfg.http_tls {
        Some((cert, key, ca)) => Some(https::server_config(cert, key, ca.as_deref())?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(cfg.http_listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", cfg.http_listen))?;
    let endpoint = quic_endpoint(server_cfg, cfg.quic_listen, &tls.key)
        .with_context(|| format!("cannot listen for QUIC on {}", cfg.quic_listen))?;

    // While storage recovers, the HTTP port answers: healthy, not ready, and how far.
    let progress = Arc::new(Progress::default());
    let (listener, startup) = startup_server(listener, progress.clone(), http_tls.clone())?;
    tokio::spawn(report_progress(progress.clone()));
    let started = std::time::Instant::now();
    let data_dir = cfg.data_dir.clone();
    let opts = cfg.storage.clone();
    // remote_write queues hold the WAL segments they have not sent: their positions are
    // read before storage opens, so its start-up keeps those segments.
    // The ClickHouse exporter holds the logs WAL alike.
    let (logs_hold, traces_hold) = (cfg.logs.wal_hold.clone(), cfg.traces.wal_hold.clone());
    let forward = Arc::new(
        crate::forward::Forwarders::prepare(
            &cfg.data_dir,
            &cfg.remote_write,
            opts.wal_hold.clone(),
        )
        .and_then(|f| {
            f.with_clickhouse(
                &cfg.data_dir,
                cfg.clickhouse.as_ref(),
                logs_hold,
                traces_hold.clone(),
                &cfg.external_url,
            )
        })
        .and_then(|f| f.with_pool(&cfg.data_dir, cfg.trace_pool.as_ref(), &traces_hold))
        .context("cannot prepare the remote_write queues and the ClickHouse exporter")?,
    );
    let p = progress.clone();
    let store = tokio::task::spawn_blocking(move || Tsdb::open_reporting(&data_dir, opts, &p))
        .await
        .context("storage recovery panicked")??;
    forward.start(store.wal_feed());
    if cfg.storage.forward_only {
        tracing::info!(
            queues = cfg.remote_write.len(),
            "forward-only: samples are logged and sent to the remote_write queues, not stored"
        );
    }
    let r = &store.recovery;
    tracing::info!(
        segments = r.segments, records = r.records, corrupt = r.corrupt,
        truncated_bytes = r.truncated_bytes, blocks = r.blocks, quarantined = r.quarantined, samples = store.stats().samples,
        elapsed = ?started.elapsed(), "storage recovered"
    );
    let corrupt_records = r.corrupt;
    let storage: Arc<dyn Storage> = Arc::new(store);
    progress.phase(Phase::Logs, 0);
    let (logs_dir, logs_opts) = (cfg.data_dir.join("logs"), cfg.logs.clone());
    let log_engine = tokio::task::spawn_blocking(move || {
        crate::logs::engine::LogEngine::open(&logs_dir, logs_opts)
    })
    .await
    .context("log store recovery panicked")??;
    forward.start_clickhouse(crate::forward::clickhouse::Signal::Logs, log_engine.feed());
    let patterns = Arc::new(crate::logs::patterns::Patterns::new(
        cfg.logs_pattern_warmup,
    ));
    let observed = Arc::new(
        crate::logs::observe::Observed::new(Arc::new(log_engine), patterns.clone())
            .context("cannot start the log pattern thread")?,
    );
    let logs: Arc<dyn crate::logs::store::LogStore> = observed.clone();
    progress.phase(Phase::Traces, 0);
    let (traces_dir, mut traces_opts) = (cfg.data_dir.join("traces"), cfg.traces.clone());
    // The spans exporter reads what joined the store after sampling from the WAL.
    traces_opts.kept_records = forward.exports(crate::forward::clickhouse::Signal::Spans);
    let trace_engine = tokio::task::spawn_blocking(move || {
        crate::traces::engine::TraceEngine::open(&traces_dir, traces_opts)
    })
    .await
    .context("trace store recovery panicked")??;
    forward.start_clickhouse(
        crate::forward::clickhouse::Signal::Spans,
        trace_engine.feed(),
    );
    forward.start_pool(trace_engine.feed());
    let traces: Arc<dyn crate::traces::store::TraceStore> = Arc::new(trace_engine);
    tokio::spawn(write_patterns(
        patterns.clone(),
        storage.clone(),
        cfg.logs_pattern_interval,
    ));
    let exemplars = Arc::new(
        crate::metrics::exemplars::Exemplars::open(
            &cfg.data_dir,
            crate::metrics::exemplars::DEFAULT_CAPACITY,
        )
        .context("cannot open the exemplar store")?,
    );
    progress.phase(Phase::Starting, 0);
    let registry = Arc::new(Registry::keeping_moved(
        cfg.data_dir.join("agents-moved.json"),
    ));
    for l in storage.series(
        &[
            Matcher::equal("__name__", "up"),
            Matcher::equal("job", AGENT_JOB),
        ],
        i64::MIN,
        i64::MAX,
    ) {
        if let Some(i) = l.get("instance") {
            registry.know(i);
        }
    }
    let engine = Engine::new(storage.clone(), cfg.lookback_delta, cfg.query_max_samples)
        .with_timeout(cfg.query_timeout)
        .with_stack_budget(crate::metrics::promql::SERVER_STACK_BUDGET);
    // Alerting and remediation are two drivers joined by channels: alerts the alerting side
    // saw go to remediation, remediation's news come back for incidents and pages, and the
    // hub reports agents' connections and command results to remediation.
    let (hub_tx, hub_rx) = tokio::sync::mpsc::unbounded_channel();
    let (alerts_tx, alerts_rx) = tokio::sync::mpsc::unbounded_channel();
    let (news_tx, news_rx) = tokio::sync::mpsc::unbounded_channel();
    let hub = Arc::new(crate::remediate::hub::Hub::new(hub_tx));
    let state_store = StateStore::open(&cfg.data_dir.join("alerting"))
        .map_err(crate::alerting::service::StateError::from)?;
    let remediation = Remediator::open(
        alerting.runbooks,
        state_store.clone(),
        hub.clone(),
        Some(storage.clone()),
        news_tx,
        crate::remediate::driver::Inputs {
            alerts: alerts_rx,
            hub: hub_rx,
        },
    );
    let alerts = AlertingService::open(
        alerting.routing,
        state_store,
        &cfg.external_url,
        alerts_tx,
        news_rx,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let rule_count: usize = alerting.groups.iter().map(|g| g.rules.len()).sum();
    let settings = RuleSettings {
        logs: Some(crate::rules::manager::LogSource {
            store: logs.clone(),
            limits: crate::logs::logql::eval::Limits {
                max_bytes: cfg.logs_max_query_bytes,
                ..Default::default()
            },
        }),
        eager_min_interval: cfg.eager_min_interval,
        external_labels: cfg.external_labels.clone(),
        external_url: cfg.external_url.clone(),
    };
    let rules = RuleManager::new(
        engine.clone(),
        storage.clone(),
        alerts.clone(),
        settings.clone(),
        alerting.groups,
    );
    rules.start();
    tracing::info!(rules = rule_count, "rules loaded");
    let slos = alerting.slos;
    let detectors = crate::anomaly::live::Detectors::new(
        engine.clone(),
        storage.clone(),
        alerting.detectors,
        crate::anomaly::live::budget::Budget::new(cfg.anomaly_max_model_bytes),
    );
    detectors.start();
    let metrics = Arc::new(SelfMetrics::default());
    let ingest = Arc::new(Ingest {
        current: Default::default(),
        storage: storage.clone(),
        logs: logs.clone(),
        traces: traces.clone(),
        exemplars: exemplars.clone(),
        registry: registry.clone(),
        metrics: metrics.clone(),
        max_frame: cfg.max_frame_bytes,
        hub,
    });
    tokio::spawn(trace_graph(
        traces.clone(),
        alerts.clone(),
        storage.clone(),
        cfg.traces.graph_interval,
    ));
    let archived = alerts.clone();
    forward.start_incidents(move || archived.incidents("all"));
    let alerts_for_shutdown = alerts.clone();
    let sampler = Arc::new(crate::pipeline::sampler::Sampler::new(metrics.clone()));
    tokio::spawn(sampler.clone().run());
    let state = Arc::new(ApiState {
        forward_only: cfg.storage.forward_only,
        storage: storage.clone(),
        engine,
        rules: std::sync::RwLock::new(rules),
        anomaly: std::sync::RwLock::new(detectors),
        slos: std::sync::RwLock::new(Arc::new(slos)),
        dashboards: cfg.dashboards.clone(),
        reports: Arc::new(crate::report::store::ReportStore::open(
            &cfg.data_dir.join("reports"),
        )?),
        reload: Reload {
            cfg: cfg.clone(),
            settings,
            lock: tokio::sync::Mutex::new(()),
            status: ReloadStatus::default(),
        },
        alerts,
        remediation,
        registry: registry.clone(),
        metrics,
        corrupt_records,
        ready: AtomicBool::new(false),
        api_token: cfg.api_token.clone(),
        read_token: cfg.read_token.clone(),
        logs,
        traces,
        exemplars,
        live_logs: observed,
        patterns,
        logs_max_query_bytes: cfg.logs_max_query_bytes,
        pipeline: sampler,
        forward: forward.clone(),
    });

    let http = listener.local_addr()?;
    let quic = endpoint.local_addr()?;
    tokio::spawn(ingest.clone().run(endpoint.clone()));
    tokio::spawn(crate::api::report::run_schedules(
        state.clone(),
        cfg.reports.clone(),
    ));
    let ticker_ingest = ingest.clone();
    let up_interval = cfg.up_interval;
    tokio::spawn(async move {
        let mut t = tokio::time::interval(up_interval);
        loop {
            t.tick().await;
            let agents: Vec<(String, bool)> = ticker_ingest
                .registry
                .list()
                .into_iter()
                // An agent that moved to another aggregator is not down.
                .filter(|a| !a.moved_away)
                .map(|a| (a.name, a.connected))
                .collect();
            ticker_ingest.write_up(&agents).await;
        }
    });
    // Signals are watched before the process says it listens: a SIGTERM or SIGHUP sent as
    // soon as it does must not meet the default action (which ends the process).
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    // SIGHUP reloads rules, routes and runbooks (systemd's ExecReload sends it).
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            let st = state.clone();
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading configuration");
                    let _ = st.reload().await;
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot watch SIGHUP: reload with POST /-/reload"),
    }
    state.ready.store(true, Ordering::Relaxed);
    // The start-up answers stop; requests wait in the listen queue for the real router.
    // Only then is the phase "ready": the start-up server never answers "not ready: ready".
    startup.stop().await;
    progress.phase(Phase::Ready, 0);
    // The demo and the tests read this line to find the bound ports.
    tracing::info!(%http, %quic, "telltale-aggregator listening");
    let running = Running { http, quic };
    println!("listening http={} quic={}", running.http, running.quic);
    let nofile = http::raise_nofile();
    let max_conns = http::max_connections(cfg.http_max_connections, nofile);
    tracing::info!(nofile, max_conns, header_timeout = ?cfg.http_header_timeout, "HTTP limits");
    http::serve(
        listener,
        api::router(state),
        http_tls,
        (max_conns, cfg.http_header_timeout),
        shutdown_signal(term),
    )
    .await;
    tracing::info!("shutting down");
    alerts_for_shutdown.persist().await;
    forward.shutdown();
    endpoint.close(0u32.into(), b"aggregator shutting down");
    endpoint.wait_idle().await;
    Ok(())
}

/// The HTTP answers while storage recovers, on a clone of the listening socket.
struct Startup {
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

impl Startup {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.done.await;
    }
}

/// Serves `/-/healthy` (200), `/-/ready` (503 with the progress) and 503 for the rest on a
/// clone of `listener`, until stopped; returns the listener for the real router.
fn startup_server(
    listener: tokio::net::TcpListener,
    progress: Arc<Progress>,
    tls: Option<rustls::ServerConfig>,
) -> anyhow::Result<(tokio::net::TcpListener, Startup)> {
    use axum::http::StatusCode;
    let std_listener = listener.into_std()?;
    let clone = tokio::net::TcpListener::from_std(std_listener.try_clone()?)?;
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    let p = progress.clone();
    let ready = move || {
        let p = p.clone();
        async move {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("Telltale is not ready: {}\n", p.text()),
            )
        }
    };
    let rest = move || {
        let p = progress.clone();
        async move {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({
                    "status": "error",
                    "errorType": "unavailable",
                    "error": format!("starting: {}", p.text()),
                })),
            )
        }
    };
    let app = axum::Router::new()
        .route(
            "/-/healthy",
            axum::routing::get(|| async { "Telltale is Healthy.\n" }),
        )
        .route("/-/ready", axum::routing::get(ready))
        .fallback(rest);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let acceptor = tls.map(|t| tokio_rustls::TlsAcceptor::from(Arc::new(t)));
    // Stopping ends the accepting only: a connection already accepted gets its answer (one
    // request each, then closed). hyper's graceful shutdown would close one whose request
    // it had not read yet, and the client would see a reset at the hand-over to the real
    // router, which takes the next connections from the same socket.
    //
    // Stopping also waits (up to 2 s) for those answers, so none is computed after the phase
    // turns "ready": the start-up server never answers "not ready: ready".
    let done = tokio::spawn(async move {
        let mut stopped = std::pin::pin!(stopped);
        let mut conns = tokio::task::JoinSet::new();
        loop {
            while conns.try_join_next().is_some() {}
            let tcp = tokio::select! {
                a = clone.accept() => match a {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        tracing::warn!(error = %e, "start-up HTTP accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = &mut stopped => break,
            };
            let (app, acceptor) = (app.clone(), acceptor.clone());
            conns.spawn(async move {
                let service = hyper_util::service::TowerToHyperService::new(app);
                let http = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .keep_alive(false)
                    .clone();
                // With HTTPS configured, the start-up answers are HTTPS too.
                let _ = match acceptor {
                    Some(a) => {
                        let handshake = a.accept(tcp);
                        match tokio::time::timeout(https::HANDSHAKE_TIMEOUT, handshake).await {
                            Ok(Ok(s)) => {
                                let io = hyper_util::rt::TokioIo::new(lenient::Lenient::new(s));
                                http.serve_connection(io, service).await
                            }
                            _ => return,
                        }
                    }
                    None => {
                        let io = hyper_util::rt::TokioIo::new(lenient::Lenient::new(tcp));
                        http.serve_connection(io, service).await
                    }
                };
            });
        }
        let wait = std::time::Duration::from_secs(2);
        let all = async { while conns.join_next().await.is_some() {} };
        if tokio::time::timeout(wait, all).await.is_err() {
            // A client that has not sent its request in 2 s is answered when it does.
            conns.detach_all();
        }
    });
    Ok((listener, Startup { stop, done }))
}

/// Logs start-up progress every 5 s until ready (nothing when start-up is quick).
async fn report_progress(progress: Arc<Progress>) {
    let mut t = tokio::time::interval(std::time::Duration::from_secs(5));
    t.tick().await;
    loop {
        t.tick().await;
        if progress.ready() {
            return;
        }
        tracing::info!("starting: {}", progress.text());
    }
}

async fn shutdown_signal(term: std::io::Result<tokio::signal::unix::Signal>) {
    let mut term = match term {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Writes the log pattern counters and events every `interval`, through the metrics
/// storage like an agent's batch (series and events in one record).
async fn write_patterns(
    patterns: Arc<crate::logs::patterns::Patterns>,
    storage: Arc<dyn Storage>,
    interval: std::time::Duration,
) {
    let mut t = tokio::time::interval(interval);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        t.tick().await;
        let p = patterns.clone();
        let flushed =
            match tokio::task::spawn_blocking(move || p.flush(telltale_common::model::now_ms()))
                .await
            {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(error = %e, "log pattern flush panicked");
                    continue;
                }
            };
        for e in &flushed.events {
            tracing::info!(kind = %e.kind, message = %e.message, "log pattern event");
        }
        store_own(&storage, "log pattern", flushed.series, flushed.events).await;
    }
}

/// Stores series and events the aggregator derives itself (no agent origin).
async fn store_own(
    storage: &Arc<dyn Storage>,
    what: &str,
    series: Vec<telltale_common::model::SeriesSamples>,
    events: Vec<telltale_common::wire::Event>,
) {
    use telltale_common::wire::{Batch, ClientMessage};
    if series.is_empty() && events.is_empty() {
        return;
    }
    let batch = ClientMessage::Batch(Batch {
        sequence: 0,
        created_ms: telltale_common::model::now_ms(),
        series,
        events,
        spans: Vec::new(),
        exemplars: Vec::new(),
        logs: Vec::new(),
    });
    let data = match telltale_common::codec::encode_payload(&batch) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the {what} series");
            return;
        }
    };
    let req = crate::metrics::storage::AppendRequest {
        origin: None,
        data: crate::metrics::storage::AppendData::Encoded(data),
    };
    match storage.append(req).await {
        Ok(crate::metrics::storage::AppendOutcome::Invalid { reason }) => {
            tracing::warn!(%reason, "{what} series refused")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot store the {what} series"),
    }
}

/// Every `interval`: writes the service graph series (`traces_service_graph_*`, from every
/// span received) and hands the topology seen in traces to incident correlation.
async fn trace_graph(
    traces: Arc<dyn crate::traces::store::TraceStore>,
    alerts: Arc<AlertingService>,
    storage: Arc<dyn Storage>,
    interval: std::time::Duration,
) {
    let mut t = tokio::time::interval(interval);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        t.tick().await;
        let tr = traces.clone();
        let Ok((series, topology)) = tokio::task::spawn_blocking(move || {
            (
                tr.graph_series(telltale_common::model::now_ms()),
                tr.topology(),
            )
        })
        .await
        else {
            continue;
        };
        if !topology.calls.is_empty() || !topology.hosts.is_empty() {
            alerts.learn_topology(&topology.calls, &topology.hosts);
        }
        store_own(&storage, "service graph", series, Vec::new()).await;
    }
}

#[cfg(test)]
mod receive_buffer_tests {
    use super::*;

    /// The socket gets the buffer asked for, or as much of it as `net.core.rmem_max` allows
    /// (Linux reports twice what was set); the kernel's default is far below either.
    #[test]
    fn the_quic_socket_asks_for_a_large_receive_buffer() {
        let Ok(socket) = std::net::UdpSocket::bind("127.0.0.1:0") else {
            return;
        };
        enlarge_receive_buffer(&socket);
        let got = rustix::net::sockopt::socket_recv_buffer_size(&socket).unwrap_or(0);
        let max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(QUIC_RECEIVE_BUFFER);
        let want = 2 * QUIC_RECEIVE_BUFFER.min(max);
        assert!(
            got >= want,
            "receive buffer {got} bytes, want at least {want}"
        );
    }
}
