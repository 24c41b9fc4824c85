//! Blixt without a cluster: the file provider ([`config`]) fills the translator's object index
//! from YAML manifests and reads the node's settings (a `NodeConfig`); the status view
//! ([`status`]) shows what the translator concluded, as `kubectl get -o wide` would, or as
//! YAML/JSON; the [`source`] watches the files and turns each version into a generation for
//! the node. `docs/standalone.md` describes the file format and the output.
// `deny`, not `forbid`: the config watcher's inotify calls (`source::watch`) are the exception.
#![deny(unsafe_code)]

pub mod config;
pub mod source;
pub mod status;

pub use config::{load, ConfigError, LoadCache, LoadedConfig, NodeConfigSpec};
pub use source::{SourceStatus, StandaloneSource};
