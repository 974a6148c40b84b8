//! Where the agent ships: one `aggregator`, or several `aggregators` with a `mode`.
//!
//! - `mode = "failover"` (the default): the list is an order of preference. The agent ships to
//!   the first it reaches; while on a later one it probes the earlier ones (a QUIC handshake,
//!   no session) and moves back to the first that answers.
//! - `mode = "shard"`: each agent prefers the aggregator its name hashes to (rendezvous
//!   hashing: the highest hash of name and address), then the next by the same hash, and so on
//!   — a consistent hash, so adding or removing an aggregator moves only the agents that
//!   preferred it — and fails over and back along that order as above.
//!
//! Setting both `aggregator` and `aggregators` is an error (exit 2), as is `mode` without
//! `aggregators`.

use std::path::Path;

use telltale_common::config::ConfigError;

/// How `aggregators` are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An order of preference.
    Failover,
    /// By consistent hash of the agent's name, then failover.
    Shard,
}

/// One aggregator to ship to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregatorAddr {
    /// `HOST:PORT`.
    pub address: String,
    /// The name verified in its certificate.
    pub server_name: String,
}

/// What the file and the command line say.
pub struct Given<'a> {
    /// `--aggregator` (replaces the file's choice).
    pub cli: Option<&'a str>,
    /// `aggregator`.
    pub single: Option<&'a str>,
    /// `aggregators`.
    pub list: Option<&'a [String]>,
    /// `mode`.
    pub mode: Option<&'a str>,
    /// `server_name` (for every aggregator; default: each one's host).
    pub server_name: Option<&'a str>,
}

/// The aggregators in the order this agent prefers them, and the mode.
pub fn resolve(
    src: &Path,
    agent: &str,
    g: &Given<'_>,
) -> Result<(Vec<AggregatorAddr>, Mode), ConfigError> {
    if g.single.is_some() && g.list.is_some() {
        return Err(ConfigError::invalid(
            src,
            "aggregators",
            "set `aggregator` or `aggregators`, not both".to_string(),
        ));
    }
    let mode = match (g.mode, g.list.is_some()) {
        (None, _) => Mode::Failover,
        (Some(_), false) => {
            return Err(ConfigError::invalid(
                src,
                "mode",
                "`mode` chooses how `aggregators` are used: set `aggregators` too".to_string(),
            ));
        }
        (Some("failover"), true) => Mode::Failover,
        (Some("shard"), true) => Mode::Shard,
        (Some(m), true) => {
            return Err(ConfigError::invalid(
                src,
                "mode",
                format!("{m:?}: use \"failover\" or \"shard\""),
            ));
        }
    };
    let (key, addrs): (&str, Vec<String>) = match (g.cli, g.list) {
        (Some(a), _) => ("aggregator", vec![a.to_string()]),
        (None, Some(l)) => ("aggregators", l.to_vec()),
        (None, None) => (
            "aggregator",
            vec![g.single.unwrap_or("127.0.0.1:9471").to_string()],
        ),
    };
    if addrs.is_empty() {
        return Err(ConfigError::invalid(
            src,
            key,
            "name at least one HOST:PORT".to_string(),
        ));
    }
    let mut out: Vec<AggregatorAddr> = Vec::with_capacity(addrs.len());
    for a in addrs {
        let bad = || ConfigError::invalid(src, key, format!("{a:?} is not HOST:PORT"));
        let (host, port) = a.rsplit_once(':').ok_or_else(bad)?;
        if port.parse::<u16>().is_err() || host.is_empty() {
            return Err(bad());
        }
        if out.iter().any(|o| o.address == a) {
            return Err(ConfigError::invalid(
                src,
                key,
                format!("{a:?} is listed twice"),
            ));
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        out.push(AggregatorAddr {
            server_name: g.server_name.unwrap_or(host).to_string(),
            address: a,
        });
    }
    if mode == Mode::Shard {
        out = rendezvous(agent, out);
    }
    Ok((out, mode))
}

/// The aggregators by the agent's preference: highest score first.
pub fn rendezvous(agent: &str, mut addrs: Vec<AggregatorAddr>) -> Vec<AggregatorAddr> {
    addrs.sort_by_key(|a| {
        std::cmp::Reverse(telltale_common::rendezvous::score(
            agent.as_bytes(),
            &a.address,
        ))
    });
    addrs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given<'a>(list: Option<&'a [String]>, mode: Option<&'a str>) -> Given<'a> {
        Given {
            cli: None,
            single: None,
            list,
            mode,
            server_name: None,
        }
    }

    fn pool(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("agg-{i}.example:9471")).collect()
    }

    #[test]
    fn both_keys_or_a_stray_mode_are_errors() {
        let p = Path::new("agent.toml");
        let l = pool(2);
        let both = Given {
            single: Some("a:1"),
            ..given(Some(&l), None)
        };
        let e = resolve(p, "web", &both).unwrap_err().to_string();
        assert!(e.contains("aggregators") && e.contains("not both"), "{e}");
        let e = resolve(p, "web", &given(None, Some("shard")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mode"), "{e}");
        let e = resolve(p, "web", &given(Some(&l), Some("random")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("failover"), "{e}");
        let dup = vec!["a:1".to_string(), "a:1".to_string()];
        assert!(resolve(p, "web", &given(Some(&dup), None)).is_err());
        let bad = vec!["a".to_string()];
        assert!(resolve(p, "web", &given(Some(&bad), None)).is_err());
        assert!(resolve(p, "web", &given(Some(&[]), None)).is_err());
    }

    #[test]
    fn failover_keeps_the_order_and_each_host_names_its_certificate() {
        let l = vec!["[::1]:9471".to_string(), "b.example:9471".to_string()];
        let (a, m) = resolve(Path::new("x"), "web", &given(Some(&l), None)).unwrap();
        assert_eq!(m, Mode::Failover);
        assert_eq!(
            a.iter()
                .map(|a| (a.address.as_str(), a.server_name.as_str()))
                .collect::<Vec<_>>(),
            vec![("[::1]:9471", "::1"), ("b.example:9471", "b.example")]
        );
    }

    #[test]
    fn sharding_spreads_agents_evenly_and_moves_only_those_of_a_removed_aggregator() {
        let addrs = |l: &[String]| -> Vec<AggregatorAddr> {
            l.iter()
                .map(|a| AggregatorAddr {
                    address: a.clone(),
                    server_name: String::new(),
                })
                .collect()
        };
        let (four, three) = (pool(4), pool(3));
        let mut per = [0usize; 4];
        let mut moved = 0;
        for i in 0..4000 {
            let name = format!("host-{i:05}");
            let first = rendezvous(&name, addrs(&four))[0].address.clone();
            let idx = four.iter().position(|a| *a == first).unwrap();
            per[idx] += 1;
            // agg-3 removed: only its agents move.
            let now = rendezvous(&name, addrs(&three))[0].address.clone();
            if now != first {
                assert_eq!(first, four[3], "{name} moved without its aggregator going");
                moved += 1;
            }
            // The order is stable: the same name gives the same order.
            assert_eq!(rendezvous(&name, addrs(&four))[0].address, first);
        }
        for n in per {
            assert!((850..=1150).contains(&n), "uneven: {per:?}");
        }
        assert_eq!(moved, per[3]);
    }
}
