//! The Telltale host agent: collects node metrics, buffers them durably in sled and ships
//! them to the aggregator over QUIC with mutual TLS.
//!
//! # Layout (in the order data flows)
//! - [`collector`]: host and network collectors, one file per `/proc` source, node_exporter names.
//! - [`scrape`], [`statsd`], [`textfile`], [`checks`]: the other sources (Prometheus endpoints
//!   on the host, StatsD/DogStatsD, `*.prom` files, HTTP/TCP/DNS/exec health checks), with
//!   [`expfmt`] (the exposition format) and [`httpc`] (a small HTTP client).
//! - [`pipeline`]: relabel ([`relabel`]), enrich ([`hostinfo`]), cap cardinality, sample.
//! - [`run`]: starts the sources and the task that runs the pipeline into the buffer.
//! - [`buffer`]: the sled-backed queue; a batch stays until acknowledged.
//! - [`shipper`]: the QUIC client: handshake, in-flight window, backlog drain, reconnects.
//! - [`config`]: the TOML file and its validation.
// Denied, not forbidden: `collector::clock` allows it for adjtimex(2) and localtime_r(3).
#![deny(unsafe_code)]

pub mod buffer;
pub mod checks;
pub mod collector;
pub mod config;
pub mod expfmt;
pub mod hostinfo;
pub mod httpc;
pub mod pipeline;
pub mod relabel;
pub mod remediate;
pub mod run;
pub mod scrape;
pub mod shipper;
pub mod statsd;
pub mod textfile;
