//! TLS passthrough for Blixt: TLS listeners cannot be served by the XDP path because the
//! backend depends on the server name in the ClientHello, which arrives after the TCP
//! handshake. This crate is the node side of it:
//!
//! - [`client_hello`]: an incremental ClientHello parser of our own.
//! - [`routing`]: the translator's SNI tables ([`blixt_core::tls::TlsFrontend`]) compiled for
//!   lookup, and the weighted, per-connection-consistent backend choice.
//! - [`proxy`]: the tokio proxy with its limits, and [`stats`] for its counters.
//! - [`steer`]: the BPF sk_lookup program that hands connections for TLS VIPs to the proxy
//!   without the VIP being bound; [`service`] ties proxy, sockets and steering together
//!   for the agent.
// `unsafe` only in `sockopt` (setsockopt for options std and tokio do not offer).
#![deny(unsafe_code)]

pub mod client_hello;
pub mod proxy;
pub mod routing;
pub mod service;
mod sockopt;
pub mod stats;
pub mod steer;

pub use proxy::{ProxyConfig, TlsProxy};
pub use routing::{RejectReason, SniTable};
pub use service::{Steering, TlsPassthrough};
pub use stats::ProxyStats;

#[cfg(test)]
mod testutil;
