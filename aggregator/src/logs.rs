//! The room of the logs signal: log lines by stream, stored with the same durability contract
//! as samples and queried with LogQL through the Loki HTTP API.
//!
//! - [`store`]: the interface by role ([`store::LogAppender`], [`store::LogQuerier`]);
//! - [`engine`]: the engine behind it (WAL on [`crate::durable`], head, blocks, retention);
//! - [`block`]: the block format (zstd chunks by stream, trigram filters);
//! - [`logql`]: LogQL — the parser and the evaluator, over the interface only;
//! - [`push`]: Loki's push format (JSON and protobuf + snappy) decoded into streams;
//! - [`patterns`]: lines clustered into templates as they are stored (Drain), counted per
//!   stream and time, with new and surging patterns as events;
//! - [`observe`]: the store as the aggregator runs it, handing stored lines to the patterns
//!   and to live tails.

pub mod block;
pub mod engine;
pub mod logql;
pub mod observe;
pub mod patterns;
pub mod push;
pub mod store;
