//! The Telltale aggregator: receives agents' batches over QUIC with mutual TLS, stores them
//! durably, and answers Prometheus-compatible queries over HTTP.
//!
//! # Layout (in the order data flows)
//! - [`ingest`]: QUIC server, handshake, frames, acknowledgement after durability.
//! - [`storage`]: the interface ingest writes to and queries read from.
//! - [`tsdb`]: the storage engine (WAL with group commit, head, compressed blocks, rollups).
//! - [`promql`]: query evaluation over the storage trait.
//! - [`rules`]: recording and alerting rules (Prometheus rule files), evaluated on a timer
//!   and as samples arrive.
//! - [`alerting`]: routing, grouping, inhibition, silences, escalation, incidents, delivery.
//! - [`remediate`]: runbooks, commands to agents over their QUIC connection, verification.
//! - [`logs`]: the log store (LogQL, Loki's API).
//! - [`traces`]: the trace store (tail sampling, Jaeger's API).
//! - [`anomaly`]: anomaly detection, scored on the Numenta Anomaly Benchmark.
//! - [`forward`]: remote_write out and the ClickHouse exporter ([`clickhouse`]: its tables).
//! - [`pipeline`]: the live pipeline diagram (Mermaid and JSON) with measured figures.
//! - [`api`]: the HTTP API (Prometheus' envelope), `/metrics`, health.
//! - [`agents`]: connection state per agent (`up`, `/api/v1/agents`).
//! - [`config`]: the TOML file and its validation into runtime settings.
//! - [`reload`]: loading the rule, routing and runbook files as one set; reload status.
//! - [`serve`]: wiring of the above into the running service.
//! - [`selfmetrics`]: the aggregator's own counters and stage latency histograms.
// Unsafe code only where a C call has no safe wrapper: `serve::memory` (the allocator).
#![deny(unsafe_code)]

pub mod agents;
pub mod alert;
pub mod alerting;
pub mod anomaly;
pub mod api;
pub mod clickhouse;
pub mod config;
pub mod durable;
pub mod forward;
pub mod ingest;
pub mod labels;
pub mod logs;
pub mod metrics;
pub mod pipeline;
pub mod reload;
pub mod remediate;
pub mod report;
pub mod rules;
pub mod selfmetrics;
pub mod serve;
pub mod slo;
pub mod traces;
