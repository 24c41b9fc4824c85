//! TLS passthrough for Blixt: TLS listeners cannot be served by the XDP path because the
//! backend depends on the server name in the ClientHello, which arrives after the TCP
//! handshake. This crate is the node side of it:
//!
//! - [`client_hello`]: an incremental ClientHello parser of our own.
//! - [`routing`]: the translator's SNI tables ([`blixt_core::tls::TlsFrontend`]) compiled for
//!   lookup, and the weighted, per-connection-consistent backend choice.
#![forbid(unsafe_code)]

pub mod client_hello;
pub mod routing;

#[cfg(test)]
mod testutil;
