//! The room of the traces signal: spans shipped by agents, sampled where a trace's spans meet,
//! stored with the same durability contract as samples and log lines, and queried through
//! Jaeger's HTTP API.
//!
//! - [`store`]: the interface by role ([`store::SpanAppender`], [`store::TraceQuerier`]);
//! - [`sample`]: the tail-sampling policy and the traces waiting for their decision;
//! - [`engine`]: the engine behind the interface (WAL on [`crate::durable`], sampler, head,
//!   blocks, retention);
//! - [`graph`]: calls between services, matched from parent and child spans;
//! - [`block`]: the block format (traces by id in zstd chunks, search rows by service).

pub mod block;
pub mod engine;
pub mod graph;
pub mod pool;
pub mod sample;
pub mod store;
