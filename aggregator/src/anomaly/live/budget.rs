//! The memory budget of every detector's models together (`[anomaly] max_model_bytes`).
//!
//! A model grows as it learns, so counting what models hold now would not bound what they
//! hold later. Instead each new series' model sets aside its method's most
//! ([`crate::anomaly::method::Method::max_bytes`]: checked against what models reach by
//! `method::tests::no_model_outgrows_its_bound`) before it is made, and gives it back when it
//! is dropped (forgotten, its detector removed by a reload). A series whose model does not fit
//! is counted and not modelled, like one over the per-detector series limit, so the
//! models together never hold more than the budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes the models of every detector may set aside together, shared across reloads.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    reserved: AtomicUsize,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<Budget> {
        Arc::new(Budget {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            reserved: AtomicUsize::new(0),
        })
    }

    /// The budget's size in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes set aside now.
    pub fn reserved(&self) -> usize {
        self.reserved.load(Ordering::Relaxed)
    }

    /// Sets `bytes` aside, or `None` when they do not fit.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        self.reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                r.checked_add(bytes).filter(|&n| n <= self.limit)
            })
            .ok()?;
        Some(Reservation {
            budget: self.clone(),
            bytes,
        })
    }
}

/// Bytes set aside for one model, given back when it is dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Reservation {
    /// The bytes set aside.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.reserved.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_fits_or_is_refused_and_is_given_back_on_drop() {
        let b = Budget::new(100);
        let first = b.reserve(60).expect("fits");
        assert!(b.reserve(41).is_none(), "101 of 100");
        let second = b.reserve(40).expect("fits exactly");
        assert_eq!(b.reserved(), 100);
        drop(first);
        assert_eq!(b.reserved(), 40);
        assert!(b.reserve(usize::MAX).is_none(), "no overflow");
        drop(second);
        assert_eq!(b.reserved(), 0);
    }
}
