//! Which aggregator of a pool samples a trace (`[traces.pool]`): tail sampling needs every span
//! of a trace in one place, but in a pool the agents a trace crosses may ship to different
//! aggregators (`mode = "shard"`, or failover). Every member knows the same member list and
//! hashes the trace id over it (rendezvous hashing, [`telltale_common::rendezvous`]), so they
//! agree on the owner without talking; a span that reaches another member is written into
//! that member's WAL as *foreign* and forwarded to the owner (`crate::forward::pool`).

use telltale_common::trace::TraceId;

/// The pool as this aggregator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owners {
    members: Vec<String>,
    this: usize,
}

impl Owners {
    /// `members` (each member's HTTP base URL, the same list on every member), of which this
    /// aggregator is `this`.
    pub fn new(members: Vec<String>, this: usize) -> Owners {
        Owners { members, this }
    }

    /// The members.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// This aggregator's index in [`Owners::members`].
    pub fn this(&self) -> usize {
        self.this
    }

    /// The member that samples trace `id`.
    pub fn owner(&self, id: &TraceId) -> usize {
        telltale_common::rendezvous::owner(id, &self.members).unwrap_or(self.this)
    }

    /// Whether this aggregator samples trace `id`.
    pub fn is_ours(&self, id: &TraceId) -> bool {
        self.owner(id) == self.this
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_agree_on_owners_whatever_their_list_order() {
        let a = Owners::new(vec!["http://a:1".into(), "http://b:1".into()], 0);
        let b = Owners::new(vec!["http://b:1".into(), "http://a:1".into()], 0);
        let (mut ours_a, mut ours_b) = (0, 0);
        for i in 0..1000u32 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_le_bytes());
            // Exactly one of the two owns each trace.
            assert_ne!(a.is_ours(&id), b.is_ours(&id), "trace {i}");
            ours_a += usize::from(a.is_ours(&id));
            ours_b += usize::from(b.is_ours(&id));
        }
        assert!((400..=600).contains(&ours_a), "{ours_a} {ours_b}");
    }
}
