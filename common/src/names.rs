//! Names of the metrics Telltale exports about itself, in one place.

/// Batches waiting in the agent's buffer.
pub const AGENT_BUFFER_BATCHES: &str = "telltale_agent_buffer_batches";
/// Bytes held by the agent's buffer.
pub const AGENT_BUFFER_BYTES: &str = "telltale_agent_buffer_bytes";
/// Batches dropped by the agent (buffer cap, corrupt records, rejected by the aggregator).
pub const AGENT_DROPPED_BATCHES: &str = "telltale_agent_dropped_batches_total";
/// Batches acknowledged by the aggregator.
pub const AGENT_SHIPPED_BATCHES: &str = "telltale_agent_shipped_batches_total";
/// Samples acknowledged by the aggregator.
pub const AGENT_SHIPPED_SAMPLES: &str = "telltale_agent_shipped_samples_total";
/// Time from sending a batch to its acknowledgement, last observed.
pub const AGENT_ACK_LATENCY: &str = "telltale_agent_ack_latency_seconds";
/// Time the last collection took.
pub const AGENT_COLLECT_DURATION: &str = "telltale_agent_collect_duration_seconds";
/// Connections made to the aggregator.
pub const AGENT_CONNECTS: &str = "telltale_agent_connects_total";
/// Whether the agent is connected to the aggregator now.
pub const AGENT_CONNECTED: &str = "telltale_agent_connected";

/// Batches received by the aggregator.
pub const AGG_BATCHES: &str = "telltale_aggregator_batches_total";
/// Batches received again after they were stored (replays), acknowledged but not stored twice.
pub const AGG_DUPLICATE_BATCHES: &str = "telltale_aggregator_duplicate_batches_total";
/// Batches refused because they do not decode.
pub const AGG_REJECTED_BATCHES: &str = "telltale_aggregator_rejected_batches_total";
/// Samples stored by the aggregator.
pub const AGG_SAMPLES: &str = "telltale_aggregator_samples_ingested_total";
/// Connections closed because of a bad frame.
pub const AGG_FRAME_ERRORS: &str = "telltale_aggregator_frame_errors_total";
/// Connections refused in the handshake.
pub const AGG_HANDSHAKE_ERRORS: &str = "telltale_aggregator_handshake_errors_total";
/// Agents connected now.
pub const AGG_CONNECTED_AGENTS: &str = "telltale_aggregator_connected_agents";
/// Series held by the storage engine.
pub const AGG_SERIES: &str = "telltale_aggregator_series";
/// Samples held by the storage engine.
pub const AGG_STORED_SAMPLES: &str = "telltale_aggregator_stored_samples";
/// Samples that replaced an existing sample with the same timestamp.
pub const AGG_OVERWRITTEN_SAMPLES: &str = "telltale_aggregator_samples_overwritten_total";
/// Records skipped as corrupt when the log was replayed.
pub const AGG_CORRUPT_RECORDS: &str = "telltale_aggregator_corrupt_records_total";
/// HTTP queries answered, by endpoint.
pub const AGG_HTTP_REQUESTS: &str = "telltale_aggregator_http_requests_total";
