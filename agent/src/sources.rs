//! Where the agent's data comes from. Each source produces samples (and events) on its own
//! schedule and hands them to the pipeline; none of them knows about the buffer or the
//! transport.
//!
//! - [`host`]: host and network collectors, one file per `/proc`/`/sys` source, with
//!   node_exporter's names.
//! - [`scrape`]: Prometheus endpoints on the host; [`statsd`]: StatsD/DogStatsD over UDP;
//!   [`textfile`]: `*.prom` files; [`checks`]: HTTP/TCP/DNS/exec health checks.
//! - [`expfmt`]: the exposition format the scrape and textfile sources read; [`httpc`]: the
//!   small HTTP client of scrapes and checks.
//!
//! Logs and traces will be sources here too.

pub mod checks;
pub mod expfmt;
pub mod host;
pub mod httpc;
pub mod scrape;
pub mod statsd;
pub mod textfile;
