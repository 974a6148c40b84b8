//! The Telltale host agent: collects node metrics, buffers them durably in sled and ships
//! them to the aggregator over QUIC with mutual TLS.
//!
//! # Layout (in the order data flows)
//! - [`collector`]: host and network collectors, one file per `/proc` source, node_exporter names.
//! - [`run`]: the loop that collects every interval and stamps `instance` and `job`.
//! - [`buffer`]: the sled-backed queue; a batch stays until acknowledged.
//! - [`shipper`]: the QUIC client: handshake, in-flight window, backlog drain, reconnects.
//! - [`config`]: the TOML file and its validation.
#![forbid(unsafe_code)]

pub mod buffer;
pub mod collector;
pub mod config;
pub mod run;
pub mod shipper;
