//! The structure stays as designed: every `crate::` path in the product code of the
//! aggregator and the agent points into a room its own room may use (so the dependency arrows
//! run one way and no import circle comes back), and no product file grows past 800 lines
//! (unit tests, after `#[cfg(test)]`, are not counted).
//!
//! Errors are typed at module boundaries: no public function returns `Result<_, String>`
//! (callers must be able to tell bad input from a failed read or write without parsing
//! text; private helpers may build a message that the boundary wraps).
//!
//! A room is a module path; a file belongs to the longest room its module path starts with. A
//! path into the file's own room is always allowed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 800;

/// `(room, rooms it may use)`. `*` allows every room (the wiring at the top).
const AGGREGATOR: &[(&str, &[&str])] = &[
    ("lib", &["*"]),
    ("labels", &[]),
    // Durability every signal's store shares (record files, WAL segments).
    ("durable", &[]),
    // ClickHouse's tables and rows (pure; the exporters send).
    ("clickhouse", &[]),
    ("alert", &["labels"]),
    (
        "metrics",
        &[
            "metrics::exemplars",
            "metrics::storage",
            "metrics::remote_write",
            "metrics::tsdb",
            "metrics::promql",
        ],
    ),
    ("metrics::remote_write", &["labels"]),
    (
        "metrics::exemplars",
        &["labels", "durable", "metrics::storage"],
    ),
    // Logs: their own store behind their own interface, on the shared durability code.
    ("logs", &["labels", "durable"]),
    // Traces: their own store behind their own interface, on the shared durability code.
    ("traces", &["durable", "selfmetrics"]),
    (
        "metrics::storage",
        &["labels", "metrics::remote_write", "durable"],
    ),
    (
        "metrics::tsdb",
        &[
            "labels",
            "metrics::storage",
            "metrics::remote_write",
            "durable",
        ],
    ),
    // The query language reads through the storage interface only: not the engine, not HTTP.
    ("metrics::promql", &["labels", "metrics::storage"]),
    ("selfmetrics", &["metrics::storage"]),
    // Rules read metrics through PromQL and logs through LogQL, never an engine.
    (
        "rules",
        &[
            "alert",
            "labels",
            "logs",
            "metrics::storage",
            "metrics::promql",
            "selfmetrics",
        ],
    ),
    // Alerting and remediation share the vocabulary in `alert` and talk over channels.
    (
        "alerting",
        &["alert", "clickhouse", "labels", "selfmetrics"],
    ),
    (
        "remediate",
        &["alert", "labels", "metrics::storage", "selfmetrics"],
    ),
    ("agents", &[]),
    // Forwarding to outside stores reads the engines' WALs through their feed handles.
    (
        "forward",
        &[
            "clickhouse",
            "durable",
            "logs",
            "metrics::remote_write",
            "metrics::tsdb",
            "traces",
        ],
    ),
    // Anomaly detection: the methods and the NAB scorer are pure computation; the live
    // detectors read through PromQL and write through the storage interface, like rules.
    ("anomaly", &[]),
    (
        "anomaly::live",
        &[
            "anomaly",
            "labels",
            "metrics::storage",
            "metrics::promql",
            "selfmetrics",
        ],
    ),
    // SLOs become rule groups (through the rule-file parser) and read their series back
    // through PromQL.
    ("slo", &["alert", "labels", "metrics::promql", "rules"]),
    // Reports compute from what they are handed and from PromQL; the HTTP layer and the
    // wiring gather the records and deliver.
    (
        "report",
        &["anomaly", "labels", "metrics::promql", "selfmetrics", "slo"],
    ),
    // The pipeline diagram is computed from facts the HTTP layer gathers, and its window of
    // the stage histograms.
    ("pipeline", &["selfmetrics"]),
    (
        "ingest",
        &[
            "agents",
            "logs",
            "metrics::exemplars",
            "metrics::storage",
            "remediate",
            "selfmetrics",
            "traces",
        ],
    ),
    (
        "config",
        &[
            "forward",
            "labels",
            "logs",
            "metrics::tsdb",
            "report",
            "traces",
        ],
    ),
    (
        "reload",
        &[
            "alerting",
            "anomaly::live",
            "config",
            "remediate",
            "rules",
            "selfmetrics",
            "slo",
        ],
    ),
    // The HTTP layer may use everything but the wiring.
    (
        "api",
        &[
            "agents",
            "alert",
            "anomaly",
            "anomaly::live",
            "alerting",
            "config",
            "durable",
            "forward",
            "labels",
            "logs",
            "metrics",
            "metrics::exemplars",
            "metrics::storage",
            "metrics::remote_write",
            "metrics::tsdb",
            "metrics::promql",
            "pipeline",
            "reload",
            "remediate",
            "report",
            "rules",
            "selfmetrics",
            "slo",
            "traces",
        ],
    ),
    ("serve", &["*"]),
];

const AGENT: &[(&str, &[&str])] = &[
    ("lib", &["*"]),
    ("run", &["*"]),
    // Settings name the sources and pipeline stages they configure.
    ("config", &["sources", "pipeline", "buffer", "remediate"]),
    // Sources hand batches to the pipeline; they know nothing of buffer or transport.
    ("sources", &["pipeline"]),
    ("pipeline", &[]),
    ("buffer", &[]),
    ("remediate", &["pipeline"]),
    // Transport reaches remediation through channels wired in run.rs, not by import.
    ("transport", &["buffer"]),
];

const COMMON: &[(&str, &[&str])] = &[
    ("lib", &["*"]),
    // Completions and man pages from the binaries' clap definitions.
    ("cli", &[]),
    ("codec", &[]),
    ("config", &[]),
    // Go's regular expressions written for Rust's engines (no dependencies: text to text).
    ("goregex", &[]),
    ("histogram", &[]),
    ("lockfile", &[]),
    ("logfmt", &[]),
    ("logging", &["config", "model"]),
    ("lokipush", &["model", "wire"]),
    ("model", &[]),
    ("names", &[]),
    // Prometheus' relabelling (the agent's sources, the aggregator's remote_write queues).
    ("relabel", &["config", "model", "goregex"]),
    // Rendezvous hashing: an agent's aggregator in a pool, a trace's aggregator.
    ("rendezvous", &[]),
    // OTLP's three signals: spans, series (metrics) and log records.
    ("otlp", &["trace", "model"]),
    // Scoped threads over consecutive ranges (the query path's reads and sweeps).
    ("parallel", &[]),
    // The protocol's state machines: frames and messages only, no I/O.
    ("session", &["codec", "model", "wire"]),
    ("store", &["model"]),
    ("tls", &[]),
    ("trace", &[]),
    ("wire", &["model", "codec", "trace"]),
];

/// Product lines of a file (numbered from 1): up to its first `#[cfg(test)]`, comment lines
/// left out.
fn product(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, l)| !l.starts_with("#[cfg(test)]"))
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l))
        .collect()
}

/// The `crate::` paths a line names (also inside `use crate::{a, b::c}`).
fn paths(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        // `telltale_common::...` or `some_crate::` are not this crate.
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let p: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                if !p.is_empty() {
                    out.push(p);
                }
            }
            continue;
        }
        let p: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        out.push(p.trim_end_matches(':').to_string());
    }
    out
}

/// Signatures of public functions, each joined onto one line: `(line number, text)`.
fn pub_fns(lines: &[(usize, &str)]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].1.trim_start();
        if t.starts_with("pub") && t.contains(" fn ") {
            let mut sig = String::new();
            let mut j = i;
            while j < lines.len() {
                sig.push_str(lines[j].1.trim());
                sig.push(' ');
                let l = lines[j].1.trim_end();
                if l.ends_with('{') || l.ends_with(';') {
                    break;
                }
                j += 1;
            }
            out.push((lines[i].0, sig));
            i = j;
        }
        i += 1;
    }
    out
}

/// Whether a function signature returns `Result<_, String>`.
fn returns_string_error(sig: &str) -> bool {
    // The return type follows the parameter list's closing parenthesis (parameters may hold
    // closures with arrows of their own).
    let Some(open) = sig.find('(') else {
        return false;
    };
    let mut depth = 0;
    let mut close = None;
    for (i, c) in sig[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let Some(close) = close else { return false };
    let Some(ret) = sig[close..].split_once("->").map(|(_, r)| r) else {
        return false;
    };
    let ret: String = ret
        .split(" where ")
        .next()
        .unwrap_or("")
        .trim_end_matches([' ', '{', ';'])
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    ret.starts_with("Result<") && ret.ends_with(",String>")
}

/// The longest room `path` starts with.
fn room_of<'a>(rooms: &[(&'a str, &[&str])], path: &str) -> Option<&'a str> {
    rooms
        .iter()
        .map(|(r, _)| *r)
        .filter(|r| path == *r || path.starts_with(&format!("{r}::")))
        .max_by_key(|r| r.len())
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("source directory") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Module path of a source file (`metrics/tsdb/wal.rs` → `metrics::tsdb::wal`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    rel.with_extension("").to_string_lossy().replace('/', "::")
}

/// Problems in one crate: forbidden arrows and oversized files.
fn check(krate: &str, rooms: &[(&str, &[&str])]) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 5, "no sources found under {}", src.display());
    let mut problems = Vec::new();
    let mut arrows: BTreeMap<(String, String), String> = BTreeMap::new();
    for f in files {
        let module = module_of(&src, &f);
        // Test-only files: `tests.rs` modules and the binary's entry point have no room.
        if module.ends_with("tests") || module.contains("::tests::") || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("readable source");
        let lines = product(&text);
        if lines.len() > MAX_LINES {
            problems.push(format!(
                "{krate}/src/{}: {} product lines (at most {MAX_LINES})",
                f.strip_prefix(&src).unwrap_or(&f).display(),
                lines.len()
            ));
        }
        for (n, sig) in pub_fns(&lines) {
            if returns_string_error(&sig) {
                problems.push(format!(
                    "{krate}/src/{} line {n}: a public function returns Result<_, String>; \
                     give it a typed error",
                    f.strip_prefix(&src).unwrap_or(&f).display()
                ));
            }
        }
        let Some(own) = room_of(rooms, &module) else {
            problems.push(format!(
                "{krate}: module {module} is in no room (add it to tests/tests/architecture.rs)"
            ));
            continue;
        };
        let allowed = rooms
            .iter()
            .find(|(r, _)| *r == own)
            .map(|(_, a)| *a)
            .unwrap_or(&[]);
        for (n, line) in &lines {
            for p in paths(line) {
                // Items of the crate root (`crate::ALPN`) belong to everyone.
                if p.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
                    continue;
                }
                let Some(target) = room_of(rooms, &p) else {
                    problems.push(format!(
                        "{krate}: {module} line {n}: crate::{p} is in no room"
                    ));
                    continue;
                };
                if target == own || allowed.contains(&"*") || allowed.contains(&target) {
                    continue;
                }
                arrows
                    .entry((own.to_string(), target.to_string()))
                    .or_insert_with(|| format!("{module} line {n}: crate::{p}"));
            }
        }
    }
    for ((from, to), at) in arrows {
        problems.push(format!("{krate}: {from} must not use {to} ({at})"));
    }
    problems
}

#[test]
fn path_extraction_sees_groups_and_ignores_other_crates() {
    assert_eq!(
        paths("use crate::{alert::Alert, labels};"),
        vec!["alert::Alert", "labels"]
    );
    assert_eq!(
        paths("let x = crate::metrics::storage::Matcher::equal(a, b);"),
        vec!["metrics::storage::Matcher::equal"]
    );
    assert!(paths("use telltale_common::crate_name;").is_empty());
    assert!(paths("use my_crate::x;").is_empty());
    let rooms: &[(&str, &[&str])] = &[("metrics", &[]), ("metrics::tsdb", &[])];
    assert_eq!(room_of(rooms, "metrics::tsdb::wal"), Some("metrics::tsdb"));
    assert_eq!(room_of(rooms, "metrics::promql"), Some("metrics"));
    assert_eq!(room_of(rooms, "metricsx"), None);
    assert_eq!(product("a\n// b\n#[cfg(test)]\nc").len(), 1);
}

#[test]
fn string_errors_are_found_in_public_signatures_only() {
    let text = "pub fn a(x: &str) -> Result<u8, String> {\n}\n\
                fn b() -> Result<u8, String> {\n}\n\
                pub fn c(\n    f: impl Fn() -> Result<u8, String>,\n) -> Result<u8, Invalid> {\n}\n\
                pub async fn d(\n    x: u8,\n) -> Result<Vec<(u8, String)>,\n    String> {\n}\n\
                pub fn e() -> Result<String, Error>;\n";
    let lines = product(text);
    let flagged: Vec<usize> = pub_fns(&lines)
        .into_iter()
        .filter(|(_, s)| returns_string_error(s))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(flagged, vec![1, 9]);
}

#[test]
fn the_aggregator_keeps_its_arrows_one_way_and_its_files_small() {
    let p = check("aggregator", AGGREGATOR);
    assert!(p.is_empty(), "{}", p.join("\n"));
}

#[test]
fn the_agent_keeps_its_arrows_one_way_and_its_files_small() {
    let p = check("agent", AGENT);
    assert!(p.is_empty(), "{}", p.join("\n"));
}

#[test]
fn the_common_crate_keeps_its_files_small() {
    let p = check("common", COMMON);
    assert!(p.is_empty(), "{}", p.join("\n"));
}
