//! Blixt's eBPF dataplane: the C programs under `bpf/` (built by build.rs), the Rust mirror of
//! their shared structs, the loader with typed map handles, and test helpers for packet fixtures.

pub mod live;
pub mod loader;
pub mod pinned;
pub mod shared;
pub mod testing;

pub use loader::{AttachedMode, Dataplane, DataplaneError, DataplaneMaps, DataplaneOptions};
pub use pinned::PinnedDataplane;
