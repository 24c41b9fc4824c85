//! The controller -> agent API of Blixt: protobuf messages and the gRPC `SnapshotService`
//! (generated from `proto/blixt/v1/snapshot.proto` into [`pb`]), and conversions between the
//! wire messages and [`blixt_core`]'s [`Generation`] (a [`pb::SnapshotUpdate`] is one
//! generation: its [`Snapshot`], [`TlsFrontend`]s and announced VIPs).
//!
//! Core to wire cannot fail ([`From`]); wire to core is [`TryFrom`] and names the field at
//! fault with its full path (`snapshot.frontends[2].backends[0].addr`), so a malformed message
//! becomes an `INVALID_ARGUMENT` status that says exactly what was wrong. These conversions
//! only check what the wire format cannot express (address lengths, port ranges, enum values,
//! missing messages); the dataplane rules (duplicates, families, weight ranges) stay in
//! [`Snapshot::validate`].

#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use blixt_core::generation::Generation;
use blixt_core::snapshot::{
    Backend, BackendAddr, BackendState, Frontend, FrontendKey, Protocol, Snapshot,
};
use blixt_core::tls::{SniRoute, TlsFrontend};

/// The generated protobuf messages, client and server of package `blixt.v1`.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]
pub mod pb {
    tonic::include_proto!("blixt.v1");
}

/// A wire message that cannot be turned into the domain model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ConversionError {
    /// Path of the offending field, e.g. `snapshot.tls_frontends[0].routes[1].backends[0].port`.
    pub field: String,
    pub problem: Problem,
}

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("missing")]
    Missing,
    #[error("{len} bytes, expected 4 (IPv4) or 16 (IPv6)")]
    AddressLength { len: usize },
    #[error("{value} is not a port (0..=65535)")]
    PortRange { value: u32 },
    #[error("unspecified (the zero value is never valid)")]
    Unspecified,
    #[error("unknown value {value}")]
    UnknownEnum { value: i32 },
}

impl ConversionError {
    fn new(field: impl Into<String>, problem: Problem) -> Self {
        ConversionError {
            field: field.into(),
            problem,
        }
    }
}

impl From<ConversionError> for tonic::Status {
    fn from(e: ConversionError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

/// Where a field sits in a message. Written out only for an error: converting a snapshot of
/// 10,000 backends used to format three paths per backend, most of the agent's decoding time.
#[derive(Debug, Clone, Copy)]
enum FieldPath<'a> {
    Root(&'a str),
    Field(&'a FieldPath<'a>, &'static str),
    Item(&'a FieldPath<'a>, &'static str, usize),
}

impl<'a> FieldPath<'a> {
    fn field(&'a self, name: &'static str) -> FieldPath<'a> {
        FieldPath::Field(self, name)
    }

    fn item(&'a self, list: &'static str, index: usize) -> FieldPath<'a> {
        FieldPath::Item(self, list, index)
    }
}

impl std::fmt::Display for FieldPath<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldPath::Root(root) => f.write_str(root),
            FieldPath::Field(FieldPath::Root(""), name) => f.write_str(name),
            FieldPath::Field(parent, name) => write!(f, "{parent}.{name}"),
            FieldPath::Item(parent, list, index) => {
                write!(f, "{}[{index}]", FieldPath::Field(parent, list))
            }
        }
    }
}

const NO_PATH: FieldPath<'static> = FieldPath::Root("");

/// An address in network order: 4 bytes for IPv4, 16 for IPv6.
pub fn ip_to_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn ip_from_bytes(bytes: &[u8], field: FieldPath<'_>) -> Result<IpAddr, ConversionError> {
    if let Ok(b) = <[u8; 4]>::try_from(bytes) {
        Ok(IpAddr::V4(Ipv4Addr::from(b)))
    } else if let Ok(b) = <[u8; 16]>::try_from(bytes) {
        // Kept as IPv6 even when IPv4-mapped: the sender chose the family.
        Ok(IpAddr::V6(Ipv6Addr::from(b)))
    } else {
        Err(ConversionError::new(
            field.to_string(),
            Problem::AddressLength { len: bytes.len() },
        ))
    }
}

fn port(value: u32, field: FieldPath<'_>) -> Result<u16, ConversionError> {
    u16::try_from(value)
        .map_err(|_| ConversionError::new(field.to_string(), Problem::PortRange { value }))
}

fn enum_value<T: TryFrom<i32>>(value: i32, field: FieldPath<'_>) -> Result<T, ConversionError> {
    T::try_from(value)
        .map_err(|_| ConversionError::new(field.to_string(), Problem::UnknownEnum { value }))
}

impl From<Protocol> for pb::Protocol {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Tcp => pb::Protocol::Tcp,
            Protocol::Udp => pb::Protocol::Udp,
        }
    }
}

fn protocol_from(value: i32, field: FieldPath<'_>) -> Result<Protocol, ConversionError> {
    match enum_value::<pb::Protocol>(value, field)? {
        pb::Protocol::Tcp => Ok(Protocol::Tcp),
        pb::Protocol::Udp => Ok(Protocol::Udp),
        pb::Protocol::Unspecified => Err(ConversionError::new(
            field.to_string(),
            Problem::Unspecified,
        )),
    }
}

impl From<BackendState> for pb::BackendState {
    fn from(s: BackendState) -> Self {
        match s {
            BackendState::Active => pb::BackendState::Active,
            BackendState::Terminating => pb::BackendState::Terminating,
        }
    }
}

fn backend_state_from(value: i32, field: FieldPath<'_>) -> Result<BackendState, ConversionError> {
    match enum_value::<pb::BackendState>(value, field)? {
        pb::BackendState::Active => Ok(BackendState::Active),
        pb::BackendState::Terminating => Ok(BackendState::Terminating),
        pb::BackendState::Unspecified => Err(ConversionError::new(
            field.to_string(),
            Problem::Unspecified,
        )),
    }
}

impl From<&Backend> for pb::Backend {
    fn from(b: &Backend) -> Self {
        pb::Backend {
            addr: ip_to_bytes(b.addr.addr),
            port: b.addr.port.into(),
            weight: b.weight,
            state: pb::BackendState::from(b.state).into(),
        }
    }
}

fn backend_from(b: &pb::Backend, path: FieldPath<'_>) -> Result<Backend, ConversionError> {
    Ok(Backend {
        addr: BackendAddr {
            addr: ip_from_bytes(&b.addr, path.field("addr"))?,
            port: port(b.port, path.field("port"))?,
        },
        weight: b.weight,
        state: backend_state_from(b.state, path.field("state"))?,
    })
}

fn backends_from(bs: &[pb::Backend], path: FieldPath<'_>) -> Result<Vec<Backend>, ConversionError> {
    bs.iter()
        .enumerate()
        .map(|(i, b)| backend_from(b, path.item("backends", i)))
        .collect()
}

impl TryFrom<&pb::Backend> for Backend {
    type Error = ConversionError;
    fn try_from(b: &pb::Backend) -> Result<Self, ConversionError> {
        backend_from(b, NO_PATH)
    }
}

impl From<&Frontend> for pb::Frontend {
    fn from(f: &Frontend) -> Self {
        pb::Frontend {
            name: f.name.clone(),
            vip: ip_to_bytes(f.key.vip),
            port: f.key.port.into(),
            protocol: pb::Protocol::from(f.key.protocol).into(),
            backends: f.backends.iter().map(pb::Backend::from).collect(),
            reject_weight: f.reject_weight,
        }
    }
}

fn frontend_from(f: &pb::Frontend, path: FieldPath<'_>) -> Result<Frontend, ConversionError> {
    Ok(Frontend {
        name: f.name.clone(),
        key: FrontendKey {
            vip: ip_from_bytes(&f.vip, path.field("vip"))?,
            port: port(f.port, path.field("port"))?,
            protocol: protocol_from(f.protocol, path.field("protocol"))?,
        },
        backends: backends_from(&f.backends, path)?,
        reject_weight: f.reject_weight,
    })
}

impl TryFrom<&pb::Frontend> for Frontend {
    type Error = ConversionError;
    fn try_from(f: &pb::Frontend) -> Result<Self, ConversionError> {
        frontend_from(f, NO_PATH)
    }
}

impl From<&SniRoute> for pb::SniRoute {
    fn from(r: &SniRoute) -> Self {
        pb::SniRoute {
            hostname: r.hostname.clone(),
            listener: r.listener.clone(),
            route: r.route.clone(),
            backends: r.backends.iter().map(pb::Backend::from).collect(),
            reject_weight: r.reject_weight,
        }
    }
}

fn sni_route_from(r: &pb::SniRoute, path: FieldPath<'_>) -> Result<SniRoute, ConversionError> {
    Ok(SniRoute {
        hostname: r.hostname.clone(),
        listener: r.listener.clone(),
        route: r.route.clone(),
        backends: backends_from(&r.backends, path)?,
        reject_weight: r.reject_weight,
    })
}

impl TryFrom<&pb::SniRoute> for SniRoute {
    type Error = ConversionError;
    fn try_from(r: &pb::SniRoute) -> Result<Self, ConversionError> {
        sni_route_from(r, NO_PATH)
    }
}

impl From<&TlsFrontend> for pb::TlsFrontend {
    fn from(t: &TlsFrontend) -> Self {
        pb::TlsFrontend {
            name: t.name.clone(),
            vip: ip_to_bytes(t.vip),
            port: t.port.into(),
            routes: t.routes.iter().map(pb::SniRoute::from).collect(),
        }
    }
}

fn tls_frontend_from(
    t: &pb::TlsFrontend,
    path: FieldPath<'_>,
) -> Result<TlsFrontend, ConversionError> {
    Ok(TlsFrontend {
        name: t.name.clone(),
        vip: ip_from_bytes(&t.vip, path.field("vip"))?,
        port: port(t.port, path.field("port"))?,
        routes: t
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| sni_route_from(r, path.item("routes", i)))
            .collect::<Result<_, _>>()?,
    })
}

impl TryFrom<&pb::TlsFrontend> for TlsFrontend {
    type Error = ConversionError;
    fn try_from(t: &pb::TlsFrontend) -> Result<Self, ConversionError> {
        tls_frontend_from(t, NO_PATH)
    }
}

impl pb::Snapshot {
    /// The wire form of a snapshot and its TLS frontends (the generation travels beside it,
    /// in [`pb::SnapshotUpdate`]).
    pub fn from_core(snapshot: &Snapshot, tls: &[TlsFrontend]) -> Self {
        pb::Snapshot {
            frontends: snapshot.frontends.iter().map(pb::Frontend::from).collect(),
            tls_frontends: tls.iter().map(pb::TlsFrontend::from).collect(),
        }
    }

    /// The domain form, with `generation` set on the [`Snapshot`]. Field paths in errors
    /// start with `prefix` (`"snapshot"` when called for a [`pb::SnapshotUpdate`]).
    pub fn to_core(
        &self,
        generation: u64,
        prefix: &str,
    ) -> Result<(Snapshot, Vec<TlsFrontend>), ConversionError> {
        let root = FieldPath::Root(prefix);
        let frontends = self
            .frontends
            .iter()
            .enumerate()
            .map(|(i, f)| frontend_from(f, root.item("frontends", i)))
            .collect::<Result<_, _>>()?;
        let tls = self
            .tls_frontends
            .iter()
            .enumerate()
            .map(|(i, t)| tls_frontend_from(t, root.item("tls_frontends", i)))
            .collect::<Result<_, _>>()?;
        Ok((
            Snapshot {
                generation,
                frontends,
            },
            tls,
        ))
    }
}

impl pb::SnapshotUpdate {
    /// The update carrying `snapshot` (its generation included) and the TLS frontends.
    pub fn from_core(snapshot: &Snapshot, tls: &[TlsFrontend]) -> Self {
        pb::SnapshotUpdate {
            generation: snapshot.generation,
            snapshot: Some(pb::Snapshot::from_core(snapshot, tls)),
            announce: None,
        }
    }
}

impl pb::Announce {
    /// The wire form of an announce set.
    pub fn from_core<'a>(vips: impl IntoIterator<Item = &'a IpAddr>) -> Self {
        pb::Announce {
            vips: vips.into_iter().map(|ip| ip_to_bytes(*ip)).collect(),
        }
    }
}

impl From<&Generation> for pb::SnapshotUpdate {
    fn from(g: &Generation) -> Self {
        pb::SnapshotUpdate {
            announce: g.announce.as_ref().map(pb::Announce::from_core),
            ..pb::SnapshotUpdate::from_core(&g.snapshot, &g.tls)
        }
    }
}

impl TryFrom<&pb::SnapshotUpdate> for Generation {
    type Error = ConversionError;
    fn try_from(u: &pb::SnapshotUpdate) -> Result<Self, ConversionError> {
        let snapshot = u
            .snapshot
            .as_ref()
            .ok_or_else(|| ConversionError::new("snapshot", Problem::Missing))?;
        let (snapshot, tls) = snapshot.to_core(u.generation, "snapshot")?;
        let announce = u
            .announce
            .as_ref()
            .map(|a| {
                a.vips
                    .iter()
                    .enumerate()
                    .map(|(i, v)| ip_from_bytes(v, FieldPath::Root("announce").item("vips", i)))
                    .collect::<Result<BTreeSet<_>, _>>()
            })
            .transpose()?;
        Ok(Generation {
            snapshot,
            tls,
            announce,
        })
    }
}

impl TryFrom<pb::SnapshotUpdate> for Generation {
    type Error = ConversionError;
    fn try_from(u: pb::SnapshotUpdate) -> Result<Self, ConversionError> {
        Generation::try_from(&u)
    }
}

#[cfg(test)]
mod tests;
