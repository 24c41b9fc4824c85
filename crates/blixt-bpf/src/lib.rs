//! Blixt's eBPF dataplane: the C programs under `bpf/` (built by build.rs), the Rust mirror of
//! their shared structs, what the kernel offers ([`capabilities`]) and what the dataplane makes
//! of it ([`plan`]), the loader with typed map handles, and test helpers for packet fixtures.

pub mod capabilities;
pub mod kfunc;
pub mod live;
pub mod loader;
pub mod pinned;
pub mod plan;
pub mod shared;
pub mod testing;

pub use capabilities::{Capabilities, Capability};
pub use loader::{
    AttachedMode, Dataplane, DataplaneError, DataplaneMaps, DataplaneOptions, Verdict,
};
pub use pinned::PinnedDataplane;
pub use plan::{AttachMode, Hook, NeighPath, Plan};
