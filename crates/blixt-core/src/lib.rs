//! Blixt's domain core: the dataplane [`snapshot::Snapshot`] and the [`generation::Generation`]
//! a node applies, the weighted Maglev builder and the Gateway API [`translator`]. Pure code:
//! no Kubernetes client, no sockets, no BPF.
#![forbid(unsafe_code)]

pub mod generation;
pub mod maglev;
pub mod snapshot;
pub mod tls;
pub mod translator;
