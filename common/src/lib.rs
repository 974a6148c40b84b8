//! Telltale's shared pieces: what the agent and the aggregator must agree on.
//!
//! # Layout
//! - [`cli`]: shell completions and man pages from the binaries' clap definitions.
//! - [`model`]: series, labels and samples — the data model both sides speak.
//! - [`wire`]: the messages exchanged over QUIC (handshake, batches, acknowledgements).
//! - [`codec`]: the sans-IO frame codec (length prefix, version, checksum, MessagePack);
//!   its byte layout is written down in its module doc.
//! - [`tls`]: certificate authority, issuing, and the rustls/quinn configurations for mutual TLS.
//! - [`config`]: primitives for strict TOML configuration (humantime durations, errors that name
//!   the key and the file).
//! - [`goregex`]: Go's regular expressions (RE2 syntax, as Prometheus, Alertmanager and Loki read
//!   them) written for Rust's `regex` and `regex-lite`.
//! - [`logfmt`]: the logfmt reader the agent's log parser and LogQL share;
//! - [`logging`]: the tracing set-up both binaries use;
//! - [`lokipush`]: Loki's push format (protobuf + snappy, JSON).
//! - [`names`]: the metric names Telltale itself exports, in one place.
//! - [`histogram`]: the latency histogram both daemons record and the pipeline diagram reads.
//! - [`lockfile`]: the exclusive lock each daemon takes on its data directory.
//! - [`store`]: opening sled stores: damage is moved aside, anything else is an error.
#![forbid(unsafe_code)]

pub mod cli;
pub mod codec;
pub mod config;
pub mod goregex;
pub mod histogram;
pub mod lockfile;
pub mod logfmt;
pub mod logging;
pub mod lokipush;
pub mod model;
pub mod names;
pub mod otlp;
pub mod parallel;
pub mod relabel;
pub mod rendezvous;
pub mod session;
pub mod store;
pub mod tls;
pub mod trace;
pub mod wire;

/// The ALPN protocol identifier both ends of the QUIC connection require.
pub const ALPN: &[u8] = b"telltale/1";

/// The version of the wire protocol this build speaks; carried in the handshake.
pub const PROTOCOL_VERSION: u16 = 1;

/// The version of Telltale itself (from the workspace).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
