//! A bounded cache of decoded raw chunks, keyed by (block sequence, series id). Blocks are
//! immutable, so entries never go stale; those of deleted blocks simply age out.
//!
//! Two generations instead of an LRU list: lookups hit the current generation or promote
//! from the previous one; when the current one holds half the budget it becomes the
//! previous one (dropping the older). Memory stays under the budget, every operation is
//! O(1), and what a dashboard reads at every refresh stays decoded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use telltale_common::model::Sample;

type Key = (u64, u32);

#[derive(Default)]
struct Generations {
    current: HashMap<Key, Arc<Vec<Sample>>>,
    previous: HashMap<Key, Arc<Vec<Sample>>>,
    current_bytes: usize,
}

/// The cache. A budget of 0 disables it.
pub struct ChunkCache {
    budget: usize,
    inner: Mutex<Generations>,
}

impl ChunkCache {
    /// A cache holding at most `budget` bytes of samples.
    pub fn new(budget: usize) -> ChunkCache {
        ChunkCache {
            budget,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A cached chunk.
    pub fn get(&self, key: Key) -> Option<Arc<Vec<Sample>>> {
        if self.budget == 0 {
            return None;
        }
        let mut g = self.lock();
        if let Some(v) = g.current.get(&key) {
            return Some(v.clone());
        }
        let v = g.previous.remove(&key)?;
        self.insert_locked(&mut g, key, v.clone());
        Some(v)
    }

    /// Chunks held and the bytes of their samples (both generations).
    pub fn usage(&self) -> (u64, u64) {
        let g = self.lock();
        let bytes: usize = g
            .current
            .values()
            .chain(g.previous.values())
            .map(|v| v.len() * std::mem::size_of::<Sample>())
            .sum();
        ((g.current.len() + g.previous.len()) as u64, bytes as u64)
    }

    /// Caches a decoded chunk.
    pub fn insert(&self, key: Key, v: Arc<Vec<Sample>>) {
        if self.budget == 0 {
            return;
        }
        let mut g = self.lock();
        self.insert_locked(&mut g, key, v);
    }

    fn insert_locked(&self, g: &mut Generations, key: Key, v: Arc<Vec<Sample>>) {
        let bytes = v.len() * std::mem::size_of::<Sample>() + 64;
        if g.current_bytes + bytes > self.budget / 2 {
            g.previous = std::mem::take(&mut g.current);
            g.current_bytes = 0;
        }
        g.current_bytes += bytes;
        g.current.insert(key, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_promote_and_the_budget_holds() {
        let c = ChunkCache::new(10 * (100 * 16 + 64));
        let chunk = Arc::new(vec![Sample(0, 0.0); 100]);
        for i in 0..100 {
            c.insert((1, i), chunk.clone());
            // The first chunk, read all the time, never leaves.
            assert!(c.get((1, 0)).is_some(), "after {i}");
        }
        let g = c.lock();
        assert!(g.current.len() + g.previous.len() <= 11);
        drop(g);
        assert!(c.get((1, 50)).is_none());
        assert!(c.get((1, 99)).is_some());
        let off = ChunkCache::new(0);
        off.insert((1, 1), chunk);
        assert!(off.get((1, 1)).is_none());
    }
}
