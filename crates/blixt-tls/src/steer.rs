//! Steering TLS VIPs to the proxy with a BPF `sk_lookup` program, without binding the VIP.
//!
//! The program (`blixt-bpf/bpf/tls_sk_lookup.bpf.c`) is attached to a network namespace and
//! runs whenever the stack looks for the socket of a TCP packet to a local destination. A key
//! (family, VIP, port) found in its SOCKHASH gets that socket: the proxy's listening socket
//! for the frontend, bound to a loopback ephemeral port. The accepted connection's local
//! address is the VIP:port the client used, which is how the proxy finds the SNI table.
//!
//! sk_lookup runs only for packets the routing decision delivers locally, so each steered VIP
//! also gets a route of type local (`ip route replace local VIP/32 dev lo table local proto
//! 177`), added here and removed on [`SkLookupSteering::unsteer`] and on drop. The `proto`
//! tag marks the routes as Blixt's: those a killed process left behind are flushed when the
//! steering attaches again. Why this and not the XDP/TC path is in docs/tls-passthrough.md.
//!
//! The local route would also hand the VIP to every socket of the node bound to a wildcard
//! address (sshd, the metrics port): so every VIP held here is in the program's `tls_vips`
//! map too, and a packet to it that is not for one of its listeners is refused (TCP reset, UDP
//! port unreachable; counted as `refused`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::Command;

use aya::maps::{HashMap, MapData, PerCpuArray, SockHash};
use aya::programs::SkLookup;
use aya::Ebpf;
use tracing::{debug, warn};

use crate::routing::normalize;

static OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tls_sk_lookup.o"));

/// Mirrors `struct tls_listener_key` (tls.h): family, port (host order), address words in
/// network byte order. An array of u32 is already `Pod`, so no unsafe impl is needed.
pub type ListenerKey = [u32; 6];

/// Mirrors `struct tls_vip_key` (tls.h): family, address words in network byte order.
pub type VipKey = [u32; 5];

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
/// Route protocol of the local routes added here (`proto` in `ip route`): not one of the
/// numbers iproute2 names in `/etc/iproute2/rt_protos`.
pub const ROUTE_PROTO: &str = "177";
const STAT_STEERED: u32 = 0;
const STAT_ASSIGN_FAILED: u32 = 1;
const STAT_REFUSED: u32 = 2;

/// Errors of loading, attaching and programming the steering.
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    #[error("loading the sk_lookup object")]
    Load(#[source] aya::EbpfError),
    #[error("the sk_lookup object has no {0}")]
    Missing(&'static str),
    #[error("sk_lookup program")]
    Program(#[source] aya::programs::ProgramError),
    #[error("sk_lookup map")]
    Map(#[source] aya::maps::MapError),
    #[error("opening the network namespace {path}")]
    Netns {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("`ip {args}` failed: {detail}")]
    Route { args: String, detail: String },
}

/// The key of `vip` in the SOCKHASH.
pub fn listener_key(vip: SocketAddr) -> ListenerKey {
    let vip = normalize(vip);
    let port = u32::from(vip.port());
    match vip.ip() {
        IpAddr::V4(a) => [AF_INET, port, u32::from_ne_bytes(a.octets()), 0, 0, 0],
        IpAddr::V6(a) => {
            let o = a.octets();
            let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            [AF_INET6, port, w(0), w(4), w(8), w(12)]
        }
    }
}

/// The key of `ip` in `tls_vips`.
pub fn vip_key(ip: IpAddr) -> VipKey {
    let k = listener_key(SocketAddr::new(ip, 0));
    [k[0], k[2], k[3], k[4], k[5]]
}

/// Counters of the sk_lookup program, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SteerStats {
    /// Connections assigned to a proxy socket.
    pub steered: u64,
    /// Socket found but the assignment was refused (socket closing, family mismatch).
    pub assign_failed: u64,
    /// Packets to a TLS VIP that were not for one of its listeners, refused.
    pub refused: u64,
}

/// The loaded and attached sk_lookup program with its socket map.
pub struct SkLookupSteering {
    // Keeps the program and its link: dropping it detaches the program.
    ebpf: Ebpf,
    listeners: SockHash<MapData, ListenerKey>,
    /// VIPs whose other ports and protocols are refused.
    vips: HashMap<MapData, VipKey, u32>,
    manage_local_routes: bool,
    /// VIPs held, with the number of steered ports (or draining connections) using them: each
    /// is in `vips`, and has a local route we added when we manage them.
    local_routes: BTreeMap<IpAddr, usize>,
    steered: BTreeSet<SocketAddr>,
}

impl std::fmt::Debug for SkLookupSteering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SkLookupSteering")
            .field("steered", &self.steered)
            .field("local_routes", &self.local_routes)
            .finish_non_exhaustive()
    }
}

impl SkLookupSteering {
    /// Loads the program and attaches it to the network namespace of the calling thread.
    /// With `manage_local_routes`, [`steer`](Self::steer) adds a local route for each VIP
    /// (run in the same namespace).
    pub fn attach_here(manage_local_routes: bool) -> Result<Self, SteerError> {
        Self::attach("/proc/thread-self/ns/net", manage_local_routes)
    }

    /// Loads the program and attaches it to the network namespace at `netns_path`. Local
    /// routes, when managed, are added in the calling thread's namespace, where those left
    /// behind by an earlier process that could not clean up (tagged `proto 177`) are flushed
    /// first: a stale one would keep delivering, and with `arp_ignore=0` answering ARP for, a
    /// VIP this node no longer serves.
    pub fn attach(netns_path: &str, manage_local_routes: bool) -> Result<Self, SteerError> {
        let netns = File::open(netns_path).map_err(|source| SteerError::Netns {
            path: netns_path.to_string(),
            source,
        })?;
        if manage_local_routes {
            flush_stale_routes()?;
        }
        let mut ebpf = Ebpf::load(OBJ).map_err(SteerError::Load)?;
        let prog: &mut SkLookup = ebpf
            .program_mut("tls_sk_lookup")
            .ok_or(SteerError::Missing("program tls_sk_lookup"))?
            .try_into()
            .map_err(SteerError::Program)?;
        prog.load().map_err(SteerError::Program)?;
        prog.attach(netns).map_err(SteerError::Program)?;
        let listeners = SockHash::try_from(
            ebpf.take_map("tls_listeners")
                .ok_or(SteerError::Missing("map tls_listeners"))?,
        )
        .map_err(SteerError::Map)?;
        let vips = HashMap::try_from(
            ebpf.take_map("tls_vips")
                .ok_or(SteerError::Missing("map tls_vips"))?,
        )
        .map_err(SteerError::Map)?;
        Ok(SkLookupSteering {
            ebpf,
            listeners,
            vips,
            manage_local_routes,
            local_routes: BTreeMap::new(),
            steered: BTreeSet::new(),
        })
    }

    /// Sends new connections to `vip` (VIP:port) to `listener` (a listening TCP socket of the
    /// same family). Replaces an earlier socket for the same VIP:port.
    pub fn steer(&mut self, vip: SocketAddr, listener: &impl AsRawFd) -> Result<(), SteerError> {
        let vip = normalize(vip);
        if !self.steered.contains(&vip) {
            let users = self.local_routes.get(&vip.ip()).copied().unwrap_or(0);
            if users == 0 {
                // refused on other ports before it is delivered locally at all
                self.vips
                    .insert(vip_key(vip.ip()), 1, 0)
                    .map_err(SteerError::Map)?;
                if self.manage_local_routes {
                    local_route("replace", vip.ip())?;
                }
            }
            self.local_routes.insert(vip.ip(), users + 1);
        }
        self.listeners
            .insert(listener_key(vip), listener.as_raw_fd(), 0)
            .map_err(SteerError::Map)?;
        self.steered.insert(vip);
        debug!(%vip, "tls steering: sk_lookup entry added");
        Ok(())
    }

    /// Stops steering `vip` and releases its hold on the VIP's local route: new SYNs to it are
    /// no longer assigned, and without a local route left, no longer delivered locally.
    ///
    /// Connections already accepted on `vip` need the local route too: their packets reach
    /// their sockets only as long as the VIP is delivered locally. Use
    /// [`unsteer_keep_route`](Self::unsteer_keep_route) while such connections remain.
    pub fn unsteer(&mut self, vip: SocketAddr) -> Result<(), SteerError> {
        if self.unsteer_keep_route(vip) {
            self.release_route(vip.ip())?;
        }
        Ok(())
    }

    /// Stops steering `vip` (new SYNs are no longer assigned; with the local route still in
    /// place the stack resets them) but keeps its hold on the VIP's local route, so that
    /// connections accepted on it keep receiving packets. Returns whether `vip` was steered;
    /// if so, the caller owes one [`release_route`](Self::release_route) of `vip.ip()`.
    pub fn unsteer_keep_route(&mut self, vip: SocketAddr) -> bool {
        let vip = normalize(vip);
        if !self.steered.remove(&vip) {
            return false;
        }
        // The entry may already be gone: the kernel drops closed sockets from the map.
        if let Err(e) = self.listeners.remove(&listener_key(vip)) {
            debug!(%vip, error = %e, "tls steering: no sk_lookup entry to remove");
        }
        true
    }

    /// Drops one hold on the local route of `ip` (taken by [`steer`](Self::steer)); the route
    /// is deleted with the last one.
    pub fn release_route(&mut self, ip: IpAddr) -> Result<(), SteerError> {
        let ip = normalize(SocketAddr::new(ip, 0)).ip();
        if let Some(users) = self.local_routes.get_mut(&ip) {
            *users -= 1;
            if *users == 0 {
                self.local_routes.remove(&ip);
                if self.manage_local_routes {
                    local_route("del", ip)?;
                    debug!(%ip, "tls steering: local route removed");
                }
                if let Err(e) = self.vips.remove(&vip_key(ip)) {
                    debug!(%ip, error = %e, "tls steering: no tls_vips entry to remove");
                }
            }
        }
        Ok(())
    }

    /// VIP:ports currently steered.
    pub fn steered(&self) -> impl Iterator<Item = &SocketAddr> {
        self.steered.iter()
    }

    /// The program's counters.
    pub fn stats(&self) -> Result<SteerStats, SteerError> {
        let map = self
            .ebpf
            .map("tls_steer_stats")
            .ok_or(SteerError::Missing("map tls_steer_stats"))?;
        let arr = PerCpuArray::<_, u64>::try_from(map).map_err(SteerError::Map)?;
        let sum = |i: u32| -> Result<u64, SteerError> {
            Ok(arr.get(&i, 0).map_err(SteerError::Map)?.iter().sum())
        };
        Ok(SteerStats {
            steered: sum(STAT_STEERED)?,
            assign_failed: sum(STAT_ASSIGN_FAILED)?,
            refused: sum(STAT_REFUSED)?,
        })
    }
}

impl Drop for SkLookupSteering {
    fn drop(&mut self) {
        let held = std::mem::take(&mut self.local_routes);
        if !self.manage_local_routes {
            return;
        }
        for ip in held.into_keys() {
            if let Err(e) = local_route("del", ip) {
                warn!(error = %e, "tls steering: removing a local route");
            }
        }
    }
}

/// Deletes every local route tagged [`ROUTE_PROTO`] in the calling thread's namespace: those
/// a process that steered TLS VIPs left behind when it could not clean up (SIGKILL, OOM). For
/// the process that owns TLS steering on the node, at its start; [`SkLookupSteering::attach`]
/// does it too when it manages local routes.
pub fn flush_stale_routes() -> Result<(), SteerError> {
    for family in ["-4", "-6"] {
        ip(&[
            family,
            "route",
            "flush",
            "table",
            "local",
            "proto",
            ROUTE_PROTO,
        ])?;
    }
    Ok(())
}

/// `ip route <op> local <ip>/<max> dev lo table local proto 177`, in the calling thread's
/// namespace.
fn local_route(op: &str, addr: IpAddr) -> Result<(), SteerError> {
    let (family, prefix) = match addr {
        IpAddr::V4(_) => ("-4", format!("{addr}/32")),
        IpAddr::V6(_) => ("-6", format!("{addr}/128")),
    };
    ip(&[
        family,
        "route",
        op,
        "local",
        &prefix,
        "dev",
        "lo",
        "table",
        "local",
        "proto",
        ROUTE_PROTO,
    ])
}

/// Runs `ip ARGS` in the calling thread's namespace.
fn ip(args: &[&str]) -> Result<(), SteerError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| SteerError::Route {
            args: args.join(" "),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(SteerError::Route {
            args: args.join(" "),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_the_c_layout() {
        // local_ip4 holds the address bytes as they are on the wire; port is host order.
        let k = listener_key("10.99.100.1:443".parse().unwrap());
        assert_eq!(k[0], 2);
        assert_eq!(k[1], 443);
        assert_eq!(k[2].to_ne_bytes(), [10, 99, 100, 1]);
        assert_eq!(&k[3..], &[0, 0, 0]);
        let k6 = listener_key("[fd99:100::1]:8443".parse().unwrap());
        assert_eq!(k6[0], 10);
        assert_eq!(k6[1], 8443);
        assert_eq!(k6[2].to_ne_bytes(), [0xfd, 0x99, 0x01, 0x00]);
        assert_eq!(k6[5].to_ne_bytes(), [0, 0, 0, 1]);
        assert_eq!(
            listener_key("[::ffff:10.99.100.1]:443".parse().unwrap()),
            listener_key("10.99.100.1:443".parse().unwrap())
        );
        assert_eq!(std::mem::size_of::<ListenerKey>(), 24);
        let v = vip_key("fd99:100::1".parse().unwrap());
        assert_eq!(v[0], 10);
        assert_eq!(&v[1..], &k6[2..]);
        assert_eq!(std::mem::size_of::<VipKey>(), 20);
    }
}
