//! Blixt without a cluster: the file provider ([`config`]) fills the translator's object index
//! from YAML manifests and reads the node's settings (a `NodeConfig`); the status view
//! ([`status`]) shows what the translator concluded, as `kubectl get -o wide` would, or as
//! YAML/JSON. `docs/standalone.md` describes the file format and the output.
#![forbid(unsafe_code)]

pub mod config;
pub mod status;

pub use config::{load, ConfigError, LoadCache, LoadedConfig, NodeConfigSpec};
