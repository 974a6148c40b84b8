//! How batches leave the host: [`shipper`], the QUIC client with mutual TLS (handshake,
//! in-flight window, backlog drain, reconnects, commands from the aggregator).

pub mod shipper;
