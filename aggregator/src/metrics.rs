//! The metrics signal: the storage interface, the engine behind it and the query language.
//!
//! - [`storage`]: the interface ingest appends to and queries read from, split by role
//!   ([`storage::Appender`], [`storage::Querier`], [`storage::Admin`]); its rollup
//!   vocabulary ([`storage::rollup`]); a small in-memory engine ([`storage::memory`]) that
//!   unit tests run on.
//! - [`remote_write`]: Prometheus' remote_write wire format (protobuf), which the engine walks.
//! - [`tsdb`]: the engine (WAL with group commit, head, compressed blocks, rollups).
//! - [`promql`]: query evaluation over [`storage::Querier`] only.
//! - [`exemplars`]: the newest exemplars of series (trace ids on latency buckets).
//!
//! Logs and traces get rooms of their own beside this one, each behind its own interface.

pub mod exemplars;
pub mod promql;
pub mod remote_write;
pub mod storage;
pub mod tsdb;
