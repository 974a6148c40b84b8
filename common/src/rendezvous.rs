//! Rendezvous (highest random weight) hashing: which member of a pool a key belongs to. Each
//! member scores the key; the highest score wins. Adding or removing a member moves only the
//! keys it wins or won, and every party that knows the same members agrees without talking.
//! Agents use it to pick their aggregator (`mode = "shard"`, keyed by the agent's name);
//! aggregators to pick the one that samples a trace (`[traces.pool]`, keyed by trace id).

/// The score of `key` on `member`: FNV-1a over the key, a separator and the member, finished
/// with SplitMix64's mix (FNV alone spreads similar keys poorly).
pub fn score(key: &[u8], member: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.iter().copied().chain([0]).chain(member.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The index in `members` that `key` belongs to (`None` for no members); ties, which need
/// equal member names, go to the first.
pub fn owner<S: AsRef<str>>(key: &[u8], members: &[S]) -> Option<usize> {
    members
        .iter()
        .enumerate()
        .max_by_key(|(i, m)| (score(key, m.as_ref()), std::cmp::Reverse(*i)))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_evenly_and_a_removed_member_moves_only_its_own() {
        let four = ["a:1", "b:1", "c:1", "d:1"];
        let three = ["a:1", "b:1", "d:1"];
        let mut counts = [0usize; 4];
        for k in 0..8000u32 {
            let key = k.to_be_bytes();
            let Some(o) = owner(&key, &four) else {
                panic!("no owner")
            };
            counts[o] += 1;
            let Some(after) = owner(&key, &three) else {
                panic!("no owner")
            };
            if four[o] != "c:1" {
                assert_eq!(three[after], four[o], "key {k} moved without cause");
            }
        }
        for c in counts {
            assert!((1700..=2300).contains(&c), "{counts:?}");
        }
        assert_eq!(owner::<&str>(b"x", &[]), None);
    }
}
