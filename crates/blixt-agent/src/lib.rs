//! Blixt's node agent: applies dataplane Snapshots to the BPF maps atomically, sweeps
//! conntrack and reads counters.

pub mod garp;
pub mod metrics;
pub mod neighbours;
pub mod reconciler;
pub mod runner;

pub use reconciler::{ApplyError, ApplyReport, NodeConfig, Reconciler};
