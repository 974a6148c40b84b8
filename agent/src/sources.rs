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
//! - [`logfile`]: log files tailed through rotations, [`logparse`]: fields and levels of log
//!   lines, [`syslog`]: RFC 5424/3164 over UDP and TCP, [`forward`]: Fluentd's forward
//!   protocol, [`journald`]: the systemd journal, [`loki`]: Loki's push API, [`logbatch`]:
//!   lines by stream; log
//!   sources hand batches and read positions to a `pipeline::logsink::LogSink`.
//!
//! Traces will be sources here too.

pub mod checks;
pub mod expfmt;
pub mod forward;
pub mod host;
pub mod httpc;
pub mod journald;
pub mod logbatch;
pub mod logfile;
pub mod logparse;
pub mod loki;
pub mod otlp;
pub mod scrape;
pub mod statsd;
pub mod syslog;
pub mod textfile;
