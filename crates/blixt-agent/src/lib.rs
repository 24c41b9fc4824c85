//! Blixt's node agent: the [`Node`] applies each [`Generation`](blixt_core::generation::Generation)
//! (the snapshot to the BPF maps atomically, TLS passthrough, VIP announcement, metrics);
//! the [`runner`] loop feeds it from a source and sweeps conntrack.

pub mod controller;
pub mod garp;
pub mod metrics;
pub mod neighbours;
pub mod node;
pub mod reconciler;
pub mod runner;
pub mod tls;

pub use node::{DataplaneStatus, Node, NodeServices};
pub use reconciler::{ApplyError, ApplyReport, NodeConfig, Reconciler};
