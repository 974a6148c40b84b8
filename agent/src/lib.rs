//! The Telltale host agent: collects node metrics, buffers them durably in sled and ships
//! them to the aggregator over QUIC with mutual TLS.
//!
//! # Layout (in the order data flows)
//! - [`sources`]: where data comes from — host collectors, scrapes, StatsD, textfiles,
//!   health checks (and logs and traces next).
//! - [`pipeline`]: relabel, enrich with host facts, cap cardinality, sample.
//! - [`buffer`]: the sled-backed queue; a batch stays until acknowledged.
//! - [`transport`]: the QUIC client: handshake, in-flight window, backlog drain, reconnects.
//! - [`remediate`]: runs the commands the aggregator pushes, from the agent's own allowlist.
//! - [`run`]: starts the sources and the task that runs the pipeline into the buffer; wires
//!   the rest.
//! - [`config`]: the TOML file and its validation.
// Denied, not forbidden: `sources::host::clock` allows it for adjtimex(2) and localtime_r(3).
#![deny(unsafe_code)]

pub mod buffer;
pub mod config;
pub mod pipeline;
pub mod remediate;
pub mod run;
pub mod sources;
pub mod transport;
