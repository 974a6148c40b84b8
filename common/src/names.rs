//! Names of the metrics Telltale exports about itself, in one place.

/// Batches waiting in the agent's buffer.
pub const AGENT_BUFFER_BATCHES: &str = "telltale_agent_buffer_batches";
/// Bytes held by the agent's buffer.
pub const AGENT_BUFFER_BYTES: &str = "telltale_agent_buffer_bytes";
/// 1 while the agent's buffer cannot write because its disk is full (batches are held in
/// memory, bounded, until it can).
pub const AGENT_DISK_FULL: &str = "telltale_agent_disk_full";
/// 1 while the aggregator's metric storage cannot write because its disk is full.
pub const AGG_DISK_FULL: &str = "telltale_aggregator_disk_full";
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
/// Batches refused for good: they do not decode, or they name a series invalidly.
pub const AGG_REJECTED_BATCHES: &str = "telltale_aggregator_rejected_batches_total";
/// Samples stored by the aggregator.
pub const AGG_SAMPLES: &str = "telltale_aggregator_samples_ingested_total";
/// Connections closed because of a bad frame.
pub const AGG_FRAME_ERRORS: &str = "telltale_aggregator_frame_errors_total";
/// Connections refused in the handshake.
pub const AGG_HANDSHAKE_ERRORS: &str = "telltale_aggregator_handshake_errors_total";
/// Connection attempts sent a QUIC Retry first because many handshakes were in progress.
pub const AGG_HANDSHAKE_RETRIES: &str = "telltale_aggregator_handshake_retries_total";
/// Agent connections replaced by a newer connection of the same agent (counter).
pub const AGG_CONNECTIONS_REPLACED: &str = "telltale_aggregator_connections_replaced_total";
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
/// New series refused by the active-series caps, by `reason` (`agent_limit`, `total_limit`).
pub const AGG_SERIES_REFUSED: &str = "telltale_aggregator_series_refused_total";
/// Samples refused, by `reason` (`too_old`: behind the out-of-order window or retention).
pub const AGG_SAMPLES_REFUSED: &str = "telltale_aggregator_samples_refused_total";
/// Active series (written within the active window).
pub const AGG_ACTIVE_SERIES: &str = "telltale_aggregator_active_series";
/// Samples in the storage head (not yet in a block).
pub const AGG_HEAD_SAMPLES: &str = "telltale_aggregator_head_samples";
/// Deletions in force (tombstones not yet cleaned) and the series they name, by `what`.
pub const AGG_TOMBSTONES: &str = "telltale_aggregator_tombstones";
/// Storage blocks, by `kind` and `level`.
pub const AGG_BLOCKS: &str = "telltale_aggregator_storage_blocks";
/// Bytes of storage blocks, by `kind`.
pub const AGG_BLOCK_BYTES: &str = "telltale_aggregator_storage_block_bytes";
/// Chunks that failed their checksum or did not decode when read.
pub const AGG_CORRUPT_CHUNKS: &str = "telltale_aggregator_storage_corrupt_chunks_total";
/// Blocks moved to quarantine at start-up.
pub const AGG_QUARANTINED_BLOCKS: &str = "telltale_aggregator_storage_quarantined_blocks_total";
/// Bytes written to the WAL.
pub const AGG_WAL_BYTES: &str = "telltale_aggregator_wal_bytes_total";
/// Head cuts into blocks.
pub const AGG_HEAD_CUTS: &str = "telltale_aggregator_head_cuts_total";
/// Compactions.
pub const AGG_COMPACTIONS: &str = "telltale_aggregator_compactions_total";
/// Blocks merged or rewritten out of turn to keep newest-write-wins.
pub const AGG_RESEQUENCED: &str = "telltale_aggregator_blocks_resequenced_total";
/// Blocks deleted by retention.
pub const AGG_EXPIRED_BLOCKS: &str = "telltale_aggregator_blocks_expired_total";
/// Storage maintenance rounds that failed.
pub const AGG_MAINTENANCE_ERRORS: &str = "telltale_aggregator_storage_maintenance_errors_total";
/// Rule group evaluations, by trigger (`timer` or `eager`).
pub const AGG_RULE_EVALUATIONS: &str = "telltale_aggregator_rule_group_evaluations_total";
/// Rule evaluations that failed.
pub const AGG_RULE_FAILURES: &str = "telltale_aggregator_rule_evaluation_failures_total";
/// Log lines per pattern and source (a counter series the aggregator writes).
pub const LOG_PATTERN_LINES: &str = "telltale_log_pattern_lines_total";
/// Log lines clustered into patterns.
pub const AGG_LOG_PATTERN_LINES: &str = "telltale_aggregator_log_pattern_lines_total";
/// Log lines not clustered (queue full, too many sources).
pub const AGG_LOG_PATTERN_SKIPPED: &str = "telltale_aggregator_log_pattern_lines_skipped_total";
/// Pattern events written.
pub const AGG_LOG_PATTERN_EVENTS: &str = "telltale_aggregator_log_pattern_events_total";
/// Pattern templates held.
pub const AGG_LOG_PATTERNS: &str = "telltale_aggregator_log_patterns";
/// Streams with pattern counts.
pub const AGG_LOG_PATTERN_STREAMS: &str = "telltale_aggregator_log_pattern_streams";
/// Notifications delivered, by integration.
pub const AGG_NOTIFICATIONS: &str = "telltale_aggregator_notifications_total";
/// Notification delivery attempts that failed (and will be retried), by integration.
pub const AGG_NOTIFICATION_FAILURES: &str =
    "telltale_aggregator_notification_attempts_failed_total";
/// Notifications given up on (queue full, permanent refusal, retries exhausted).
pub const AGG_NOTIFICATIONS_DROPPED: &str = "telltale_aggregator_notifications_dropped_total";
/// Notifications waiting for delivery.
pub const AGG_NOTIFICATION_QUEUE: &str = "telltale_aggregator_notification_queue_length";
/// Whether the last configuration reload succeeded (gauge, Prometheus' name with our prefix).
pub const AGG_RELOAD_SUCCESSFUL: &str = "telltale_aggregator_config_last_reload_successful";
/// When the configuration was last reloaded successfully (gauge, seconds).
pub const AGG_RELOAD_SUCCESS_TIME: &str =
    "telltale_aggregator_config_last_reload_success_timestamp_seconds";
/// Failed configuration reloads (counter).
pub const AGG_RELOAD_FAILURES: &str = "telltale_aggregator_config_reload_failures_total";
/// Remediations refused because the agent does not offer the runbook's action (counter).
pub const AGG_REMEDIATION_UNKNOWN_ACTION: &str =
    "telltale_aggregator_remediation_unknown_action_total";
/// Damaged alerting state found at start-up (counter).
pub const AGG_ALERTING_STATE_DAMAGED: &str = "telltale_aggregator_alerting_state_damaged_total";
/// Alerts known to the alerting side, by state (`active`, `suppressed`).
pub const AGG_ALERTS: &str = "telltale_aggregator_alerts";
/// Open incidents.
pub const AGG_INCIDENTS_OPEN: &str = "telltale_aggregator_incidents_open";
/// Remediation outcomes by action and result (also written as a series).
pub const REMEDIATION_RUNS: &str = "telltale_remediation_runs_total";
/// Seconds from a batch's creation on its agent to its arrival at the aggregator (histogram).
pub const AGG_BATCH_DELAY: &str = "telltale_aggregator_batch_delay_seconds";
/// Seconds from a batch's arrival to its acknowledgement (histogram).
pub const AGG_INGEST_SECONDS: &str = "telltale_aggregator_ingest_seconds";
/// Seconds per rule group evaluation (histogram).
pub const AGG_RULE_GROUP_SECONDS: &str = "telltale_aggregator_rule_group_duration_seconds";
/// Seconds from an alert firing to its first accepted notification (histogram).
pub const AGG_ALERT_TO_NOTIFICATION: &str = "telltale_aggregator_alert_to_notification_seconds";
/// Samples handed over by each source of an agent (`source` label: `host`, `scrape:<job>`…).
pub const AGENT_SOURCE_SAMPLES: &str = "telltale_agent_source_samples_total";
/// Notifications for integrations Telltale does not deliver (`receiver`, `integration`).
pub const AGG_NOTIFICATIONS_UNDELIVERABLE: &str =
    "telltale_aggregator_notifications_undeliverable_total";
