//! Alerting: from alerts to the right notification, once — Alertmanager's model (routing,
//! grouping, inhibition, silences, deduplication), plus escalation and correlation into
//! incidents.
//!
//! Logic without I/O, each taking `now` and returning what to do:
//! - [`config`]: the routing file (Alertmanager's YAML shape + Telltale's extensions),
//!   validated into runtime types;
//! - [`route`]: the routing tree; [`inhibit`]: inhibition rules; [`silence`]: silences;
//!   [`timeinterval`]: mute and active time intervals;
//! - [`dispatch`]: aggregation groups (group_wait, group_interval, repeat_interval) and the
//!   notification log that decides whether a flush notifies;
//! - [`escalate`]: escalation policies (ordered steps, repeat, acknowledgement);
//! - [`correlate`]: incidents from firing alerts — a root cause and what it explains through
//!   the topology and onsets — with the reason for each root choice and a timeline;
//! - [`payload`]: Alertmanager's webhook v4 body and its v2 API's alert shape.
//!
//! With I/O: [`deliver`] (webhook, Alertmanager, NATS JetStream, log; retries with backoff)
//! and [`service`], the driver, which keeps silences, the notification log, pending
//! deliveries and incidents in sled so a restart neither loses nor repeats a notification.

pub mod apiquery;
pub mod config;
pub mod core;
pub mod correlate;
pub mod deliver;
pub mod dispatch;
pub mod escalate;
pub mod inhibit;
pub mod payload;
pub mod route;
pub mod service;
pub mod silence;
pub mod timeinterval;

pub use crate::alert::{Alert, fingerprint, fingerprint_hex, parse_rfc3339, priority_of, rfc3339};
