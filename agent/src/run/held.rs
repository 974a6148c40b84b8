//! Batches held in memory while the buffer cannot write (a full disk): collection goes on,
//! the batches wait here in order, bounded by [`HELD_MAX_BYTES`] (oldest dropped first and
//! counted), and go into the buffer as soon as it has recovered (buffer/recover.rs). The
//! condition is logged once when it starts and once when it ends.

use std::collections::VecDeque;
use std::sync::Arc;

use telltale_common::wire::Batch;
use tokio::sync::Notify;

use crate::buffer::{Buffer, BufferError};

/// At most this much (estimated) is held in memory: at the host collection's ~40 KiB a
/// batch, about 13 minutes at a 1 s interval, over two hours at 10 s.
pub const HELD_MAX_BYTES: usize = 32 << 20;

/// The held batches and whether the condition has been reported.
#[derive(Default)]
pub struct Held {
    batches: VecDeque<(Batch, usize)>,
    bytes: usize,
    reported: bool,
}

/// A batch's size in memory, roughly: label text and 16 bytes a sample.
fn approx_bytes(b: &Batch) -> usize {
    b.series
        .iter()
        .map(|s| {
            s.labels
                .iter()
                .map(|(k, v)| k.len() + v.len() + 16)
                .sum::<usize>()
                + 16 * s.samples.len()
                + 32
        })
        .sum::<usize>()
        + 64 * (b.events.len() + b.exemplars.len())
}

impl Held {
    /// Buffers `batch` — after everything held before it — or holds it when the buffer
    /// cannot write.
    pub async fn push(&mut self, buffer: &Arc<Buffer>, notify: &Notify, batch: Batch) {
        if buffer.broken() {
            match buffer.recover() {
                Ok(true) => {}
                Ok(false) => return self.hold(buffer, batch),
                Err(e) => {
                    self.report(buffer, &e);
                    return self.hold(buffer, batch);
                }
            }
        }
        while let Some((b, size)) = self.batches.pop_front() {
            match buffer.push(b.clone()).await {
                Ok(_) => {
                    self.bytes -= size;
                    notify.notify_one();
                }
                Err(e) => {
                    self.batches.push_front((b, size));
                    self.report(buffer, &e);
                    return self.hold(buffer, batch);
                }
            }
        }
        if self.reported {
            self.reported = false;
            tracing::info!("agent buffer writes again: the batches held in memory are buffered");
        }
        match buffer.push(batch.clone()).await {
            Ok(_) => notify.notify_one(),
            Err(e) if buffer.broken() => {
                self.report(buffer, &e);
                self.hold(buffer, batch);
            }
            Err(e) => tracing::error!(error = %e, "cannot buffer batch: these samples are lost"),
        }
    }

    fn report(&mut self, buffer: &Buffer, e: &BufferError) {
        if !self.reported {
            self.reported = true;
            let what = if buffer.disk_full() {
                "disk full"
            } else {
                "write failed"
            };
            tracing::error!(error = %e, held_max_bytes = HELD_MAX_BYTES,
                "agent buffer {what}: batches are held in memory until it can write again");
        }
    }

    fn hold(&mut self, buffer: &Buffer, batch: Batch) {
        let size = approx_bytes(&batch);
        self.bytes += size;
        self.batches.push_back((batch, size));
        while self.bytes > HELD_MAX_BYTES && self.batches.len() > 1 {
            if let Some((_, s)) = self.batches.pop_front() {
                self.bytes -= s;
                buffer.note_dropped();
                tracing::warn!("held batches over {HELD_MAX_BYTES} bytes: the oldest is dropped");
            }
        }
    }
}
