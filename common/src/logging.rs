//! Logging set-up shared by both binaries: to stderr, colours only on a terminal, level from
//! `TELLTALE_LOG` (`error`, `warn`, `info` (default), `debug`, `trace`).
//!
//! A plain level rather than per-module directives: the directive parser pulls a regex engine
//! into the agent, which costs resident memory on every host for a rarely used feature.

use tracing_subscriber::filter::LevelFilter;

/// The level named by `TELLTALE_LOG`, `info` when unset or unknown.
pub fn level() -> LevelFilter {
    std::env::var("TELLTALE_LOG")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(LevelFilter::INFO)
}

/// Installs the global tracing subscriber.
pub fn init() {
    tracing_subscriber::fmt()
        .with_max_level(level())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
