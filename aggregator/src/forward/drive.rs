//! The loop every exporter of a store's WAL runs (the ClickHouse exporters, the trace pool
//! forwarder): read from its position up to the durable tip in batches (a partial batch waits
//! up to a deadline for more), hand each batch to the exporter's `send` (which returns only
//! once the receiver has it, or it is given up and counted), move the position past it,
//! persist the position at most once a second (and at once when a send waits longer, so a
//! crash during a receiver's outage resends nothing delivered before it) and move the WAL
//! hold with it; past the byte cap, skip the oldest segments and count what they held.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::durable::feed::{self, Feed, Position, Sink, StoreFeed};
use crate::forward::cursor::Cursor;

/// What a batch read from the WAL is, beyond a [`Sink`].
pub trait Batch: Sink + Send + 'static {
    /// Records skipped in it as damaged or undecodable.
    fn corrupt(&self) -> u64;
}

/// An exporter the loop drives.
pub trait Exporter: Send + Sync + 'static {
    /// What it reads records into.
    type Batch: Batch;
    /// For logs: `clickhouse logs`, `trace pool`.
    fn what(&self) -> String;
    /// An empty batch.
    fn batch(&self) -> Self::Batch;
    /// Most items (rows, spans) a batch takes, and about what one takes in the WAL.
    fn max_items(&self) -> (usize, u64);
    /// How long a partial batch waits for more.
    fn deadline(&self) -> Duration;
    /// WAL bytes kept only for this exporter before the oldest are skipped.
    fn max_wal_bytes(&self) -> u64;
    /// Its position.
    fn cursor(&self) -> &Cursor;
    /// Moves its WAL hold to the persisted position.
    fn move_hold(&self);
    /// Counts items skipped by the byte cap, damaged records, and the time it was last
    /// caught up.
    fn note(&self, dropped: u64, corrupt: u64, caught_up: bool);
    /// Delivers a batch: returns once the receiver has it, or it was given up and counted.
    fn send(&self, batch: Self::Batch) -> impl std::future::Future<Output = ()> + Send;
}

/// Skips, counting their items, the oldest segments while those only this exporter holds
/// exceed its byte cap.
async fn enforce_cap<E: Exporter>(e: &Arc<E>, feed: &StoreFeed, pos: Position) -> Position {
    if pos.segment >= feed.checkpointed() {
        return pos;
    }
    let (f, cap, me) = (feed.clone(), e.max_wal_bytes(), e.clone());
    let res = tokio::task::spawn_blocking(move || {
        feed::skip_over_cap(&f, pos, cap, |dir: &Path, at| {
            let mut b = me.batch();
            feed::read_rest(dir, at, &mut b);
            b.items() as u64
        })
    })
    .await;
    match res {
        Ok((to, dropped)) if to != pos => {
            tracing::warn!(
                dropped,
                exporter = %e.what(),
                "the exporter is behind by more than max_wal_bytes; the oldest records were dropped unsent"
            );
            e.note(dropped, 0, false);
            e.cursor().set(to);
            to
        }
        _ => pos,
    }
}

/// Runs `e` on `feed` until its cursor has no position.
pub async fn run<E: Exporter>(e: Arc<E>, feed: StoreFeed) {
    let (max, item_bytes) = e.max_items();
    let mut last_persist = Instant::now();
    loop {
        let Some(pos) = e.cursor().position() else {
            return;
        };
        let pos = enforce_cap(&e, &feed, pos).await;
        let started = Instant::now();
        let (mut batch, mut to) = (e.batch(), pos);
        loop {
            let (f, from, sink) = (feed.clone(), to, std::mem::replace(&mut batch, e.batch()));
            let got = tokio::task::spawn_blocking(move || {
                let mut sink = sink;
                feed::read(&f, from, max, item_bytes, &mut sink)
                    .map(|(p, missing)| (sink, p, missing))
            })
            .await;
            match got {
                Ok(Ok((sink, p, missing))) => {
                    if missing > 0 {
                        tracing::warn!(
                            segments = missing,
                            exporter = %e.what(),
                            "WAL segments were gone before the exporter read them"
                        );
                    }
                    batch = sink;
                    to = p;
                }
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, exporter = %e.what(), "cannot read the WAL; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
                Err(_) => break,
            }
            let left = e.deadline().saturating_sub(started.elapsed());
            if batch.items() == 0 || batch.items() >= max || left.is_zero() {
                break;
            }
            tokio::time::sleep(left.min(Duration::from_millis(100))).await;
        }
        e.note(0, batch.corrupt(), false);
        if batch.items() > 0 {
            let mut send = std::pin::pin!(e.send(batch));
            if tokio::time::timeout(Duration::from_secs(1), &mut send)
                .await
                .is_err()
            {
                // A long send (the receiver is down, `send` retries): the position of what
                // was delivered before it is persisted now, so a crash during the outage
                // sends none of that again.
                if e.cursor().persist() {
                    last_persist = Instant::now();
                    e.move_hold();
                }
                send.await;
            }
        }
        if to != pos {
            e.cursor().set(to);
        }
        if last_persist.elapsed() >= Duration::from_secs(1) && e.cursor().persist() {
            last_persist = Instant::now();
            e.move_hold();
        }
        let (segment, offset) = feed.tip();
        if to == (Position { segment, offset }) {
            e.note(0, 0, true);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
