//! Host and network collectors: read the kernel's counters from `/proc` and `/sys` and emit
//! them under node_exporter's metric names and labels, so its dashboards and alert rules work
//! unchanged. One file per source.
//!
//! Every collector reads from a [`Root`] (normally `/`), so tests run them against fixture
//! trees. A collector that fails (a file missing in a container, a mount that cannot be
//! stat'ed) reports its error and the others still run: one bad source never empties a batch.

mod cpu;
mod diskstats;
mod filesystem;
mod host;
mod memory;
mod netdev;
mod netstat;
mod pressure;

use std::path::{Path, PathBuf};

use telltale_common::model::{Labels, Sample, SeriesSamples};

/// Where the collectors find `/proc`.
#[derive(Debug, Clone)]
pub struct Root {
    /// Usually `/proc`.
    pub proc: PathBuf,
}

impl Default for Root {
    fn default() -> Self {
        Root {
            proc: "/proc".into(),
        }
    }
}

impl Root {
    /// Reads `proc/<rel>` as text.
    pub fn proc_file(&self, rel: &str) -> std::io::Result<String> {
        std::fs::read_to_string(self.proc.join(rel))
    }
}

/// Collected series with one timestamp, and the errors of collectors that failed.
pub struct Out {
    t: i64,
    /// The series collected so far.
    pub series: Vec<SeriesSamples>,
    /// `(collector, error)` for every collector that failed.
    pub errors: Vec<(&'static str, String)>,
}

impl Out {
    /// An empty collection stamped at `t_ms`.
    pub fn new(t_ms: i64) -> Out {
        Out {
            t: t_ms,
            series: Vec::with_capacity(512),
            errors: Vec::new(),
        }
    }

    /// Adds one sample of metric `name` with `labels`.
    pub fn add(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        let mut l = Labels::from_pairs(labels.iter().copied());
        l.set("__name__", name);
        self.series.push(SeriesSamples {
            labels: l,
            samples: vec![Sample(self.t, v)],
        });
    }

    /// The timestamp of this collection.
    pub fn t_ms(&self) -> i64 {
        self.t
    }
}

/// Collectors that are off unless configured, like node_exporter's non-default ones.
#[derive(Debug, Clone, Copy, Default)]
pub struct Optional {
    /// `node_tcp_connection_states{state}` from `/proc/net/tcp{,6}`. Off by default: the
    /// kernel walks its whole TCP hash table to produce those files, which measured as the
    /// largest part of the agent's CPU on a 24 GiB host even with a handful of sockets.
    pub tcpstat: bool,
}

/// Runs every enabled collector.
pub fn collect_all(root: &Root, optional: Optional, out: &mut Out) {
    type Collector = fn(&Root, &mut Out) -> Result<(), String>;
    const ALL: &[(&str, Collector)] = &[
        ("cpu", cpu::collect),
        ("stat", cpu::collect_stat),
        ("meminfo", memory::collect),
        ("vmstat", memory::collect_vmstat),
        ("loadavg", host::collect_loadavg),
        ("time", host::collect_time),
        ("uname", host::collect_uname),
        ("filefd", host::collect_filefd),
        ("filesystem", filesystem::collect),
        ("diskstats", diskstats::collect),
        ("netdev", netdev::collect),
        ("netstat", netstat::collect),
        ("sockstat", netstat::collect_sockstat),
        ("pressure", pressure::collect),
        ("entropy", host::collect_entropy),
    ];
    for (name, f) in ALL {
        if let Err(e) = f(root, out) {
            out.errors.push((name, e));
        }
    }
    if optional.tcpstat
        && let Err(e) = netstat::collect_tcp_states(root, out)
    {
        out.errors.push(("tcpstat", e));
    }
}

/// Reads a file under `/proc`, as an error string naming it.
fn read(root: &Root, rel: &str) -> Result<String, String> {
    root.proc_file(rel)
        .map_err(|e| format!("{}: {e}", Path::new(&root.proc).join(rel).display()))
}

/// Parses a number field, as an error string naming it.
fn num(s: &str, what: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .map_err(|_| format!("cannot parse {what} value {s:?}"))
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! A fixture `/proc` tree taken from a real machine.
    use super::Root;

    pub fn root() -> Root {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        Root {
            proc: base.join("proc"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_host_yields_the_core_node_metrics() {
        let mut out = Out::new(1);
        collect_all(&Root::default(), Optional { tcpstat: true }, &mut out);
        let names: std::collections::BTreeSet<_> = out
            .series
            .iter()
            .filter_map(|s| s.labels.metric_name().map(str::to_string))
            .collect();
        for n in [
            "node_cpu_seconds_total",
            "node_memory_MemAvailable_bytes",
            "node_load1",
            "node_time_seconds",
            "node_boot_time_seconds",
            "node_network_receive_bytes_total",
            "node_netstat_Tcp_RetransSegs",
            "node_filesystem_avail_bytes",
            "node_uname_info",
            "node_tcp_connection_states",
            "node_entropy_available_bits",
        ] {
            assert!(names.contains(n), "{n} missing; errors: {:?}", out.errors);
        }
    }
}
