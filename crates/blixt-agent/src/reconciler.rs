//! Applies whole dataplane Snapshots to the BPF maps.
//!
//! Everything that can fail for a reason in the snapshot (validation, capacity, Maglev) is
//! decided first, without touching a map; only then are maps written, in an order that keeps
//! every packet consistent: new backend entries, then each changed frontend's new Maglev table
//! into a free ring, then one map update per frontend to flip it to that ring, and only after
//! the flip the release of what the old state used. A refused snapshot leaves the maps serving
//! the previous one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use aya::maps::MapError;
use blixt_bpf::shared::{
    addr_bytes, addr_from, family_of, BackendValue, Config, Counters, CtEntry, FlowKey,
    FrontendKey as BpfFrontendKey, FrontendValue, VipKey, BE_F_ACTIVE, BE_F_TERMINATING,
    CT_CLOSING, CT_DIR_FORWARD, CT_ESTABLISHED, FE_F_ALL_REJECT, SLOT_REJECT, VIP_F_ANNOUNCE,
};
use blixt_bpf::Dataplane;
use blixt_core::maglev::{self, Slot};
use blixt_core::snapshot::{
    Backend, BackendAddr, BackendState, Frontend, FrontendKey, Protocol, Snapshot, SnapshotError,
};

/// Node-level settings of the dataplane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Source address towards IPv4 backends (full-NAT); IPv4 frontends need it.
    pub snat_v4: Option<IpAddr>,
    /// Source address towards IPv6 backends.
    pub snat_v6: Option<IpAddr>,
    /// Source ports the dataplane allocates on the node address, inclusive. Keep it outside the
    /// kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768-60999 by default) so that
    /// the node's own connections to a backend never share a tuple with a NATed flow.
    pub port_min: u16,
    pub port_max: u16,
    pub tcp_syn_timeout_s: u32,
    pub tcp_established_timeout_s: u32,
    /// How long a closed (FIN or RST) TCP flow keeps its entries, and so its source port for
    /// its own client tuple. At least the backends' TIME_WAIT (60 s on Linux; netfilter keeps
    /// TIME_WAIT 120 s): a port freed sooner goes to another client's connection while the
    /// backend still holds the 4-tuple, and that connection's SYN carries a timestamp of
    /// another clock (Linux offsets timestamps per connection), which PAWS refuses half the
    /// time: the client waits for a SYN retransmission (docs/reliability.md, "Sustained load").
    pub tcp_closing_timeout_s: u32,
    pub udp_timeout_s: u32,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            snat_v4: None,
            snat_v6: None,
            port_min: 1024,
            port_max: 32767,
            tcp_syn_timeout_s: 60,
            tcp_established_timeout_s: 6 * 3600,
            tcp_closing_timeout_s: 120,
            udp_timeout_s: 60,
        }
    }
}

impl NodeConfig {
    fn to_bpf(&self, ring_size: u32) -> Config {
        Config {
            snat_v4: self.snat_v4.map(addr_bytes).unwrap_or_default(),
            snat_v6: self.snat_v6.map(addr_bytes).unwrap_or_default(),
            port_min: self.port_min,
            port_max: self.port_max,
            flags: 0,
            tcp_syn_timeout_s: self.tcp_syn_timeout_s,
            tcp_established_timeout_s: self.tcp_established_timeout_s,
            tcp_closing_timeout_s: self.tcp_closing_timeout_s,
            udp_timeout_s: self.udp_timeout_s,
            ring_size,
        }
    }

    fn validate(&self) -> Result<(), ApplyError> {
        if self.port_min == 0 || self.port_min > self.port_max {
            return Err(ApplyError::Node(format!(
                "port range {}-{} is empty or starts at 0",
                self.port_min, self.port_max
            )));
        }
        if self.snat_v4.is_some_and(|a| !a.is_ipv4()) {
            return Err(ApplyError::Node("snat_v4 is not an IPv4 address".into()));
        }
        if self.snat_v6.is_some_and(|a| !a.is_ipv6()) {
            return Err(ApplyError::Node("snat_v6 is not an IPv6 address".into()));
        }
        Ok(())
    }
}

/// Why a snapshot was refused (nothing applied) or failed while applying.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("invalid snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error("frontend {name:?} ({key}): {message}")]
    Frontend {
        name: String,
        key: FrontendKey,
        message: String,
    },
    #[error("node config: {0}")]
    Node(String),
    #[error("writing BPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
}

fn map_err(map: &'static str) -> impl Fn(MapError) -> ApplyError {
    move |source| ApplyError::Map { map, source }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct AppliedBackend {
    id: u32,
    state: BackendState,
}

#[derive(Debug, Clone)]
struct AppliedFrontend {
    name: String,
    id: u32,
    ring: u32,
    flags: u32,
    backends: BTreeMap<BackendAddr, AppliedBackend>,
    /// What the ring was built from (`None`: re-adopted from pins, unknown). A frontend whose
    /// input is unchanged keeps its ring without a Maglev build: otherwise one changed route
    /// among 10,000 frontends would cost 10,000 builds of 16381 slots. The ring's content
    /// itself is not copied here (64 KiB per frontend); it is read from the mmapped ring.
    maglev_input: Option<MaglevInput>,
}

/// Everything a frontend's Maglev table depends on besides the ring size (fixed per
/// dataplane) and the backend ids (stable for backends already applied).
#[derive(Debug, Clone, PartialEq, Eq)]
struct MaglevInput {
    backends: Vec<Backend>,
    reject_weight: u32,
}

impl MaglevInput {
    fn of(fe: &Frontend) -> Self {
        MaglevInput {
            backends: fe.backends.clone(),
            reject_weight: fe.reject_weight,
        }
    }

    fn matches(&self, fe: &Frontend) -> bool {
        self.backends == fe.backends && self.reject_weight == fe.reject_weight
    }
}

/// What an apply changed, for logs and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub generation: u64,
    pub frontends_added: usize,
    pub frontends_changed: usize,
    pub frontends_removed: usize,
    pub backends_added: usize,
    pub backends_removed: usize,
    /// Maglev tables computed (frontends whose backends or weights changed, or new ones).
    pub tables_built: usize,
    /// Rings written (tables that differ from the ring in service).
    pub rings_written: usize,
    /// VIPs this node started announcing (ARP/NDP) with this apply: neighbours may still map
    /// them to another node, so the agent sends gratuitous ARP / unsolicited NA for them.
    pub announced: Vec<IpAddr>,
    /// Dynamic neighbour entries deleted for backend addresses new in this generation (see
    /// [`crate::neighbours`]).
    pub neighbours_deleted: usize,
}

/// A frontend as applied, for `blixt inspect`.
#[derive(Debug, Clone)]
pub struct FrontendView {
    pub name: String,
    pub key: FrontendKey,
    pub id: u32,
    pub ring: u32,
    pub all_reject: bool,
    /// (address, backend id, state, slots in the ring)
    pub backends: Vec<(BackendAddr, u32, BackendState, u32)>,
    pub reject_slots: u32,
}

/// Result of one conntrack sweep.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub scanned: usize,
    pub expired: usize,
}

/// Owns the dataplane and the knowledge of what is applied to it.
#[derive(Debug)]
pub struct Reconciler {
    dp: Dataplane,
    node: Option<NodeConfig>,
    frontends: BTreeMap<FrontendKey, AppliedFrontend>,
    /// Current generation of every backend id (bumped when an id is released).
    backend_gen: Vec<u32>,
    free_backend_ids: BTreeSet<u32>,
    free_frontend_ids: BTreeSet<u32>,
    free_rings: BTreeSet<u32>,
    generation: Option<u64>,
    /// The VIPs this node answers ARP/NDP for; `None`: all of them (see
    /// [`Reconciler::set_announced`]).
    announced: Option<BTreeSet<IpAddr>>,
    /// VIPs served on this node outside the XDP frontends (see [`Reconciler::set_proxied_vips`]).
    proxied_vips: BTreeSet<IpAddr>,
}

fn to_bpf_key(k: &FrontendKey) -> BpfFrontendKey {
    BpfFrontendKey {
        addr: addr_bytes(k.vip),
        port: k.port.to_be(),
        proto: k.protocol.ip_proto(),
        family: family_of(k.vip),
    }
}

fn from_bpf_key(k: &BpfFrontendKey) -> Option<FrontendKey> {
    let protocol = match k.proto {
        6 => Protocol::Tcp,
        17 => Protocol::Udp,
        _ => return None,
    };
    Some(FrontendKey {
        vip: addr_from(&k.addr, k.family),
        port: u16::from_be(k.port),
        protocol,
    })
}

fn vip_key(addr: IpAddr) -> VipKey {
    VipKey {
        addr: addr_bytes(addr),
        family: family_of(addr),
        pad: [0; 3],
    }
}

/// CLOCK_MONOTONIC in ns: the clock behind bpf_ktime_get_coarse_ns().
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[derive(Debug, Clone, Copy)]
enum Stats {
    Backend,
    Frontend,
}

struct PlannedFrontend<'a> {
    fe: &'a Frontend,
    /// Backend ids by index into fe.backends (None: terminating and unknown, needs no id).
    ids: Vec<Option<u32>>,
    /// The new Maglev table; `None` when the frontend's input is unchanged (same table).
    table: Option<Vec<u32>>,
    flags: u32,
}

impl Reconciler {
    /// Takes over a freshly loaded (or re-adopted) dataplane. State already in the maps (a
    /// restarted agent on pinned maps) is read back, so the next apply only changes what
    /// differs and established flows keep their backends.
    pub fn new(dp: Dataplane) -> Result<Self, ApplyError> {
        let opts = dp.options.clone();
        let mut backend_gen = vec![0u32; opts.max_backends as usize];
        let mut by_frontend: BTreeMap<u32, Vec<(u32, BackendValue)>> = BTreeMap::new();
        for id in 0..opts.max_backends {
            let be = dp
                .maps
                .backends
                .get(&id, 0)
                .map_err(map_err("blixt_backends"))?;
            backend_gen[id as usize] = be.gen;
            if be.flags & BE_F_ACTIVE != 0 {
                by_frontend
                    .entry(be.frontend_id)
                    .or_default()
                    .push((id, be));
            }
        }
        let mut frontends = BTreeMap::new();
        let pinned: Vec<(BpfFrontendKey, FrontendValue)> = dp
            .maps
            .frontends
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err("blixt_frontends"))?;
        for (k, v) in pinned {
            let Some(key) = from_bpf_key(&k) else {
                continue;
            };
            let backends = by_frontend
                .remove(&v.id)
                .unwrap_or_default()
                .into_iter()
                .map(|(id, be)| {
                    let state = if be.flags & BE_F_TERMINATING != 0 {
                        BackendState::Terminating
                    } else {
                        BackendState::Active
                    };
                    (
                        BackendAddr {
                            addr: addr_from(&be.addr, be.family),
                            port: u16::from_be(be.port),
                        },
                        AppliedBackend { id, state },
                    )
                })
                .collect();
            frontends.insert(
                key,
                AppliedFrontend {
                    name: key.to_string(),
                    id: v.id,
                    ring: v.ring,
                    flags: v.flags,
                    backends,
                    maglev_input: None,
                },
            );
        }
        let used_ids: BTreeSet<u32> = frontends
            .values()
            .flat_map(|f| f.backends.values().map(|b| b.id))
            .collect();
        let used_fe: BTreeSet<u32> = frontends.values().map(|f| f.id).collect();
        let used_rings: BTreeSet<u32> = frontends.values().map(|f| f.ring).collect();
        let mut r = Reconciler {
            free_backend_ids: (0..opts.max_backends)
                .filter(|i| !used_ids.contains(i))
                .collect(),
            free_frontend_ids: (0..opts.max_frontends)
                .filter(|i| !used_fe.contains(i))
                .collect(),
            free_rings: (0..opts.rings())
                .filter(|i| !used_rings.contains(i))
                .collect(),
            dp,
            node: None,
            frontends,
            backend_gen,
            generation: None,
            announced: None,
            proxied_vips: BTreeSet::new(),
        };
        // Orphans (ACTIVE backends of no frontend, e.g. a crash between writes) are released.
        for (_, list) in by_frontend {
            for (id, _) in list {
                r.release_backend(id)?;
            }
        }
        Ok(r)
    }

    /// Frontends restored from pinned maps by [`Reconciler::new`] (0 on a fresh dataplane).
    pub fn adopted_frontends(&self) -> usize {
        self.frontends.len()
    }

    pub fn generation(&self) -> Option<u64> {
        self.generation
    }

    pub fn dataplane(&mut self) -> &mut Dataplane {
        &mut self.dp
    }

    /// The dataplane, read-only (capabilities, plan, attach modes).
    pub fn dataplane_ref(&self) -> &Dataplane {
        &self.dp
    }

    /// Writes the node settings (SNAT addresses, port range, timeouts).
    pub fn set_node_config(&mut self, node: &NodeConfig) -> Result<(), ApplyError> {
        node.validate()?;
        if self.node.as_ref() != Some(node) {
            self.dp
                .maps
                .config
                .set(0, node.to_bpf(self.dp.options.ring_size), 0)
                .map_err(map_err("blixt_config"))?;
            self.node = Some(node.clone());
        }
        Ok(())
    }

    /// Decides everything about `snap` without touching a map.
    fn plan<'a>(&self, snap: &'a Snapshot) -> Result<Vec<PlannedFrontend<'a>>, ApplyError> {
        snap.validate()?;
        let opts = &self.dp.options;
        let node = self.node.clone().unwrap_or_default();
        let mut planned = Vec::with_capacity(snap.frontends.len());
        // ids stay taken until after the flip, so new ones come from what is free now
        let mut free_ids = self.free_backend_ids.iter().copied();
        let mut new_frontends = 0usize;
        for (n, fe) in snap.frontends.iter().enumerate() {
            let err = |message: String| ApplyError::Frontend {
                name: fe.name.clone(),
                key: fe.key,
                message,
            };
            if n as u32 >= opts.max_frontends {
                return Err(err(format!(
                    "the snapshot has {} frontends, more than max_frontends = {}",
                    snap.frontends.len(),
                    opts.max_frontends
                )));
            }
            let missing_snat = match fe.key.vip {
                IpAddr::V4(_) => node.snat_v4.is_none(),
                IpAddr::V6(_) => node.snat_v6.is_none(),
            };
            if missing_snat && fe.eligible_backends().next().is_some() {
                return Err(err(format!(
                    "no node address for IPv{} full-NAT (node config snat_v{})",
                    if fe.key.vip.is_ipv4() { 4 } else { 6 },
                    if fe.key.vip.is_ipv4() { 4 } else { 6 },
                )));
            }
            let old = self.frontends.get(&fe.key);
            if old.is_none() {
                new_frontends += 1;
            }
            let mut ids = Vec::with_capacity(fe.backends.len());
            for (i, be) in fe.backends.iter().enumerate() {
                let known = old.and_then(|o| o.backends.get(&be.addr)).map(|b| b.id);
                let id = match (known, be.state) {
                    (Some(id), _) => Some(id),
                    (None, BackendState::Terminating) => None,
                    (None, BackendState::Active) => Some(free_ids.next().ok_or_else(|| {
                        err(format!(
                            "backends[{i}] {}: no free backend id (max_backends = {})",
                            be.addr, opts.max_backends
                        ))
                    })?),
                };
                ids.push(id);
            }
            // Same input, same backend ids (known backends keep theirs): same table.
            let unchanged = old
                .and_then(|o| o.maglev_input.as_ref())
                .is_some_and(|m| m.matches(fe));
            let table = if unchanged {
                None
            } else {
                let slots = maglev::build(fe, opts.ring_size).map_err(|e| err(e.to_string()))?;
                Some(
                    slots
                        .iter()
                        .map(|s| match s {
                            Slot::Backend(i) => ids[*i as usize].unwrap_or(SLOT_REJECT),
                            Slot::Reject => SLOT_REJECT,
                        })
                        .collect::<Vec<u32>>(),
                )
            };
            let flags = if fe.eligible_backends().next().is_none() {
                FE_F_ALL_REJECT
            } else {
                0
            };
            planned.push(PlannedFrontend {
                fe,
                ids,
                table,
                flags,
            });
        }
        let free_fe = self
            .free_frontend_ids
            .len()
            .saturating_add(self.frontends.len());
        if new_frontends > self.free_frontend_ids.len() {
            // Only reachable when removed frontends' ids are still held: they are released
            // after the flip, so the new ones must fit beside them.
            let fe = planned.last().expect("non-empty").fe;
            return Err(ApplyError::Frontend {
                name: fe.name.clone(),
                key: fe.key,
                message: format!(
                    "{new_frontends} new frontends do not fit beside the {} in service (max_frontends = {free_fe})",
                    self.frontends.len()
                ),
            });
        }
        Ok(planned)
    }

    /// Which VIPs this node answers ARP/NDP for, now and in later applies: `None` every VIP
    /// in service (standalone, or a controller that does not assign owners), `Some(vips)`
    /// only those (the controller's share for this node; every VIP's traffic is still
    /// load-balanced when it arrives here). Returns the VIPs in service that this started
    /// announcing.
    pub fn set_announced(
        &mut self,
        vips: Option<BTreeSet<IpAddr>>,
    ) -> Result<Vec<IpAddr>, ApplyError> {
        self.announced = vips;
        self.sync_vips()
    }

    /// Sets the VIPs this node serves outside the XDP frontends: those of TLS passthrough
    /// listeners, which blixt-tls proxies. They get ARP/NDP answers like the frontends' VIPs
    /// (and, like them, only when this node announces them): the kernel answers ARP for an
    /// IPv4 address it has a local route for, but never a neighbour solicitation for an IPv6
    /// address it has not configured, so without this an on-link IPv6 VIP with only TLS
    /// listeners is unreachable. Returns the VIPs this started announcing.
    pub fn set_proxied_vips(&mut self, vips: BTreeSet<IpAddr>) -> Result<Vec<IpAddr>, ApplyError> {
        self.proxied_vips = vips;
        self.sync_vips()
    }

    /// Makes `blixt_vips` hold exactly the VIPs in service (frontends' and proxied ones),
    /// flagged for announcement when this node announces them; returns the ones that were not
    /// announced before.
    fn sync_vips(&mut self) -> Result<Vec<IpAddr>, ApplyError> {
        let in_use: BTreeSet<IpAddr> = self
            .frontends
            .keys()
            .map(|k| k.vip)
            .chain(self.proxied_vips.iter().copied())
            .collect();
        let mut before = BTreeMap::new();
        for entry in self.dp.maps.vips.iter() {
            let (k, flags) = entry.map_err(map_err("blixt_vips"))?;
            before.insert(addr_from(&k.addr, k.family), (k, flags));
        }
        for (vip, (k, _)) in &before {
            if !in_use.contains(vip) {
                match self.dp.maps.vips.remove(k) {
                    Ok(()) | Err(MapError::KeyNotFound) => {}
                    Err(e) => return Err(map_err("blixt_vips")(e)),
                }
            }
        }
        let mut started = Vec::new();
        for vip in in_use {
            let announce = self.announced.as_ref().is_none_or(|a| a.contains(&vip));
            let flags = if announce { VIP_F_ANNOUNCE } else { 0 };
            let old = before.get(&vip).map(|(_, f)| *f);
            if old != Some(flags) {
                self.dp
                    .maps
                    .vips
                    .insert(vip_key(vip), flags, 0)
                    .map_err(map_err("blixt_vips"))?;
            }
            if announce && old.is_none_or(|f| f & VIP_F_ANNOUNCE == 0) {
                started.push(vip);
            }
        }
        Ok(started)
    }

    /// Applies a whole snapshot. On `Err` from planning (a bad snapshot), nothing was written.
    pub fn apply(&mut self, snap: &Snapshot) -> Result<ApplyReport, ApplyError> {
        let planned = self.plan(snap)?;
        let mut report = ApplyReport {
            generation: snap.generation,
            ..Default::default()
        };
        // Before any packet can go to them: addresses that were no backend in the applied
        // generation lose their learnt neighbour entries, so that an address reused by a new
        // MAC is resolved afresh instead of served from a stale entry (never an error).
        let before: BTreeSet<IpAddr> = self
            .frontends
            .values()
            .flat_map(|f| f.backends.keys().map(|b| b.addr))
            .collect();
        let fresh: BTreeSet<IpAddr> = planned
            .iter()
            .flat_map(|p| p.fe.backends.iter().zip(&p.ids))
            .filter(|(_, id)| id.is_some())
            .map(|(be, _)| be.addr.addr)
            .filter(|a| !before.contains(a))
            .collect();
        report.neighbours_deleted = crate::neighbours::forget(&fresh);
        let mut to_release: Vec<u32> = Vec::new();
        let mut rings_to_free: Vec<u32> = Vec::new();
        let wanted: BTreeSet<FrontendKey> = snap.frontends.iter().map(|f| f.key).collect();

        for p in planned {
            let fe = p.fe;
            let old = self.frontends.remove(&fe.key);
            let (id, ring) = match &old {
                Some(o) => (o.id, o.ring),
                None => {
                    let id = self.free_frontend_ids.pop_first().expect("checked by plan");
                    self.zero_stats(Stats::Frontend, id)?;
                    (id, u32::MAX)
                }
            };
            // 1. backend entries for new ids and state changes of known ones
            let mut backends = BTreeMap::new();
            for (be, be_id) in fe.backends.iter().zip(&p.ids) {
                let Some(be_id) = *be_id else { continue };
                let known = old.as_ref().and_then(|o| o.backends.get(&be.addr));
                if known.is_none() {
                    self.free_backend_ids.remove(&be_id);
                    report.backends_added += 1;
                    self.zero_stats(Stats::Backend, be_id)?;
                }
                if known.map(|o| o.state) != Some(be.state) {
                    let value = BackendValue {
                        addr: addr_bytes(be.addr.addr),
                        port: be.addr.port.to_be(),
                        family: family_of(be.addr.addr),
                        flags: BE_F_ACTIVE
                            | if be.state == BackendState::Terminating {
                                BE_F_TERMINATING
                            } else {
                                0
                            },
                        gen: self.backend_gen[be_id as usize],
                        frontend_id: id,
                    };
                    self.dp
                        .maps
                        .backends
                        .set(be_id, value, 0)
                        .map_err(map_err("blixt_backends"))?;
                }
                backends.insert(
                    be.addr,
                    AppliedBackend {
                        id: be_id,
                        state: be.state,
                    },
                );
            }

            // 2. table into a free ring, then the flip
            if p.table.is_some() {
                report.tables_built += 1;
            }
            let new_table = match (&p.table, &old) {
                (None, _) => None,
                (Some(t), Some(o)) if self.dp.maps.rings.read(o.ring) == t.as_slice() => None,
                (Some(t), _) => Some(t),
            };
            let table_changed = new_table.is_some();
            let flags_changed = old.as_ref().is_none_or(|o| o.flags != p.flags);
            let mut new_ring = ring;
            if let Some(t) = new_table {
                new_ring = self.free_rings.pop_first().expect("two rings per frontend");
                self.dp.maps.rings.write(new_ring, t);
                report.rings_written += 1;
            }
            if table_changed || flags_changed {
                let value = FrontendValue {
                    id,
                    ring: new_ring,
                    flags: p.flags,
                    pad: 0,
                };
                self.dp
                    .maps
                    .frontends
                    .insert(to_bpf_key(&fe.key), value, 0)
                    .map_err(map_err("blixt_frontends"))?;
            }
            if let Some(o) = &old {
                if new_ring != ring {
                    rings_to_free.push(ring);
                }
                if table_changed || flags_changed || o.backends != backends {
                    report.frontends_changed += 1;
                }
                for (addr, b) in &o.backends {
                    if !backends.contains_key(addr) {
                        to_release.push(b.id);
                    }
                }
            } else {
                report.frontends_added += 1;
            }
            self.frontends.insert(
                fe.key,
                AppliedFrontend {
                    name: fe.name.clone(),
                    id,
                    ring: new_ring,
                    flags: p.flags,
                    backends,
                    maglev_input: Some(MaglevInput::of(fe)),
                },
            );
        }

        // 3. frontends that left
        let gone: Vec<FrontendKey> = self
            .frontends
            .keys()
            .filter(|k| !wanted.contains(k))
            .copied()
            .collect();
        for key in gone {
            let o = self.frontends.remove(&key).expect("listed");
            match self.dp.maps.frontends.remove(&to_bpf_key(&key)) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err("blixt_frontends")(e)),
            }
            to_release.extend(o.backends.values().map(|b| b.id));
            rings_to_free.push(o.ring);
            self.free_frontend_ids.insert(o.id);
            report.frontends_removed += 1;
        }
        report.announced = self.sync_vips()?;

        // 4. after the flip: release, so flows of removed backends end
        report.backends_removed = to_release.len();
        for id in to_release {
            self.release_backend(id)?;
        }
        for ring in rings_to_free {
            if ring != u32::MAX {
                self.free_rings.insert(ring);
            }
        }
        self.generation = Some(snap.generation);
        Ok(report)
    }

    fn release_backend(&mut self, id: u32) -> Result<(), ApplyError> {
        let gen = self.backend_gen[id as usize].wrapping_add(1);
        self.backend_gen[id as usize] = gen;
        let value = BackendValue {
            gen,
            ..Default::default()
        };
        self.dp
            .maps
            .backends
            .set(id, value, 0)
            .map_err(map_err("blixt_backends"))?;
        self.free_backend_ids.insert(id);
        Ok(())
    }

    /// Zeroes the counters of an id about to be reused.
    fn zero_stats(&mut self, which: Stats, id: u32) -> Result<(), ApplyError> {
        let n = aya::util::nr_cpus().map_err(|(_, e)| ApplyError::Node(e.to_string()))?;
        let zeros = aya::maps::PerCpuValues::try_from(vec![Counters::default(); n])
            .map_err(|e| ApplyError::Node(e.to_string()))?;
        let (map, name) = match which {
            Stats::Backend => (&mut self.dp.maps.backend_stats, "blixt_backend_stats"),
            Stats::Frontend => (&mut self.dp.maps.frontend_stats, "blixt_frontend_stats"),
        };
        map.set(id, zeros, 0).map_err(map_err(name))
    }

    /// The applied frontends with their backends and ring shares.
    pub fn view(&self) -> Vec<FrontendView> {
        self.frontends
            .iter()
            .map(|(key, f)| {
                let mut per_id: BTreeMap<u32, u32> = BTreeMap::new();
                let mut reject_slots = 0;
                for s in self.dp.maps.rings.read(f.ring) {
                    if *s == SLOT_REJECT {
                        reject_slots += 1;
                    } else {
                        *per_id.entry(*s).or_default() += 1;
                    }
                }
                FrontendView {
                    name: f.name.clone(),
                    key: *key,
                    id: f.id,
                    ring: f.ring,
                    all_reject: f.flags & FE_F_ALL_REJECT != 0,
                    backends: f
                        .backends
                        .iter()
                        .map(|(a, b)| (*a, b.id, b.state, per_id.get(&b.id).copied().unwrap_or(0)))
                        .collect(),
                    reject_slots,
                }
            })
            .collect()
    }

    /// Counters of a backend id, summed over CPUs.
    pub fn backend_counters(&self, id: u32) -> Result<Counters, ApplyError> {
        sum_percpu(&self.dp.maps.backend_stats, id).map_err(map_err("blixt_backend_stats"))
    }

    /// Counters of a frontend id, summed over CPUs (new flows and rejects; per-packet counts
    /// are kept per backend).
    pub fn frontend_counters(&self, id: u32) -> Result<Counters, ApplyError> {
        sum_percpu(&self.dp.maps.frontend_stats, id).map_err(map_err("blixt_frontend_stats"))
    }

    /// Global counters (drops and rejects by reason), summed over CPUs, in STAT_NAMES order.
    pub fn global_counters(&self) -> Result<Vec<u64>, ApplyError> {
        (0..blixt_bpf::shared::STAT_MAX)
            .map(|i| {
                self.dp
                    .maps
                    .stats
                    .get(&i, 0)
                    .map(|v| v.iter().sum())
                    .map_err(map_err("blixt_stats"))
            })
            .collect()
    }

    /// Deletes expired conntrack pairs. A pair expires when both directions have been idle
    /// longer than the timeout of its most advanced state; a reply entry whose forward entry
    /// is gone or belongs to a newer flow expires on its own idle time.
    pub fn sweep(&mut self, now_ns: u64) -> Result<SweepReport, ApplyError> {
        let node = self.node.clone().unwrap_or_default();
        let timeout = |proto: u8, state: u8| -> u64 {
            let s = if proto != 6 {
                node.udp_timeout_s
            } else if state >= CT_CLOSING {
                node.tcp_closing_timeout_s
            } else if state == CT_ESTABLISHED {
                node.tcp_established_timeout_s
            } else {
                node.tcp_syn_timeout_s
            };
            u64::from(s) * 1_000_000_000
        };
        let entries: Vec<(FlowKey, CtEntry)> = self
            .dp
            .maps
            .conntrack
            .iter()
            .filter_map(Result::ok)
            .collect();
        let index: std::collections::HashMap<FlowKey, CtEntry> = entries.iter().copied().collect();
        let mut report = SweepReport {
            scanned: entries.len(),
            expired: 0,
        };
        let mut doomed = Vec::new();
        for (key, e) in &entries {
            let partner = FlowKey {
                src: e.ndst,
                dst: e.nsrc,
                sport: e.ndport,
                dport: e.nsport,
                proto: key.proto,
                family: key.family,
                pad: [0; 2],
            };
            if e.dir == CT_DIR_FORWARD {
                let p = index.get(&partner);
                let last = p.map_or(e.last_seen_ns, |p| p.last_seen_ns.max(e.last_seen_ns));
                let state = p.map_or(e.state, |p| p.state.max(e.state));
                if now_ns.saturating_sub(last) > timeout(key.proto, state) {
                    doomed.push(*key);
                    if p.is_some() {
                        doomed.push(partner);
                    }
                }
            } else {
                // the forward entry for this reply is keyed by the client tuple
                let owner = index.get(&partner).filter(|f| {
                    f.dir == CT_DIR_FORWARD && f.nsrc == key.dst && f.nsport == key.dport
                });
                if owner.is_none()
                    && now_ns.saturating_sub(e.last_seen_ns) > timeout(key.proto, e.state)
                {
                    doomed.push(*key);
                }
            }
        }
        doomed.sort_unstable_by_key(|k| (k.src, k.dst, k.sport, k.dport, k.proto));
        doomed.dedup();
        for k in doomed {
            match self.dp.maps.conntrack.remove(&k) {
                Ok(()) => report.expired += 1,
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err("blixt_conntrack")(e)),
            }
        }
        Ok(report)
    }
}

fn sum_percpu(
    map: &aya::maps::PerCpuArray<aya::maps::MapData, Counters>,
    id: u32,
) -> Result<Counters, MapError> {
    let values = map.get(&id, 0)?;
    let mut total = Counters::default();
    for v in values.iter() {
        total += *v;
    }
    Ok(total)
}
