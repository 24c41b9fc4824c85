//! Controller -> agent snapshot distribution over gRPC (`blixt.v1.SnapshotService`).
//!
//! - [`SnapshotServer`] (controller): holds the current snapshot in a `watch` channel; every
//!   subscriber gets it on connect and every newer generation after, skipping to the newest
//!   when slow; records acks per node and answers [`SnapshotServer::programmed`].
//! - [`SnapshotClient`] (agent): subscribes, applies, acks, reconnects with backoff, keeps the
//!   last applied snapshot meanwhile.
//! - [`auth`]: nobody gets anything unauthenticated: client certificates
//!   ([`MtlsAuthenticator`]) or bearer tokens ([`BearerAuthenticator`] with a pluggable
//!   [`TokenVerifier`]), then an [`AccessPolicy`].
//! - [`owners`]: one agent announces each VIP (ARP/NDP), picked by rendezvous hashing among
//!   the subscribed agents; each agent's stream says which VIPs are its own.
//!
//! See `docs/snapshot-stream.md` for the protocol and the operational picture.

#![forbid(unsafe_code)]

pub mod auth;
mod client;
pub mod owners;
mod server;
pub mod tls;

pub use auth::{
    AccessPolicy, AuthMethod, AuthRequest, Authenticator, BearerAuthenticator, CachingVerifier,
    FirstPresented, Identity, MtlsAuthenticator, StaticTokens, TokenError, TokenVerifier,
};
/// What [`SnapshotClient::run`] hands the agent and [`SnapshotServer::publish_generation`]
/// takes: snapshot (with its generation number), TLS frontends and the VIPs announced.
pub use blixt_core::generation::Generation;
pub use client::{Backoff, ClientConfig, ClientError, ClientStatus, SnapshotClient, Token};
pub use server::{
    AckRecord, Keepalive, NodeStatus, ProgrammedState, PublishError, ServeError, SnapshotServer,
    SnapshotService,
};
pub use tls::{ClientTls, Pem, ServerTls, TlsError};
