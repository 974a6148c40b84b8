//! Where log sources put their lines: a sink that stores a batch of lines together with the
//! read positions it covers (the buffer, wired in `run.rs`; sources know nothing of it).

use std::future::Future;
use std::pin::Pin;

use telltale_common::wire::Batch;

/// A boxed future, for a `dyn` sink.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a sink could not take lines (they are read again after a restart).
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Positions to write: `(key, value)`.
pub type Positions = Vec<(Vec<u8>, Vec<u8>)>;

/// The store of log batches and read positions.
pub trait LogSink: Send + Sync + 'static {
    /// A source's stored position under `key`.
    fn position(&self, key: &[u8]) -> Option<Vec<u8>>;

    /// Whether the store has room for more lines. Sources that can wait (files: the file is
    /// their buffer) stop reading while it has none, instead of making the store evict
    /// older lines; listeners cannot wait and push anyway.
    fn room(&self) -> bool {
        true
    }

    /// Stores `batch` (when it has lines) and `positions` in one step, and forgets the
    /// positions under `forget`.
    fn store(
        &self,
        batch: Batch,
        positions: Positions,
        forget: Vec<Vec<u8>>,
    ) -> BoxFuture<'_, Result<(), SinkError>>;
}
