//! Host and network collectors: read the kernel's counters from `/proc` and `/sys` and emit
//! them under node_exporter's metric names and labels, so its dashboards and alert rules work
//! unchanged. One file per source.
//!
//! Every collector reads from a [`Root`] (normally `/`), so tests run them against fixture
//! trees. A collector that fails (a file missing in a container, a mount that cannot be
//! stat'ed) reports its error and the others still run: one bad source never empties a batch.

mod clock;
mod cpu;
mod diskstats;
mod facts;
mod filesystem;
mod hw;
mod memory;
mod net;
mod netdev;
mod netstat;
mod pressure;
mod storage;

use std::path::{Path, PathBuf};

use telltale_common::model::SeriesSamples;

/// Where the collectors find `/proc` and `/sys`.
#[derive(Debug, Clone)]
pub struct Root {
    /// Usually `/proc`.
    pub proc: PathBuf,
    /// Usually `/sys`.
    pub sys: PathBuf,
    /// Usually `/`: where `etc/os-release`, `etc/selinux` and `run/udev/data` are found.
    pub rootfs: PathBuf,
}

impl Default for Root {
    fn default() -> Self {
        Root {
            proc: "/proc".into(),
            sys: "/sys".into(),
            rootfs: "/".into(),
        }
    }
}

impl Root {
    /// Reads `proc/<rel>` as text.
    pub fn proc_file(&self, rel: &str) -> std::io::Result<String> {
        read_text(&self.proc.join(rel))
    }

    /// Reads `sys/<rel>` as text.
    pub fn sys_file(&self, rel: &str) -> std::io::Result<String> {
        read_text(&self.sys.join(rel))
    }
}

/// Open `/proc` and `/sys` files, kept between collections.
///
/// A collection reads a few hundred pseudo files (22 attributes per network interface alone),
/// and opening one costs more than reading it: the path walk, sysfs's symlinks, permission
/// checks, a new file. These files regenerate their content on every read from offset 0, so the
/// agent keeps them open and reads them again with `pread` (as Netdata does). Files not read in
/// a collection are closed after it ([`sweep_files`]), so interfaces and devices that go away
/// release theirs; at most [`MAX_OPEN`] are kept, the rest opened and closed as before. Only
/// paths under `/proc/` and `/sys/` are kept: a regular file replaced by rename would be read
/// stale through an old handle.
struct OpenFiles {
    files: std::collections::HashMap<PathBuf, (std::fs::File, u64)>,
    collection: u64,
}

/// The most files kept open (systemd's default soft limit on descriptors is 1024).
const MAX_OPEN: usize = 512;

thread_local! {
    static OPEN: std::cell::RefCell<OpenFiles> = std::cell::RefCell::new(OpenFiles {
        files: std::collections::HashMap::new(),
        collection: 0,
    });
}

/// Reads all of `f` from offset 0.
fn read_from_start(f: &std::fs::File, hint: usize) -> std::io::Result<String> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; hint.max(4096)];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = f.read_at(&mut buf[len..], len as u64)?;
        if n == 0 {
            break;
        }
        len += n;
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Reads a file as text, through the kept-open handles for `/proc` and `/sys` paths.
pub(crate) fn read_text(path: &Path) -> std::io::Result<String> {
    if !(path.starts_with("/proc/") || path.starts_with("/sys/")) {
        return std::fs::read_to_string(path);
    }
    OPEN.with(|open| {
        let mut open = open.borrow_mut();
        let now = open.collection;
        if let Some((f, used)) = open.files.get_mut(path) {
            *used = now;
            match read_from_start(f, 4096) {
                Ok(t) => return Ok(t),
                // The attribute has no value now (a down link's speed, a sensor without data):
                // the handle is still good.
                Err(e)
                    if e.kind() == std::io::ErrorKind::InvalidInput
                        || matches!(e.raw_os_error(), Some(11 | 61 | 95)) =>
                {
                    return Err(e);
                }
                // The device went away (ENODEV) or the handle is stale: reopen below.
                Err(_) => {
                    open.files.remove(path);
                }
            }
        }
        let f = std::fs::File::open(path)?;
        let text = read_from_start(&f, 4096);
        if open.files.len() < MAX_OPEN {
            open.files.insert(path.to_path_buf(), (f, now));
        }
        text
    })
}

/// Closes the kept files no collector read since the last sweep; called after each collection.
pub(crate) fn sweep_files() {
    OPEN.with(|open| {
        let mut open = open.borrow_mut();
        let now = open.collection;
        open.files.retain(|_, (_, used)| *used == now);
        open.collection = now + 1;
    });
}

pub use crate::pipeline::collected::Out;

/// Collectors that are off unless configured, like node_exporter's non-default ones.
#[derive(Debug, Clone, Copy, Default)]
pub struct Optional {
    /// `node_tcp_connection_states{state}` from `/proc/net/tcp{,6}`. Off by default: the
    /// kernel walks its whole TCP hash table to produce those files, which measured as the
    /// largest part of the agent's CPU on a 24 GiB host even with a handful of sockets.
    pub tcpstat: bool,
}

type Collector = fn(&Root, &mut Out) -> Result<(), CollectError>;

/// Why a collector failed (its `node_scrape_collector_success` is 0).
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// A kernel file could not be read: missing here (a container, an absent driver) or not
    /// permitted. Expected on many hosts; logged at debug level.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file did not hold what the kernel writes there: worth a warning.
    #[error("{0}")]
    Parse(String),
}

impl From<String> for CollectError {
    fn from(m: String) -> Self {
        CollectError::Parse(m)
    }
}

impl From<&str> for CollectError {
    fn from(m: &str) -> Self {
        CollectError::Parse(m.to_string())
    }
}

/// The default collectors, under node_exporter's collector names (the `collector` label of
/// `node_scrape_collector_*`).
const DEFAULT: &[(&str, Collector)] = &[
    ("arp", net::collect_arp),
    ("conntrack", net::collect_conntrack),
    ("cpu", cpu::collect),
    ("cpufreq", cpu::collect_cpufreq),
    ("diskstats", diskstats::collect),
    ("dmi", hw::collect_dmi),
    ("edac", hw::collect_edac),
    ("entropy", facts::collect_entropy),
    ("filefd", facts::collect_filefd),
    ("filesystem", filesystem::collect),
    ("hwmon", hw::collect_hwmon),
    ("loadavg", facts::collect_loadavg),
    ("mdadm", storage::collect_mdadm),
    ("meminfo", memory::collect),
    ("netclass", net::collect_netclass),
    ("netdev", netdev::collect),
    ("netstat", netstat::collect),
    ("nvme", storage::collect_nvme),
    ("os", facts::collect_os),
    ("powersupplyclass", hw::collect_power_supply),
    ("pressure", pressure::collect),
    ("schedstat", cpu::collect_schedstat),
    ("selinux", facts::collect_selinux),
    ("sockstat", netstat::collect_sockstat),
    ("softnet", net::collect_softnet),
    ("stat", cpu::collect_stat),
    ("thermal_zone", hw::collect_thermal),
    ("time", clock::collect_time),
    ("timex", clock::collect_timex),
    ("udp_queues", net::collect_udp_queues),
    ("uname", facts::collect_uname),
    ("vmstat", memory::collect_vmstat),
    ("xfs", storage::collect_xfs),
];

/// Runs every enabled collector, timing each as node_exporter does:
/// `node_scrape_collector_duration_seconds{collector}` and
/// `node_scrape_collector_success{collector}` (0 when it failed; its error is in `errors`).
pub fn collect_all(root: &Root, optional: Optional, out: &mut Out) {
    let tcpstat: &[(&str, Collector)] = if optional.tcpstat {
        &[("tcpstat", netstat::collect_tcp_states)]
    } else {
        &[]
    };
    let mut timings = Vec::with_capacity(DEFAULT.len() + 1);
    for (name, f) in DEFAULT.iter().chain(tcpstat) {
        let started = std::time::Instant::now();
        let ok = match f(root, out) {
            Ok(()) => true,
            Err(e) => {
                match &e {
                    CollectError::Read { .. } => {
                        tracing::debug!(collector = name, error = %e, "collector unavailable")
                    }
                    CollectError::Parse(_) => {
                        tracing::warn!(collector = name, error = %e, "collector read something it cannot parse")
                    }
                }
                out.errors.push((name, e.to_string()));
                false
            }
        };
        timings.push((*name, started.elapsed().as_secs_f64(), ok));
    }
    for (name, secs, ok) in timings {
        let l = [("collector", name)];
        out.add("node_scrape_collector_duration_seconds", &l, secs);
        out.add("node_scrape_collector_success", &l, f64::from(u8::from(ok)));
    }
    sweep_files();
}

/// The exposition type node_exporter gives metric `name`: its netstat and vmstat fields are
/// `untyped` (it cannot know each kernel field's kind), `_total` names are counters, the rest
/// gauges. Checked family by family against the real node_exporter in
/// `tests/tests/node_exporter.rs`.
pub fn family_type(name: &str) -> &'static str {
    if name.starts_with("node_netstat_") || name.starts_with("node_vmstat_") {
        "untyped"
    } else if name.ends_with("_total") {
        "counter"
    } else {
        "gauge"
    }
}

/// The series as Prometheus text exposition (0.0.4): families sorted by name, each with its
/// `# TYPE` line, series sorted by labels — what `telltale-agent collect` prints, so the
/// output can be compared with node_exporter's `/metrics` line by line.
pub fn exposition(series: &[SeriesSamples]) -> String {
    use std::fmt::Write;
    let mut rows: Vec<(&str, String, f64)> = series
        .iter()
        .filter_map(|s| {
            let name = s.labels.metric_name()?;
            let v = s.samples.last()?.1;
            let pairs: Vec<String> = s
                .labels
                .iter()
                .filter(|(k, _)| *k != "__name__")
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            Some((name, pairs.join(","), v))
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(b.0).then_with(|| a.1.cmp(&b.1)));
    let mut out = String::new();
    let mut last = "";
    for (name, labels, v) in rows {
        if name != last {
            let _ = writeln!(out, "# TYPE {name} {}", family_type(name));
            last = name;
        }
        let v = if v.is_nan() {
            "NaN".to_string()
        } else if v.is_infinite() {
            if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
        } else {
            v.to_string()
        };
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
    out
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The entries of a directory as `(name, path)`, sorted by name; `None` when it does not exist
/// (a host without that subsystem), an error naming it when it cannot be read.
fn list_dir(dir: &Path) -> Result<Option<Vec<(String, PathBuf)>>, String> {
    let rd = match std::fs::read_dir(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut v: Vec<(String, PathBuf)> = rd
        .filter_map(|e| {
            let e = e.ok()?;
            Some((e.file_name().into_string().ok()?, e.path()))
        })
        .collect();
    v.sort();
    Ok(Some(v))
}

/// Reads a file under `/proc`.
fn read(root: &Root, rel: &str) -> Result<String, CollectError> {
    root.proc_file(rel).map_err(|source| CollectError::Read {
        path: Path::new(&root.proc).join(rel),
        source,
    })
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

    /// A root whose `/proc`, `/sys` and `/` are `dir/proc`, `dir/sys` and `dir`.
    pub fn tree(dir: &std::path::Path) -> Root {
        Root {
            proc: dir.join("proc"),
            sys: dir.join("sys"),
            rootfs: dir.into(),
        }
    }

    pub fn root() -> Root {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        Root {
            proc: base.join("proc"),
            sys: base.join("sys"),
            rootfs: base.join("rootfs"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_open_proc_files_are_read_fresh_and_swept() {
        let path = Path::new("/proc/self/stat");
        // Field 14 is this process' user time; burn CPU until it moves.
        let utime = || -> u64 {
            let t = read_text(path).unwrap();
            let after = &t[t.rfind(')').unwrap() + 2..];
            after.split(' ').nth(11).unwrap().parse().unwrap()
        };
        let first = utime();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut x = 0u64;
        while utime() == first && std::time::Instant::now() < deadline {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
        }
        assert!(
            utime() > first,
            "a kept handle returned stale content ({x})"
        );
        let kept = || OPEN.with(|o| o.borrow().files.contains_key(path));
        assert!(kept());
        // Read in this collection: kept. Not read in the next: closed.
        sweep_files();
        assert!(kept());
        sweep_files();
        assert!(!kept());
        // Regular files are never kept.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, "1").unwrap();
        assert_eq!(read_text(&f).unwrap(), "1");
        assert!(!OPEN.with(|o| o.borrow().files.contains_key(&f)));
        // A file larger than the first buffer is read whole.
        for _ in 0..2 {
            let big = read_text(Path::new("/proc/self/smaps")).unwrap();
            assert!(big.len() > 4096 && big.ends_with('\n'), "{}", big.len());
            assert_eq!(big.matches("VmFlags:").count(), big.matches("Rss:").count());
        }
    }

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
