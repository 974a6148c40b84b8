//! Loki's push format, shared with the agent: see [`telltale_common::lokipush`].

pub use telltale_common::lokipush::*;
