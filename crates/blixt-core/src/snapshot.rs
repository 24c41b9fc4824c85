//! The Snapshot: the whole desired dataplane state, produced by the translator (or written by
//! hand in tests) and applied atomically by the agent.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Layer-4 protocol of a frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// IANA protocol number, as in the IP header.
    pub fn ip_proto(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

/// What identifies a frontend in the dataplane: packets to `vip:port` over `protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FrontendKey {
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for FrontendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.vip {
            IpAddr::V4(a) => write!(f, "{}/{a}:{}", self.protocol, self.port),
            IpAddr::V6(a) => write!(f, "{}/[{a}]:{}", self.protocol, self.port),
        }
    }
}

/// Whether a backend takes new flows.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// Takes new flows in proportion to its weight.
    #[default]
    Active,
    /// Keeps its established flows, gets no new ones (EndpointSlice serving+terminating).
    Terminating,
}

/// Address and port of one backend endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BackendAddr {
    pub addr: IpAddr,
    pub port: u16,
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.port),
        }
    }
}

/// One backend of a frontend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    #[serde(flatten)]
    pub addr: BackendAddr,
    /// Relative share of new flows; 0 means no new flows.
    pub weight: u32,
    #[serde(default)]
    pub state: BackendState,
}

/// One load-balanced service point: a VIP, port and protocol with its weighted backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frontend {
    /// Human name used in errors, metrics and `blixt inspect`, e.g. `default/gw/tcp-80`.
    pub name: String,
    #[serde(flatten)]
    pub key: FrontendKey,
    pub backends: Vec<Backend>,
    /// Weight share of new flows that must be rejected (TCP RST, UDP drop): the summed weight
    /// of invalid backendRefs (Gateway API). With no active weight at all, every new flow is
    /// rejected whatever this value is.
    #[serde(default)]
    pub reject_weight: u32,
}

impl Frontend {
    /// Backends that take new flows: active with a non-zero weight.
    pub fn eligible_backends(&self) -> impl Iterator<Item = &Backend> {
        self.backends
            .iter()
            .filter(|b| b.state == BackendState::Active && b.weight > 0)
    }
}

/// The whole desired dataplane state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Monotonic generation; the agent reports which one it has applied.
    pub generation: u64,
    pub frontends: Vec<Frontend>,
}

/// A snapshot that cannot be applied, naming the frontend and the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("frontend {name:?} ({key}): duplicate of frontend {other:?}")]
    DuplicateFrontend {
        name: String,
        other: String,
        key: FrontendKey,
    },
    #[error("frontend {name:?} ({key}): backends[{index}] {addr} is listed twice")]
    DuplicateBackend {
        name: String,
        key: FrontendKey,
        index: usize,
        addr: BackendAddr,
    },
    #[error("frontend {name:?} ({key}): backends[{index}].addr {addr} is not the frontend's address family")]
    FamilyMismatch {
        name: String,
        key: FrontendKey,
        index: usize,
        addr: BackendAddr,
    },
    #[error("frontend {name:?} ({key}): {field} is {value}, out of range ({range})")]
    OutOfRange {
        name: String,
        key: FrontendKey,
        field: String,
        value: u64,
        range: &'static str,
    },
    #[error("frontend {name:?}: {field}")]
    Invalid { name: String, field: String },
}

/// Largest weight accepted, as in Gateway API (`weight` is at most 1,000,000).
pub const MAX_WEIGHT: u32 = 1_000_000;

impl Snapshot {
    /// Checks what can be checked without knowing the dataplane's sizes: unique frontends,
    /// unique backends per frontend, address families, ports and weights in range.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        let mut seen = std::collections::HashMap::new();
        for fe in &self.frontends {
            if let Some(other) = seen.insert(fe.key, &fe.name) {
                return Err(SnapshotError::DuplicateFrontend {
                    name: fe.name.clone(),
                    other: other.clone(),
                    key: fe.key,
                });
            }
            let out_of_range = |field: String, value: u64, range| SnapshotError::OutOfRange {
                name: fe.name.clone(),
                key: fe.key,
                field,
                value,
                range,
            };
            if fe.name.is_empty() {
                return Err(SnapshotError::Invalid {
                    name: fe.name.clone(),
                    field: format!("name of frontend {} is empty", fe.key),
                });
            }
            if fe.key.port == 0 {
                return Err(out_of_range("port".into(), 0, "1..=65535"));
            }
            if fe.reject_weight > MAX_WEIGHT {
                return Err(out_of_range(
                    "reject_weight".into(),
                    fe.reject_weight.into(),
                    "0..=1000000",
                ));
            }
            let mut addrs = BTreeSet::new();
            for (index, be) in fe.backends.iter().enumerate() {
                if be.addr.addr.is_ipv4() != fe.key.vip.is_ipv4() {
                    return Err(SnapshotError::FamilyMismatch {
                        name: fe.name.clone(),
                        key: fe.key,
                        index,
                        addr: be.addr,
                    });
                }
                if be.addr.port == 0 {
                    return Err(out_of_range(
                        format!("backends[{index}].port"),
                        0,
                        "1..=65535",
                    ));
                }
                if be.weight > MAX_WEIGHT {
                    return Err(out_of_range(
                        format!("backends[{index}].weight"),
                        be.weight.into(),
                        "0..=1000000",
                    ));
                }
                if !addrs.insert(be.addr) {
                    return Err(SnapshotError::DuplicateBackend {
                        name: fe.name.clone(),
                        key: fe.key,
                        index,
                        addr: be.addr,
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fe(name: &str, vip: &str, port: u16) -> Frontend {
        Frontend {
            name: name.into(),
            key: FrontendKey {
                vip: vip.parse().unwrap(),
                port,
                protocol: Protocol::Tcp,
            },
            backends: vec![],
            reject_weight: 0,
        }
    }

    fn be(addr: &str, port: u16, weight: u32) -> Backend {
        Backend {
            addr: BackendAddr {
                addr: addr.parse().unwrap(),
                port,
            },
            weight,
            state: BackendState::Active,
        }
    }

    #[test]
    fn duplicate_frontend_names_both() {
        let s = Snapshot {
            generation: 1,
            frontends: vec![fe("a", "10.0.0.1", 80), fe("b", "10.0.0.1", 80)],
        };
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("\"b\"") && err.contains("\"a\""), "{err}");
    }

    #[test]
    fn family_mismatch_names_backend_index() {
        let mut f = fe("a", "10.0.0.1", 80);
        f.backends = vec![be("10.0.1.1", 8080, 1), be("fd00::1", 8080, 1)];
        let err = Snapshot {
            generation: 1,
            frontends: vec![f],
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("backends[1]"), "{err}");
    }

    #[test]
    fn weight_out_of_range() {
        let mut f = fe("a", "10.0.0.1", 80);
        f.backends = vec![be("10.0.1.1", 8080, MAX_WEIGHT + 1)];
        let err = Snapshot {
            generation: 1,
            frontends: vec![f],
        }
        .validate()
        .unwrap_err();
        assert!(
            matches!(err, SnapshotError::OutOfRange { ref field, .. } if field == "backends[0].weight")
        );
    }

    #[test]
    fn eligible_skips_weight_zero_and_terminating() {
        let mut f = fe("a", "10.0.0.1", 80);
        f.backends = vec![
            be("10.0.1.1", 1, 1),
            be("10.0.1.2", 1, 0),
            be("10.0.1.3", 1, 5),
        ];
        f.backends[2].state = BackendState::Terminating;
        let e: Vec<_> = f.eligible_backends().collect();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].addr.port, 1);
    }

    #[test]
    fn serde_roundtrip() {
        let mut f = fe("a", "fd00::10", 53);
        f.key.protocol = Protocol::Udp;
        f.backends = vec![be("fd00::1", 5353, 2)];
        let s = Snapshot {
            generation: 7,
            frontends: vec![f],
        };
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Snapshot>(&j).unwrap(), s);
    }
}
