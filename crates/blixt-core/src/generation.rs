//! A [`Generation`]: everything a node applies at once. Every source of configuration produces
//! one (the standalone manifests, the controller's stream, a snapshot file) and the agent's
//! `Node` applies it whole: the XDP [`Snapshot`], the TLS passthrough SNI tables, and which
//! VIPs this node answers ARP/NDP for.
//!
//! The generation number is stored once, in [`Snapshot::generation`]: a snapshot file (the
//! JSON shape of [`Snapshot`], read by `blixt agent --snapshot`) carries it, and the agent's
//! reconciler reports the generation it applied from it. [`Generation::number`] reads it
//! there; nothing else holds a copy that could disagree.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::snapshot::Snapshot;
use crate::tls::TlsFrontend;

/// One generation of a node's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Generation {
    /// TCP and UDP frontends for the XDP program; its `generation` is this generation's number.
    pub snapshot: Snapshot,
    /// TLS passthrough listeners, served by the node's proxy.
    pub tls: Vec<TlsFrontend>,
    /// The VIPs to answer ARP/NDP for; `None`: every VIP of the snapshot and the TLS
    /// frontends. The controller publishes every VIP but those a load balancer announces
    /// (delegated Gateways); its stream narrows that to each agent's own share.
    pub announce: Option<BTreeSet<IpAddr>>,
}

impl Generation {
    /// A generation of `snapshot` alone: no TLS listener, every VIP announced.
    pub fn of(snapshot: Snapshot) -> Self {
        Generation {
            snapshot,
            ..Generation::default()
        }
    }

    /// The generation number (the snapshot's).
    pub fn number(&self) -> u64 {
        self.snapshot.generation
    }

    /// Every VIP of the snapshot's frontends and of the TLS frontends.
    pub fn vips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.snapshot
            .frontends
            .iter()
            .map(|f| f.key.vip)
            .chain(self.tls.iter().map(|t| t.vip))
    }

    /// The VIPs announced: [`Generation::announce`], or all of [`Generation::vips`].
    pub fn announced(&self) -> BTreeSet<IpAddr> {
        match &self.announce {
            Some(vips) => vips.clone(),
            None => self.vips().collect(),
        }
    }

    /// The VIPs of the TLS frontends (answered by ARP/NDP like the frontends', served by the
    /// proxy rather than the XDP program).
    pub fn proxied_vips(&self) -> BTreeSet<IpAddr> {
        self.tls.iter().map(|t| t.vip).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Frontend, FrontendKey, Protocol};

    #[test]
    fn announced_is_every_vip_unless_narrowed() {
        let frontend = Frontend {
            name: "ns/gw/tcp".into(),
            key: FrontendKey {
                vip: "192.0.2.1".parse().unwrap(),
                port: 80,
                protocol: Protocol::Tcp,
            },
            backends: vec![],
            reject_weight: 0,
        };
        let mut g = Generation::of(Snapshot {
            generation: 7,
            frontends: vec![frontend],
        });
        g.tls.push(TlsFrontend {
            name: "ns/gw/tls".into(),
            vip: "192.0.2.2".parse().unwrap(),
            port: 443,
            routes: vec![],
        });
        assert_eq!(g.number(), 7);
        let all: BTreeSet<IpAddr> = ["192.0.2.1", "192.0.2.2"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(g.announced(), all);
        assert_eq!(
            g.proxied_vips(),
            BTreeSet::from(["192.0.2.2".parse().unwrap()])
        );
        g.announce = Some(BTreeSet::new());
        assert!(g.announced().is_empty());
    }
}
