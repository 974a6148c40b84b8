//! The agent's main loop: collect every interval, stamp the series, add the agent's own
//! metrics, store the batch durably, wake the shipper.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use telltale_common::model::{SeriesSamples, now_ms};
use telltale_common::names;
use telltale_common::wire::Batch;
use tokio::sync::{Notify, watch};

use crate::buffer::Buffer;
use crate::collector::{self, Out, Root};
use crate::config::Config;
use crate::shipper::{ShipStats, Shipper, Target};

/// The job label of everything an agent sends.
pub const JOB: &str = "telltale-agent";

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

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let client = cfg.tls.load()?.client_config()?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data directory {}", cfg.data_dir.display()))?;
    let buffer = Arc::new(Buffer::open(
        &cfg.data_dir.join("buffer"),
        cfg.buffer_max_bytes,
    )?);
    tracing::info!(
        name = %cfg.name, aggregator = %cfg.aggregator, interval = ?cfg.interval,
        backlog = buffer.len(), corrupt = buffer.corrupt(), "telltale-agent starting"
    );
    let stats = Arc::new(ShipStats::default());
    let notify = Arc::new(Notify::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let shipper = Shipper {
        buffer: buffer.clone(),
        target: Target {
            address: cfg.aggregator.clone(),
            server_name: cfg.server_name.clone(),
            client,
            max_in_flight: cfg.max_in_flight,
        },
        stats: stats.clone(),
        notify: notify.clone(),
    };
    let ship = tokio::spawn(shipper.run(stop_rx));

    let root = Root::default();
    let mut me = SelfProcess::new();
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_collect = Duration::ZERO;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut shutdown => break,
        }
        let started = tokio::time::Instant::now();
        let mut out = Out::new(now_ms());
        collector::collect_all(&root, cfg.optional, &mut out);
        for (c, e) in &out.errors {
            tracing::debug!(collector = c, error = %e, "collector failed");
        }
        own(&mut out, names::AGENT_BUFFER_BATCHES, buffer.len() as f64);
        own(&mut out, names::AGENT_BUFFER_BYTES, buffer.bytes() as f64);
        own(
            &mut out,
            names::AGENT_DROPPED_BATCHES,
            buffer.dropped() as f64,
        );
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
        own(&mut out, names::AGENT_SHIPPED_BATCHES, l(&stats.batches));
        own(&mut out, names::AGENT_SHIPPED_SAMPLES, l(&stats.samples));
        own(
            &mut out,
            names::AGENT_ACK_LATENCY,
            l(&stats.ack_latency_us) / 1e6,
        );
        own(&mut out, names::AGENT_CONNECTS, l(&stats.connects));
        own(&mut out, names::AGENT_CONNECTED, l(&stats.connected));
        own(
            &mut out,
            names::AGENT_COLLECT_DURATION,
            last_collect.as_secs_f64(),
        );
        if let Some((cpu, rss)) = me.sample() {
            own(&mut out, "telltale_agent_process_cpu_seconds_total", cpu);
            own(
                &mut out,
                "telltale_agent_process_resident_memory_bytes",
                rss,
            );
        }
        let batch = Batch {
            sequence: 0,
            created_ms: out.t_ms(),
            series: stamp(out.series, &cfg.name),
        };
        match buffer.push(batch).await {
            Ok(_) => notify.notify_one(),
            Err(e) => tracing::error!(error = %e, "cannot buffer batch: this interval is lost"),
        }
        last_collect = started.elapsed();
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), ship).await;
    buffer.flush()?;
    Ok(())
}

/// Adds `instance` and `job` to every series.
pub fn stamp(series: Vec<SeriesSamples>, name: &str) -> Vec<SeriesSamples> {
    series
        .into_iter()
        .map(|mut s| {
            s.labels.set("instance", name);
            s.labels.set("job", JOB);
            s
        })
        .collect()
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
