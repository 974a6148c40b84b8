//! Durability shared by every signal's store: record files framed like wire frames, scanned
//! with resynchronisation after damage ([`frames`]), and segment files written with group
//! commit ([`segments`]), and the record of which agent batches are stored ([`dedup`], so a
//! replayed batch is acknowledged without being stored twice). The metrics engine's WAL,
//! `series.log`, `events.log` and `checkpoint` are built on these. The logs and traces stores
//! share more: the skeleton of a store of immutable blocks behind a WAL ([`blockstore`]) and
//! their block files' envelope ([`blockfile`]). Exporters read the WALs from positions of their
//! own, and hold the segments they have not read ([`feed`]).

pub mod blockfile;
pub mod blockstore;
pub mod dedup;
pub mod feed;
pub mod frames;
pub mod segments;
