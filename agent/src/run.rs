//! The agent's tasks: one per source (host collectors and the agent's own metrics every
//! interval, each scrape target, each health check, the textfile directory, the StatsD flush),
//! all feeding one channel; one task runs the [`crate::pipeline`] over what arrives, merges it
//! into a batch, stores it durably and wakes the shipper.

mod held;
pub mod memory;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use telltale_common::config::ConfigError;
use telltale_common::model::now_ms;
use telltale_common::names;
use telltale_common::wire::Batch;
use tokio::sync::{Notify, mpsc, watch};

use crate::buffer::Buffer;
use crate::config::Config;
use crate::pipeline::hostinfo::HostInfo;
use crate::pipeline::logsink::{BoxFuture, LogSink, Positions, SinkError};
use crate::pipeline::relabel::Rule;
use crate::pipeline::{Processor, SourceBatch};
use crate::sources::host::{self, Out, Root};
use crate::sources::statsd::StatsdStats;
use crate::transport::shipper::{RemediationLink, ShipStats, Shipper, Target, ToRemediation};

/// The agent's own process, measured with sysinfo.
struct SelfProcess {
    sys: Option<sysinfo::System>,
    pid: Option<sysinfo::Pid>,
}

impl SelfProcess {
    fn new() -> SelfProcess {
        SelfProcess {
            sys: sysinfo::System::new().ok(),
            pid: sysinfo::get_current_pid().ok(),
        }
    }

    /// `(cpu seconds, resident bytes)`.
    fn sample(&mut self) -> Option<(f64, f64)> {
        let pid = self.pid?;
        let sys = self.sys.as_mut()?;
        sys.refresh_processes_specifics(
            sysinfo::ProcessesToUpdate::Some(&[pid]),
            false,
            sysinfo::ProcessRefreshKind::nothing()
                .with_memory()
                .with_cpu()
                .without_tasks(),
        );
        let p = sys.process(pid)?;
        Some((p.accumulated_cpu_time() as f64 / 1000.0, p.memory() as f64))
    }
}

fn own(out: &mut Out, name: &str, v: f64) {
    out.add(name, &[], v);
}

/// The agent's sources as its hello names them.
fn source_names(cfg: &Config) -> Vec<String> {
    let s = &cfg.sources;
    let mut out = vec!["host".to_string()];
    out.extend(s.scrape.iter().map(|j| format!("scrape:{}", j.job)));
    if s.statsd.is_some() {
        out.push("statsd".into());
    }
    if s.textfile.is_some() {
        out.push("textfile".into());
    }
    out.extend(s.checks.iter().map(|c| format!("check:{}", c.name)));
    let l = &cfg.logs;
    for (kind, n) in [
        ("file", l.files.len()),
        ("syslog", l.syslog.len()),
        ("forward", l.forward.len()),
        ("journald", l.journald.len()),
        ("loki", l.loki.len()),
    ] {
        if n > 0 {
            out.push(format!("logs:{kind}"));
        }
    }
    if cfg.otlp.is_some() {
        out.push("traces".into());
    }
    out
}

/// A histogram as the series Prometheus' text format names (`_bucket{le}`, `_sum`, `_count`).
fn histogram(out: &mut Out, name: &str, h: &telltale_common::histogram::Snapshot) {
    let bucket = format!("{name}_bucket");
    for (le, n) in h.cumulative() {
        out.add(
            &bucket,
            &[("le", &telltale_common::histogram::le_label(le))],
            n as f64,
        );
    }
    own(out, &format!("{name}_sum"), h.sum_secs());
    own(out, &format!("{name}_count"), h.count() as f64);
}

/// What the host loop reports about the agent itself.
struct Own {
    buffer: Arc<Buffer>,
    stats: Arc<ShipStats>,
    statsd: Option<Arc<StatsdStats>>,
    /// Only with log sources configured.
    logs: Option<Arc<crate::sources::logfile::LogStats>>,
    host: HostInfo,
    /// Durations of the host collections.
    collect: telltale_common::histogram::Histogram,
}

impl Own {
    fn add(&self, out: &mut Out, last_collect: Duration, me: &mut SelfProcess) {
        let b = &self.buffer;
        own(out, names::AGENT_BUFFER_BATCHES, b.len() as f64);
        own(out, names::AGENT_BUFFER_BYTES, b.bytes() as f64);
        own(out, names::AGENT_DROPPED_BATCHES, b.dropped() as f64);
        own(
            out,
            names::AGENT_DISK_FULL,
            f64::from(u8::from(b.disk_full())),
        );
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let s = &self.stats;
        own(out, names::AGENT_SHIPPED_BATCHES, l(&s.batches));
        own(out, names::AGENT_SHIPPED_SAMPLES, l(&s.samples));
        histogram(out, names::AGENT_ACK_LATENCY, &s.ack_latency.snapshot());
        own(out, names::AGENT_CONNECTS, l(&s.connects));
        own(out, names::AGENT_CONNECTED, l(&s.connected));
        // Zero before the first collection has been timed.
        if !last_collect.is_zero() {
            self.collect.observe(last_collect);
        }
        histogram(out, names::AGENT_COLLECT_DURATION, &self.collect.snapshot());
        if let Some(st) = &self.statsd {
            own(out, "telltale_agent_statsd_packets_total", l(&st.packets));
            own(out, "telltale_agent_statsd_lines_total", l(&st.lines));
            own(
                out,
                "telltale_agent_statsd_malformed_total",
                l(&st.malformed),
            );
            own(out, "telltale_agent_statsd_dropped_total", l(&st.dropped));
        }
        if let Some(lg) = &self.logs {
            own(out, "telltale_agent_log_lines_total", l(&lg.lines));
            own(out, "telltale_agent_log_bytes_total", l(&lg.bytes));
            own(out, "telltale_agent_log_lines_cut_total", l(&lg.cut));
            own(
                out,
                "telltale_agent_log_truncations_total",
                l(&lg.truncations),
            );
            own(out, "telltale_agent_log_errors_total", l(&lg.errors));
            own(out, "telltale_agent_log_malformed_total", l(&lg.malformed));
            let (levels, counters, dropped) = lg.counts.snapshot();
            for (source, level, n) in levels {
                out.add(
                    "telltale_agent_log_lines_by_level_total",
                    &[("source", &source), ("level", level)],
                    n as f64,
                );
            }
            for (source, counter, n) in counters {
                out.add(
                    "telltale_agent_log_matches_total",
                    &[("source", &source), ("counter", &counter)],
                    n as f64,
                );
            }
            for (source, n) in dropped {
                out.add(
                    "telltale_agent_log_lines_dropped_total",
                    &[("source", &source)],
                    n as f64,
                );
            }
        }
        if let Some((cpu, rss)) = me.sample() {
            own(out, "telltale_agent_process_cpu_seconds_total", cpu);
            own(out, "telltale_agent_process_resident_memory_bytes", rss);
        }
        let h = &self.host;
        out.add(
            "telltale_host_info",
            &[
                ("os", &h.os),
                ("os_version", &h.os_version),
                ("kernel", &h.kernel),
                ("arch", &h.arch),
                ("container", &h.container),
                ("cloud", &h.cloud),
            ],
            1.0,
        );
    }
}

fn no_rules() -> Arc<[Rule]> {
    Arc::from(Vec::new())
}

/// Sends one source batch; false when the pipeline is gone (shutting down).
async fn send(
    tx: &mpsc::Sender<SourceBatch>,
    source: &Arc<str>,
    relabel: &Arc<[Rule]>,
    series: Vec<telltale_common::model::SeriesSamples>,
) -> bool {
    tx.send(SourceBatch {
        exemplars: Vec::new(),
        source: source.clone(),
        relabel: relabel.clone(),
        series,
        events: Vec::new(),
    })
    .await
    .is_ok()
}

/// The host collectors and the agent's own metrics, every interval.
async fn host_loop(
    interval: Duration,
    optional: host::Optional,
    relabel: Arc<[Rule]>,
    own: Own,
    tx: mpsc::Sender<SourceBatch>,
) {
    let root = Root::default();
    let mut me = SelfProcess::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_collect = Duration::ZERO;
    let (host, agent): (Arc<str>, Arc<str>) = (Arc::from("host"), Arc::from("agent"));
    loop {
        tick.tick().await;
        let started = tokio::time::Instant::now();
        let mut out = Out::new(now_ms());
        host::collect_all(&root, optional, &mut out);
        for (c, e) in &out.errors {
            tracing::debug!(collector = c, error = %e, "collector failed");
        }
        let mut mine = Out::new(out.t_ms());
        own.add(&mut mine, last_collect, &mut me);
        last_collect = started.elapsed();
        // The agent's own series skip the host relabel rules: they are how an operator sees
        // the agent itself.
        if !send(&tx, &host, &relabel, out.series).await
            || !send(&tx, &agent, &no_rules(), mine.series).await
        {
            return;
        }
    }
}

async fn textfile_loop(
    dir: std::path::PathBuf,
    interval: Duration,
    relabel: Arc<[Rule]>,
    limits: crate::sources::textfile::Limits,
    tx: mpsc::Sender<SourceBatch>,
) {
    let source: Arc<str> = Arc::from("textfile");
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_errors = Vec::new();
    loop {
        tick.tick().await;
        let d = dir.clone();
        let t = now_ms();
        let Ok((series, errors)) =
            tokio::task::spawn_blocking(move || crate::sources::textfile::collect(&d, t, &limits))
                .await
        else {
            return;
        };
        if errors != last_errors {
            for e in &errors {
                tracing::warn!(directory = %dir.display(), error = %e, "textfile skipped");
            }
            last_errors = errors;
        }
        if !send(&tx, &source, &relabel, series).await {
            return;
        }
    }
}

async fn statsd_loop(
    listener: Arc<crate::sources::statsd::Listener>,
    cfg: crate::sources::statsd::StatsdConfig,
    relabel: Arc<[Rule]>,
    tx: mpsc::Sender<SourceBatch>,
) {
    let source: Arc<str> = Arc::from("statsd");
    let expire_flushes =
        (cfg.expire.as_secs_f64() / cfg.flush_interval.as_secs_f64()).ceil() as u32;
    let mut tick = tokio::time::interval(cfg.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick.tick().await;
    loop {
        tick.tick().await;
        let series = match listener.agg.lock() {
            Ok(mut a) => a.flush(now_ms(), &cfg.percentiles, expire_flushes.max(1)),
            Err(_) => return,
        };
        if !series.is_empty() && !send(&tx, &source, &relabel, series).await {
            return;
        }
    }
}

/// Most series in one buffered batch: sources arriving together are merged up to this, and a
/// larger result (one big scrape) is cut into batches of this size, so a batch stays well
/// under the aggregator's 16 MiB frame limit (about 250 bytes a series: 5 MiB) and is never
/// refused for its size.
const MAX_BATCH_SERIES: usize = 20_000;

/// Runs every source batch through the pipeline and buffers the result, merging whatever
/// arrived together into one batch.
async fn sink(
    mut rx: mpsc::Receiver<SourceBatch>,
    mut processor: Processor,
    buffer: Arc<Buffer>,
    notify: Arc<Notify>,
) {
    let agent: Arc<str> = Arc::from("agent");
    let mut held = held::Held::default();
    while let Some(first) = rx.recv().await {
        let now = now_ms();
        let backlog = buffer.len();
        let mut series = Vec::new();
        let mut events = crate::pipeline::Extras::default();
        let mut with_own = first.source == agent;
        processor.process(first, backlog, now, &mut series, &mut events);
        while series.len() < MAX_BATCH_SERIES {
            match rx.try_recv() {
                Ok(b) => {
                    with_own |= b.source == agent;
                    processor.process(b, backlog, now, &mut series, &mut events)
                }
                Err(_) => break,
            }
        }
        // The pipeline's own counters ride along with the agent's other self metrics.
        if with_own {
            let mut own = Out::new(now);
            processor.own_series(&mut own);
            let b = SourceBatch {
                exemplars: Vec::new(),
                source: agent.clone(),
                relabel: no_rules(),
                series: own.series,
                events: Vec::new(),
            };
            processor.process(b, backlog, now, &mut series, &mut events);
        }
        if series.is_empty() && events.is_empty() {
            continue;
        }
        let mut exemplars = Some(events.exemplars);
        let mut events = Some(events.events);
        let mut rest = series;
        loop {
            let tail = rest.split_off(rest.len().min(MAX_BATCH_SERIES));
            let batch = Batch {
                sequence: 0,
                created_ms: now,
                series: std::mem::replace(&mut rest, tail),
                events: events.take().unwrap_or_default(),
                spans: Vec::new(),
                exemplars: exemplars.take().unwrap_or_default(),
                logs: Vec::new(),
            };
            held.push(&buffer, &notify, batch).await;
            if rest.is_empty() {
                break;
            }
        }
    }
}

/// Connects the executor to the shipper by two channels: commands and result
/// acknowledgements in (each command runs in a task of its own, as long as it takes), the
/// unacknowledged results out whenever they change.
fn link_remediation(executor: Arc<crate::remediate::Executor>) -> RemediationLink {
    let (to, mut inbox) = mpsc::unbounded_channel();
    let (results_tx, results) = watch::channel(executor.pending());
    let actions = executor.action_names();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                m = inbox.recv() => match m {
                    Some(ToRemediation::Command(c)) => {
                        let ex = executor.clone();
                        tokio::spawn(async move {
                            if let Err(e) = ex.handle(c).await {
                                tracing::error!(error = %e, "remediation command failed");
                            }
                        });
                    }
                    Some(ToRemediation::ResultAcked(id)) => {
                        executor.ack(&id);
                        results_tx.send_replace(executor.pending());
                    }
                    None => break,
                },
                _ = executor.ready.notified() => {
                    results_tx.send_replace(executor.pending());
                }
            }
        }
    });
    RemediationLink {
        actions,
        to,
        results,
    }
}

/// The running log sources, with their own stop signal: they push what they read before
/// the buffer closes (their positions make an abrupt stop safe too).
struct LogRunner {
    stop: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
}

impl LogRunner {
    fn spawn(
        cfg: &crate::config::logs::LogSources,
        sink: &Arc<dyn LogSink>,
        stats: &Arc<crate::sources::logfile::LogStats>,
    ) -> LogRunner {
        let (stop, rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        if !cfg.is_empty() {
            let mut stopped = rx.clone();
            tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => memory::trim(),
                        _ = stopped.changed() => return,
                    }
                }
            });
        }
        for src in &cfg.files {
            tracing::info!(source = %src.name, paths = ?src.paths, "tailing log files");
            tasks.spawn(crate::sources::logfile::run(
                src.clone(),
                sink.clone(),
                stats.clone(),
                rx.clone(),
            ));
        }
        for src in &cfg.forward {
            tasks.spawn(crate::sources::forward::run(
                src.clone(),
                sink.clone(),
                stats.clone(),
                rx.clone(),
            ));
        }
        for src in &cfg.loki {
            tasks.spawn(crate::sources::loki::run(
                src.clone(),
                sink.clone(),
                stats.clone(),
                rx.clone(),
            ));
        }
        for src in &cfg.journald {
            tasks.spawn(crate::sources::journald::run(
                src.clone(),
                sink.clone(),
                stats.clone(),
                rx.clone(),
            ));
        }
        for src in &cfg.syslog {
            tasks.spawn(crate::sources::syslog::run(
                src.clone(),
                sink.clone(),
                stats.clone(),
                rx.clone(),
            ));
        }
        LogRunner { stop, tasks }
    }

    /// Stops every source, waiting up to 5 s for their last pushes.
    async fn stop(mut self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
    }
}

/// The buffer as the log sources' sink: a batch of lines and the positions it covers in one
/// sled transaction, then the shipper woken.
struct BufferSink {
    buffer: Arc<Buffer>,
    notify: Arc<Notify>,
}

impl LogSink for BufferSink {
    fn room(&self) -> bool {
        self.buffer.log_room()
    }

    fn position(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.buffer.position(key) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot read a log position: the file is read as new");
                None
            }
        }
    }

    fn store(
        &self,
        batch: Batch,
        positions: Positions,
        forget: Vec<Vec<u8>>,
    ) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            if !batch.logs.is_empty() || !batch.spans.is_empty() {
                self.buffer.push_logs(batch, &positions).await?;
                self.notify.notify_one();
                self.buffer.set_positions(&[], &forget)?;
            } else {
                self.buffer.set_positions(&positions, &forget)?;
            }
            Ok(())
        })
    }
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    run_with_reload(cfg, || {
        Err(ConfigError::Read {
            path: "(none)".into(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no configuration file to re-read",
            ),
        })
    })
    .await
}

/// Runs the agent until SIGINT or SIGTERM; on SIGHUP, `reload` reads the configuration
/// again and the sources restart with it.
pub async fn run_with_reload(
    cfg: Config,
    reload: impl Fn() -> Result<Config, ConfigError>,
) -> anyhow::Result<()> {
    let client = cfg.tls.load()?.client_config()?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data directory {}", cfg.data_dir.display()))?;
    let buffer = Arc::new(
        Buffer::open(&cfg.data_dir.join("buffer"), cfg.buffer_max_bytes)?
            .with_log_cap(cfg.buffer_logs_max_bytes),
    );
    tracing::info!(
        name = %cfg.name, aggregator = %cfg.aggregator, interval = ?cfg.interval,
        backlog = buffer.len(), corrupt = buffer.corrupt(), "telltale-agent starting"
    );
    let stats = Arc::new(ShipStats::default());
    let log_stats = Arc::new(crate::sources::logfile::LogStats::default());
    let notify = Arc::new(Notify::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    // The pipeline's channel, made here so the executor's audit events ride with the batches.
    let (tx, rx) = mpsc::channel::<SourceBatch>(1024);
    let executor = if cfg.actions.is_empty() {
        None
    } else {
        let names: Vec<&str> = cfg.actions.iter().map(|a| a.name.as_str()).collect();
        tracing::info!(actions = ?names, "remediation actions allowed");
        Some(Arc::new(crate::remediate::Executor::open(
            cfg.actions.clone(),
            &cfg.data_dir.join("remediation"),
            tx.clone(),
        )?))
    };
    let shipper = Shipper {
        remediation: executor.map(link_remediation),
        buffer: buffer.clone(),
        target: Target {
            aggregators: cfg
                .aggregators
                .iter()
                .map(|a| crate::transport::shipper::Peer {
                    address: a.address.clone(),
                    server_name: a.server_name.clone(),
                })
                .collect(),
            sources: source_names(&cfg),
            client,
            max_in_flight: cfg.max_in_flight,
        },
        stats: stats.clone(),
        notify: notify.clone(),
    };
    let ship = tokio::spawn(shipper.run(stop_rx));

    let host = HostInfo::read(std::path::Path::new("/"));
    let log_sink: Arc<dyn LogSink> = Arc::new(BufferSink {
        buffer: buffer.clone(),
        notify: notify.clone(),
    });
    let mut sources = Sources::spawn(&cfg, &host, &buffer, &stats, &log_stats, &log_sink, &tx);
    let processor = Processor::new(cfg.pipeline.clone(), &host);
    let sink = tokio::spawn(sink(rx, processor, buffer.clone(), notify.clone()));
    let mut logs = LogRunner::spawn(&cfg.logs, &log_sink, &log_stats);
    // Start-up's code need not stay resident: dropped once set-up is done, and again after
    // the first intervals (first collections read host facts, connect, resolve once). Then
    // the heap pages each interval's batch freed go back every interval (see memory.rs).
    let every = cfg.interval.max(Duration::from_secs(1));
    tokio::spawn(async move {
        for wait in [2, 13] {
            tokio::time::sleep(Duration::from_secs(wait)).await;
            let _ = memory::drop_startup_code();
        }
        loop {
            tokio::time::sleep(every).await;
            memory::trim();
        }
    });
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    // Made once, so a signal that arrives while a reload runs is not missed.
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                // SIGHUP: re-read the configuration; the sources restart with it. A bad file
                // keeps the running sources. Identity, TLS, buffer, pipeline and the action
                // allowlist are read at start only (the allowlist on purpose: widening what
                // the agent may run takes a restart by its operator).
                match reload() {
                    Ok(new) => {
                        sources.stop().await;
                        sources = Sources::spawn(
                            &new, &host, &buffer, &stats, &log_stats, &log_sink, &tx,
                        );
                        // Log sources stop after pushing what they read; their positions
                        // carry them over.
                        logs.stop().await;
                        logs = LogRunner::spawn(&new.logs, &log_sink, &log_stats);
                        tracing::info!(
                            scrape_jobs = new.sources.scrape.len(),
                            checks = new.sources.checks.len(),
                            "configuration reloaded: sources restarted"
                        );
                    }
                    Err(e) => tracing::error!(error = %e,
                        "reload failed: the running sources are kept"),
                }
            }
        }
    }
    // Stopping the sources closes the channel; the sink buffers what is left and ends.
    sources.stop().await;
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), sink).await;
    logs.stop().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), ship).await;
    buffer.close()?;
    Ok(())
}

/// The running sources: their tasks and the StatsD listener (whose port is released when
/// they stop, so a reload can bind it again).
struct Sources {
    tasks: tokio::task::JoinSet<()>,
    _listener: Option<Arc<crate::sources::statsd::Listener>>,
}

impl Sources {
    fn spawn(
        cfg: &Config,
        host: &HostInfo,
        buffer: &Arc<Buffer>,
        stats: &Arc<ShipStats>,
        logs: &Arc<crate::sources::logfile::LogStats>,
        log_sink: &Arc<dyn LogSink>,
        tx: &mpsc::Sender<SourceBatch>,
    ) -> Sources {
        let mut tasks = tokio::task::JoinSet::new();
        let mut statsd_stats = None;
        let mut listener = None;
        if let Some((sc, rules)) = &cfg.sources.statsd {
            // A port already taken must not stop the other sources: the error is logged and
            // the agent runs without StatsD.
            match crate::sources::statsd::Listener::start(sc) {
                Ok(l) => {
                    tracing::info!(listen = %l.local, "statsd listener started");
                    let l = Arc::new(l);
                    statsd_stats = l.agg.lock().ok().map(|a| a.stats.clone());
                    tasks.spawn(statsd_loop(
                        l.clone(),
                        sc.clone(),
                        rules.clone(),
                        tx.clone(),
                    ));
                    listener = Some(l);
                }
                Err(e) => {
                    tracing::error!(listen = %sc.listen, error = %e, "cannot start the statsd listener; running without it")
                }
            }
        }
        let own = Own {
            buffer: buffer.clone(),
            stats: stats.clone(),
            statsd: statsd_stats,
            logs: (!cfg.logs.is_empty() || cfg.otlp.is_some()).then(|| logs.clone()),
            host: host.clone(),
            collect: Default::default(),
        };
        tasks.spawn(host_loop(
            cfg.interval,
            cfg.optional,
            cfg.sources.host_relabel.clone(),
            own,
            tx.clone(),
        ));
        for job in &cfg.sources.scrape {
            for i in 0..job.targets.len() {
                tasks.spawn(crate::sources::scrape::run_target(
                    job.clone(),
                    i,
                    tx.clone(),
                ));
            }
        }
        for c in &cfg.sources.checks {
            tasks.spawn(crate::sources::checks::run(c.clone(), tx.clone()));
        }
        if let Some(o) = &cfg.otlp {
            tasks.spawn(crate::sources::otlp::run(
                o.clone(),
                cfg.interval,
                tx.clone(),
                log_sink.clone(),
                logs.clone(),
            ));
        }
        if let Some((dir, rules, limits)) = &cfg.sources.textfile {
            tasks.spawn(textfile_loop(
                dir.clone(),
                cfg.interval,
                rules.clone(),
                *limits,
                tx.clone(),
            ));
        }
        Sources {
            tasks,
            _listener: listener,
        }
    }

    async fn stop(&mut self) {
        self.tasks.shutdown().await;
        self._listener = None;
        // The listener's socket task was aborted when it was dropped: let the runtime drop
        // it now, so a reload can bind the port again.
        tokio::task::yield_now().await;
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telltale_common::model::{Labels, Sample, SeriesSamples};

    #[tokio::test]
    async fn a_large_collection_is_cut_into_batches_under_the_frame_limit() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = Arc::new(Buffer::open(&dir.path().join("b"), 1 << 30).unwrap());
        let (tx, rx) = mpsc::channel(4);
        let n = 2 * MAX_BATCH_SERIES + 5;
        let series = (0..n)
            .map(|i| SeriesSamples {
                labels: Labels::from_pairs([("__name__", "m"), ("i", &i.to_string())]),
                samples: vec![Sample(1, 1.0)],
            })
            .collect();
        tx.send(SourceBatch {
            exemplars: Vec::new(),
            source: Arc::from("scrape:big"),
            relabel: no_rules(),
            series,
            events: Vec::new(),
        })
        .await
        .unwrap();
        drop(tx);
        let mut cfg = crate::pipeline::PipelineConfig::plain("a");
        cfg.max_series_per_source = n;
        let host = HostInfo::read(std::path::Path::new("/nonexistent"));
        sink(
            rx,
            Processor::new(cfg, &host),
            buffer.clone(),
            Arc::new(Notify::new()),
        )
        .await;
        assert_eq!(buffer.len(), 3);
        let mut total = 0;
        let mut seq = 0;
        while let Some(s) = buffer.next_from(seq, |_| false).unwrap() {
            let stored = buffer.get(s).unwrap().unwrap();
            assert!(stored.frame.len() < 16 << 20);
            total += stored.samples as usize;
            seq = s + 1;
        }
        assert_eq!(total, n);
    }
}
