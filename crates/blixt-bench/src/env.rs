//! The benchmark's test bed: a network namespace in which `bpf_fib_lookup` resolves, the
//! dataplane loaded and programmed by the agent's reconciler, and beside it the benchmark's
//! own programs, the restoring wrappers sharing the dataplane's maps, at both hooks (XDP and
//! TC).
//!
//! Network (inside the namespace): `bn0` faces clients (10.0.0.0/24, fd00::/64), `bn1` faces
//! backends (10.1.0.0/24, fd01::/64); client and backends have permanent neighbour entries so
//! that a rewritten packet's FIB lookup succeeds inside BPF_PROG_TEST_RUN (the ctx's
//! `ingress_ifindex`, or the skb's `ifindex` at TC, names the interface the packet "arrived"
//! on). One more frontend ([`vip4_unresolved`]) has its backends in 10.1.1.0/24, routed via
//! a gateway on `bn1` ([`GATEWAY_UNRESOLVED`]) that has *no* neighbour entry: its packets take
//! the unresolved-next-hop path (the FIB lookup answers `BPF_FIB_LKUP_RET_NO_NEIGH`; nothing in
//! a test run resolves it, since a test run never transmits).
//!
//! Map sharing: the dataplane is loaded with a pin directory of its own under /sys/fs/bpf;
//! bench_wrap.o is then loaded with every one of those pins as its map, so the wrapped load
//! balancer reads and writes exactly the maps the reconciler programmed and whose counters it
//! reads. The directory is removed when the [`Env`] is dropped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use aya::maps::{Array, MapData};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, TestRunResult, Xdp};
use aya::{Ebpf, EbpfLoader};
use blixt_agent::{NodeConfig, Reconciler};
use blixt_bpf::shared::FlowKey;
use blixt_bpf::{Capability, Dataplane, DataplaneOptions, Plan};
use blixt_core::snapshot::{
    Backend, BackendAddr, BackendState, Frontend, FrontendKey, Protocol, Snapshot,
};
use blixt_lab::netns::{cleanup_stale, NetNs};

use crate::results::ProgramStats;
use crate::wrap::{State, Vary, STATE_SIZE};

static WRAP_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_wrap.o"));
static FLOOR_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_floor.o"));
static EMPTY_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_empty.o"));

pub use blixt_bpf::Hook;

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;

/// Name of an XDP verdict, for messages.
pub fn verdict_name(v: u32) -> &'static str {
    match v {
        XDP_ABORTED => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        XDP_REDIRECT => "XDP_REDIRECT",
        _ => "unknown verdict",
    }
}

/// Name of a verdict of a program at `hook`, for messages.
pub fn hook_verdict_name(hook: Hook, v: u32) -> &'static str {
    match (hook, v) {
        (Hook::Xdp, v) => verdict_name(v),
        (Hook::Tc, TC_ACT_OK) => "TC_ACT_OK",
        (Hook::Tc, TC_ACT_SHOT) => "TC_ACT_SHOT",
        (Hook::Tc, TC_ACT_REDIRECT) => "TC_ACT_REDIRECT",
        (Hook::Tc, _) => "unknown TC verdict",
    }
}

/// What the TC entry point returns where the XDP one returns `xdp` (include/hook.h,
/// `tc_verdict()`: XDP_TX becomes a redirect to the same device).
pub fn tc_verdict(xdp: u32) -> u32 {
    match xdp {
        XDP_PASS => TC_ACT_OK,
        XDP_TX | XDP_REDIRECT => TC_ACT_REDIRECT,
        _ => TC_ACT_SHOT,
    }
}

const NETNS_PREFIX: &str = "blxbn";
const PIN_PREFIX: &str = "blixt-bench-";
const PIN_ROOT: &str = "/sys/fs/bpf";
/// Maps of bench_wrap.o that are its own, not the dataplane's (per-CPU scratch and caches the
/// dataplane does not pin either).
const PRIVATE_MAPS: &[&str] = &["bench_state", "blixt_scratch", "blixt_nexthops"];

pub const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
pub const CLIENT_IF_MAC: [u8; 6] = [2, 0, 0, 0, 0xa, 0];
pub const BACKEND_IF_MAC: [u8; 6] = [2, 0, 0, 0, 0xb, 0];
/// Port every backend listens on.
pub const BACKEND_PORT: u16 = 8080;
/// TCP frontends listen on 80, UDP ones on 53.
pub const TCP_PORT: u16 = 80;
pub const UDP_PORT: u16 = 53;

pub fn backend_mac(i: u8) -> [u8; 6] {
    [2, 0, 0, 0, 1, i]
}
pub fn client4() -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 2)
}
pub fn client6() -> Ipv6Addr {
    "fd00::2".parse().expect("literal")
}
/// The node's own address on the client side: traffic to it is not for a frontend.
pub fn node4() -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 1)
}
pub fn vip4() -> Ipv4Addr {
    Ipv4Addr::new(10, 200, 0, 10)
}
pub fn vip6() -> Ipv6Addr {
    "fd00:200::10".parse().expect("literal")
}
pub fn snat4() -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 0, 254)
}
pub fn snat6() -> Ipv6Addr {
    "fd01::fe".parse().expect("literal")
}
pub fn be4(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 0, i)
}
pub fn be6(i: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd01, 0, 0, 0, 0, 0, 0, u16::from(i))
}
/// A VIP (TCP port [`TCP_PORT`]) whose backends ([`be4_unresolved`]) sit behind a next hop
/// without a neighbour entry.
pub fn vip4_unresolved() -> Ipv4Addr {
    Ipv4Addr::new(10, 200, 0, 20)
}
/// The unresolved frontend's backend `i`, in 10.1.1.0/24, routed via [`GATEWAY_UNRESOLVED`].
pub fn be4_unresolved(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 1, i)
}
/// The gateway to 10.1.1.0/24, on `bn1`'s subnet, with no neighbour entry.
pub const GATEWAY_UNRESOLVED: &str = "10.1.0.253";

/// Sizes of the test bed.
#[derive(Debug, Clone, Copy)]
pub struct EnvOptions {
    /// Conntrack capacity (LRU hash entries; a flow takes two).
    pub conntrack_entries: u32,
    /// Backends behind every frontend (1..=250).
    pub backends: u8,
    /// Maglev ring size, a prime.
    pub ring_size: u32,
}

/// Which program a measurement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// Does nothing (returns XDP_PASS): the fixed cost of a run.
    Empty = 0,
    /// Parses like the load balancer and returns XDP_TX.
    Floor = 1,
    /// The load balancer at XDP (`blixt_lb`).
    Lb = 2,
    /// A TC classifier that does nothing (returns TC_ACT_OK): the fixed cost of a run at TC.
    TcEmpty = 3,
    /// The load balancer at TC ingress (`blixt_lb_tc`).
    TcLb = 4,
}

impl Target {
    pub const ALL: [Target; 5] = [
        Target::Empty,
        Target::Floor,
        Target::Lb,
        Target::TcEmpty,
        Target::TcLb,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Empty => "empty",
            Target::Floor => "floor",
            Target::Lb => "blixt",
            Target::TcEmpty => "tc_empty",
            Target::TcLb => "tc_blixt",
        }
    }

    pub fn hook(self) -> Hook {
        match self {
            Target::Empty | Target::Floor | Target::Lb => Hook::Xdp,
            Target::TcEmpty | Target::TcLb => Hook::Tc,
        }
    }

    /// One of the two load balancers (they share conntrack and the counters).
    pub fn is_lb(self) -> bool {
        matches!(self, Target::Lb | Target::TcLb)
    }

    /// The empty program of the same hook, whose time is subtracted from this one's.
    pub fn baseline(self) -> Target {
        match self.hook() {
            Hook::Xdp => Target::Empty,
            Hook::Tc => Target::TcEmpty,
        }
    }

    /// Name of the wrapper (bench_wrap.bpf.c) that runs this target in a hot loop.
    pub fn wrapper_name(self) -> &'static str {
        match self {
            Target::Lb => "bench_wrap_lb",
            Target::Floor => "bench_wrap_floor",
            Target::Empty => "bench_wrap_empty",
            Target::TcLb => "bench_wrap_tc_lb",
            Target::TcEmpty => "bench_wrap_tc_empty",
        }
    }
}

/// Result of one hot-loop run (one BPF_PROG_TEST_RUN with a repeat count, through a wrapper).
#[derive(Debug, Clone)]
pub struct HotRun {
    /// The kernel's own average per iteration, ns (timer paused while rescheduling).
    pub kernel_ns: f64,
    /// The wrapper's state after the run: verdict counts, errors, next sequence number.
    pub state: State,
    /// Verdict and output bytes of the last iteration.
    pub verdict: u32,
    pub out: Vec<u8>,
}

/// Result of a batch of single runs (repeat = 1), one BPF_PROG_TEST_RUN syscall each.
#[derive(Debug, Clone)]
pub struct CallBatch {
    /// Wall-clock time per call, measured in user space around the whole batch (includes the
    /// syscall and the kernel's set-up of the test run).
    pub wall_ns: f64,
    /// Mean of the kernel's reported run time (program only, whole nanoseconds per call).
    pub kernel_ns: f64,
    /// Calls per verdict.
    pub verdicts: [u64; 8],
}

/// Dataplane counters summed over CPUs and backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    pub packets: u64,
    pub new_flows: u64,
    /// Global counters in `blixt_bpf::shared::STAT_NAMES` order.
    pub stats: Vec<u64>,
}

/// A pin directory under /sys/fs/bpf, removed with its contents on drop.
#[derive(Debug)]
struct PinDir(PathBuf);

impl PinDir {
    fn create() -> Result<PinDir> {
        remove_stale_pins();
        let dir = Path::new(PIN_ROOT).join(format!("{PIN_PREFIX}{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("removing leftover {}", dir.display()))?;
        }
        Ok(PinDir(dir))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if self.0.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.0) {
                eprintln!("blixt-bench: removing {}: {e}", self.0.display());
            }
        }
    }
}

/// Pin directories of benchmark processes that are gone (killed runs).
fn remove_stale_pins() {
    let Ok(entries) = std::fs::read_dir(PIN_ROOT) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PIN_PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn xdp_ctx(len: usize, ifindex: u32) -> [u8; 24] {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
    let words: [u32; 6] = [0, len as u32, 0, ifindex, 0, 0];
    let mut b = [0u8; 24];
    for (i, w) in words.iter().enumerate() {
        b[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
    }
    b
}

/// `struct __sk_buff` as a test run's context: only `ifindex` (offset 40) set, which puts the
/// skb on that device, as if it arrived there (TC ingress).
const SKB_CTX_SIZE: usize = 192;

fn skb_ctx(ifindex: u32) -> [u8; SKB_CTX_SIZE] {
    let mut b = [0u8; SKB_CTX_SIZE];
    b[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    b
}

/// The test-run context of a packet of `len` bytes arriving on `ifindex` at `hook`.
fn ctx_for(hook: Hook, len: usize, ifindex: u32) -> Vec<u8> {
    match hook {
        Hook::Xdp => xdp_ctx(len, ifindex).to_vec(),
        Hook::Tc => skb_ctx(ifindex).to_vec(),
    }
}

/// A loaded program of either hook, for BPF_PROG_TEST_RUN.
#[derive(Clone, Copy)]
enum Prog<'a> {
    Xdp(&'a Xdp),
    Tc(&'a SchedClassifier),
}

impl Prog<'_> {
    fn test_run(
        self,
        opts: TestRunOptions<'_>,
    ) -> std::result::Result<TestRunResult, aya::programs::ProgramError> {
        match self {
            Prog::Xdp(p) => p.test_run(opts),
            Prog::Tc(p) => p.test_run(opts),
        }
    }
}

fn ifindex(ns: &NetNs, dev: &str) -> Result<u32> {
    let out = ns.ip(&["-j", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("ip -j link show")?;
    v.get(0)
        .and_then(|l| l.get("ifindex"))
        .and_then(|i| i.as_u64())
        .map(|i| i as u32)
        .with_context(|| format!("no ifindex for {dev} in {out}"))
}

fn frontend(name: &str, vip: IpAddr, port: u16, protocol: Protocol, backends: u8) -> Frontend {
    Frontend {
        name: name.into(),
        key: FrontendKey {
            vip,
            port,
            protocol,
        },
        backends: (1..=backends)
            .map(|i| Backend {
                addr: BackendAddr {
                    addr: match vip {
                        IpAddr::V4(_) => be4(i).into(),
                        IpAddr::V6(_) => be6(i).into(),
                    },
                    port: BACKEND_PORT,
                },
                weight: 1,
                state: BackendState::Active,
            })
            .collect(),
        reject_weight: 0,
    }
}

/// The benchmark's snapshot: TCP and UDP frontends on an IPv4 and an IPv6 VIP, each with
/// `backends` equal-weight backends, and a TCP frontend on [`vip4_unresolved`] with as many
/// backends behind an unresolved next hop.
pub fn snapshot(backends: u8) -> Snapshot {
    let mut unresolved = frontend(
        "t4u",
        vip4_unresolved().into(),
        TCP_PORT,
        Protocol::Tcp,
        backends,
    );
    for (i, b) in unresolved.backends.iter_mut().enumerate() {
        b.addr.addr = be4_unresolved(i as u8 + 1).into();
    }
    Snapshot {
        generation: 1,
        frontends: vec![
            frontend("t4", vip4().into(), TCP_PORT, Protocol::Tcp, backends),
            frontend("u4", vip4().into(), UDP_PORT, Protocol::Udp, backends),
            frontend("t6", vip6().into(), TCP_PORT, Protocol::Tcp, backends),
            frontend("u6", vip6().into(), UDP_PORT, Protocol::Udp, backends),
            unresolved,
        ],
    }
}

/// Node settings as an agent would have them (default SNAT port range 1024-32767).
pub fn node_config() -> NodeConfig {
    NodeConfig {
        snat_v4: Some(snat4().into()),
        snat_v6: Some(snat6().into()),
        ..NodeConfig::default()
    }
}

/// Builds the test bed and runs `f` in it (on a thread inside the namespace). Panics if not
/// root.
pub fn with_env<R: Send>(
    opts: EnvOptions,
    f: impl FnOnce(&mut Env) -> Result<R> + Send,
) -> Result<R> {
    crate::require_root();
    ensure!(
        (1..=250).contains(&opts.backends),
        "backends must be 1..=250"
    );
    cleanup_stale(NETNS_PREFIX).context("removing stale benchmark namespaces")?;
    let ns = NetNs::new(NETNS_PREFIX).context("benchmark netns")?;
    let mut lines: Vec<String> = vec![
        "link add bn0 address 02:00:00:00:0a:00 type veth peer name bn1 address 02:00:00:00:0b:00"
            .into(),
        "link set bn0 up".into(),
        "link set bn1 up".into(),
        "addr add 10.0.0.1/24 dev bn0".into(),
        "addr add fd00::1/64 dev bn0 nodad".into(),
        "addr add 10.1.0.254/24 dev bn1".into(),
        "addr add fd01::fe/64 dev bn1 nodad".into(),
        "neigh add 10.0.0.2 lladdr 02:00:00:00:00:02 dev bn0 nud permanent".into(),
        "neigh add fd00::2 lladdr 02:00:00:00:00:02 dev bn0 nud permanent".into(),
        format!("route add 10.1.1.0/24 via {GATEWAY_UNRESOLVED} dev bn1"),
    ];
    for i in 1..=opts.backends {
        let mac = backend_mac(i)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        lines.push(format!(
            "neigh add {} lladdr {mac} dev bn1 nud permanent",
            be4(i)
        ));
        lines.push(format!(
            "neigh add {} lladdr {mac} dev bn1 nud permanent",
            be6(i)
        ));
    }
    ns.ip_batch(&lines).context("benchmark network")?;
    ns.sysctl_set("net.ipv4.ip_forward", "1")?;
    ns.sysctl_set("net.ipv6.conf.all.forwarding", "1")?;
    let client_if = ifindex(&ns, "bn0")?;
    let backend_if = ifindex(&ns, "bn1")?;
    ns.run_in(move || {
        let mut env = Env::load(opts, client_if, backend_if)?;
        f(&mut env)
    })
}

/// The loaded programs and maps; see the module documentation.
pub struct Env {
    pub rec: Reconciler,
    pub opts: EnvOptions,
    wrap: Ebpf,
    floor: Ebpf,
    empty: Ebpf,
    /// lb.o loaded a second time on the dataplane's pinned maps, for its `blixt_lb_tc` (the
    /// dataplane keeps its own TC program private): the real TC entry point, per call.
    tc_lb: Ebpf,
    state: Array<MapData, [u8; STATE_SIZE]>,
    /// ifindex of the client-facing interface (ingress of client → VIP packets).
    pub client_if: u32,
    /// ifindex of the backend-facing interface (ingress of replies).
    pub backend_if: u32,
    _pins: PinDir,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("opts", &self.opts)
            .field("client_if", &self.client_if)
            .field("backend_if", &self.backend_if)
            .finish_non_exhaustive()
    }
}

fn load_xdp(ebpf: &mut Ebpf, name: &str) -> Result<()> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} not in its object"))?
        .try_into()
        .with_context(|| format!("{name} is not XDP"))?;
    prog.load().with_context(|| format!("loading {name}"))
}

fn xdp<'a>(ebpf: &'a Ebpf, name: &str) -> &'a Xdp {
    ebpf.program(name)
        .unwrap_or_else(|| panic!("program {name} loaded"))
        .try_into()
        .unwrap_or_else(|_| panic!("{name} is XDP"))
}

fn load_tc(ebpf: &mut Ebpf, name: &str) -> Result<()> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} not in its object"))?
        .try_into()
        .with_context(|| format!("{name} is not a TC classifier"))?;
    prog.load().with_context(|| format!("loading {name}"))
}

fn tc<'a>(ebpf: &'a Ebpf, name: &str) -> &'a SchedClassifier {
    ebpf.program(name)
        .unwrap_or_else(|| panic!("program {name} loaded"))
        .try_into()
        .unwrap_or_else(|_| panic!("{name} is a TC classifier"))
}

/// Loads `obj` with every map the dataplane pinned (`pinned`) taken from its pin, and checks
/// that no other map of it but per-object scratch ([`PRIVATE_MAPS`]) is left private: such a
/// map would silently be a copy, and the program would run on state nobody programmed.
fn load_on_pins(
    obj: &[u8],
    what: &str,
    pinned: &[(String, PathBuf)],
    ring_size: u32,
    plan: &Plan,
) -> Result<Ebpf> {
    let neigh_via_meta = u8::from(plan.neigh_via_meta());
    let (obj, have_kern_ctx) =
        blixt_bpf::kfunc::link_for_plan(obj, plan).map_err(anyhow::Error::msg)?;
    let mut loader = EbpfLoader::new();
    for (name, path) in pinned {
        loader.map_pin_path(name.as_str(), path.as_path());
    }
    loader
        .override_global("ring_size", &ring_size, true)
        .override_global("neigh_via_meta", &neigh_via_meta, true)
        .override_global("have_kern_ctx", &have_kern_ctx, true);
    let ebpf = loader
        .load(&obj)
        .with_context(|| format!("loading {what}"))?;
    for (name, _) in ebpf.maps() {
        let shared = pinned.iter().any(|(n, _)| n == name);
        if !shared && !PRIVATE_MAPS.contains(&name) && !name.starts_with('.') {
            bail!(
                "map {name} of {what} is not pinned by the dataplane: the load balancer in it \
                 would not share it (add it to PRIVATE_MAPS if it is per-object scratch)"
            );
        }
    }
    Ok(ebpf)
}

impl Env {
    fn load(opts: EnvOptions, client_if: u32, backend_if: u32) -> Result<Env> {
        let pins = PinDir::create()?;
        let dp = Dataplane::load(DataplaneOptions {
            max_frontends: 16,
            max_backends: 5 * u32::from(opts.backends) + 16,
            ring_size: opts.ring_size,
            conntrack_entries: opts.conntrack_entries,
            pin_dir: Some(pins.0.clone()),
            // neigh_via_meta = 0 on every kernel: XDP passes packets to unresolved next hops up
            // untouched and blixt_lb_tc forwards them, the path the unresolved-neighbour
            // figures measure (with metadata, a run would leave a pushed header the wrapper
            // cannot undo); no other path looks at it
            force_off: vec![Capability::XdpAdjustMeta],
            ..DataplaneOptions::default()
        })
        .context("loading the dataplane")?;
        let mut rec = Reconciler::new(dp).context("reconciler")?;
        rec.set_node_config(&node_config()).context("node config")?;
        rec.apply(&snapshot(opts.backends))
            .context("applying the benchmark snapshot")?;

        let pinned: Vec<(String, PathBuf)> = std::fs::read_dir(&pins.0)
            .with_context(|| format!("listing {}", pins.0.display()))?
            .map(|e| e.map(|e| (e.file_name().to_string_lossy().into_owned(), e.path())))
            .collect::<std::io::Result<_>>()?;
        ensure!(!pinned.is_empty(), "the dataplane pinned no map");
        let plan = rec.dataplane().plan().clone();
        ensure!(
            !plan.neigh_via_meta(),
            "the dataplane hands unresolved next hops over in metadata"
        );
        let mut wrap = load_on_pins(WRAP_OBJ, "bench_wrap.o", &pinned, opts.ring_size, &plan)?;
        for t in Target::ALL {
            match t.hook() {
                Hook::Xdp => load_xdp(&mut wrap, t.wrapper_name())?,
                Hook::Tc => load_tc(&mut wrap, t.wrapper_name())?,
            }
        }
        let state = Array::try_from(wrap.take_map("bench_state").context("bench_state map")?)
            .context("bench_state: value size differs from wrap::STATE_SIZE")?;
        let mut tc_lb = load_on_pins(
            blixt_bpf::loader::LB_OBJ,
            "lb.o",
            &pinned,
            opts.ring_size,
            &plan,
        )?;
        load_tc(&mut tc_lb, blixt_bpf::loader::LB_TC_PROGRAM)?;
        let mut floor = Ebpf::load(FLOOR_OBJ).context("loading bench_floor.o")?;
        load_xdp(&mut floor, "bench_floor")?;
        let mut empty = Ebpf::load(EMPTY_OBJ).context("loading bench_empty.o")?;
        load_xdp(&mut empty, "bench_empty")?;
        load_tc(&mut empty, "bench_empty_tc")?;
        Ok(Env {
            rec,
            opts,
            wrap,
            floor,
            empty,
            tc_lb,
            state,
            client_if,
            backend_if,
            _pins: pins,
        })
    }

    /// The program of `t` as the per-call method runs it: the real `blixt_lb` of the
    /// dataplane, `blixt_lb_tc` (lb.o on the dataplane's maps), `bench_floor`, `bench_empty`,
    /// `bench_empty_tc`.
    fn program(&mut self, t: Target) -> Prog<'_> {
        match t {
            Target::Lb => Prog::Xdp(self.rec.dataplane().lb_program()),
            Target::Floor => Prog::Xdp(xdp(&self.floor, "bench_floor")),
            Target::Empty => Prog::Xdp(xdp(&self.empty, "bench_empty")),
            Target::TcLb => Prog::Tc(tc(&self.tc_lb, blixt_bpf::loader::LB_TC_PROGRAM)),
            Target::TcEmpty => Prog::Tc(tc(&self.empty, "bench_empty_tc")),
        }
    }

    fn wrapper(&self, t: Target) -> Prog<'_> {
        match t.hook() {
            Hook::Xdp => Prog::Xdp(xdp(&self.wrap, t.wrapper_name())),
            Hook::Tc => Prog::Tc(tc(&self.wrap, t.wrapper_name())),
        }
    }

    /// One run of `t` on `pkt` arriving on `ifindex`: verdict and output bytes.
    pub fn call(&mut self, t: Target, pkt: &[u8], ifindex: u32) -> Result<(u32, Vec<u8>)> {
        let ctx = ctx_for(t.hook(), pkt.len(), ifindex);
        let mut out = vec![0u8; pkt.len() + 512];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(pkt);
        opts.data_out = Some(&mut out);
        opts.ctx_in = Some(&ctx);
        let res = self
            .program(t)
            .test_run(opts)
            .with_context(|| format!("BPF_PROG_TEST_RUN of {}", t.name()))?;
        out.truncate(res.data_size_out as usize);
        Ok((res.return_value, out))
    }

    /// Runs `t` once per packet (repeat = 1), timing the whole batch from user space.
    pub fn call_batch(&mut self, t: Target, pkts: &[Vec<u8>], ifindex: u32) -> Result<CallBatch> {
        ensure!(!pkts.is_empty(), "empty batch");
        let ctxs: Vec<Vec<u8>> = pkts
            .iter()
            .map(|p| ctx_for(t.hook(), p.len(), ifindex))
            .collect();
        let prog = self.program(t);
        let mut verdicts = [0u64; 8];
        let mut kernel = std::time::Duration::ZERO;
        let start = Instant::now();
        for (pkt, ctx) in pkts.iter().zip(&ctxs) {
            let mut opts = TestRunOptions::new();
            opts.data_in = Some(pkt);
            opts.ctx_in = Some(ctx);
            let res = prog
                .test_run(opts)
                .with_context(|| format!("BPF_PROG_TEST_RUN of {}", t.name()))?;
            verdicts[(res.return_value & 7) as usize] += 1;
            kernel += res.duration;
        }
        let wall = start.elapsed();
        let n = pkts.len() as f64;
        Ok(CallBatch {
            wall_ns: wall.as_nanos() as f64 / n,
            kernel_ns: kernel.as_nanos() as f64 / n,
            verdicts,
        })
    }

    /// One BPF_PROG_TEST_RUN of `t`'s wrapper with `repeat` iterations on `pkt`, stamping
    /// flows `seq..seq+repeat` when `vary` is set.
    pub fn hot_loop(
        &mut self,
        t: Target,
        pkt: &[u8],
        vary: Option<Vary>,
        seq: u64,
        ifindex: u32,
        repeat: u32,
    ) -> Result<HotRun> {
        let st = State::new(pkt, vary, seq);
        self.state
            .set(0, st.encode(), 0)
            .context("writing bench_state")?;
        let ctx = ctx_for(t.hook(), pkt.len(), ifindex);
        let mut out = vec![0u8; pkt.len() + 512];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(pkt);
        opts.data_out = Some(&mut out);
        opts.ctx_in = Some(&ctx);
        opts.repeat = repeat;
        let res = self
            .wrapper(t)
            .test_run(opts)
            .with_context(|| format!("BPF_PROG_TEST_RUN of the {} wrapper", t.name()))?;
        out.truncate(res.data_size_out as usize);
        let state = State::decode(&self.state.get(&0, 0).context("reading bench_state")?);
        Ok(HotRun {
            kernel_ns: res.duration.as_nanos() as f64,
            state,
            verdict: res.return_value,
            out,
        })
    }

    /// Dataplane counters now (summed over CPUs and every backend of the snapshot).
    pub fn counts(&mut self) -> Result<Counts> {
        let mut packets = 0;
        let mut new_flows = 0;
        for f in self.rec.view() {
            for (_, id, _, _) in f.backends {
                let c = self.rec.backend_counters(id)?;
                packets += c.packets;
                new_flows += c.new_flows;
            }
        }
        Ok(Counts {
            packets,
            new_flows,
            stats: self.rec.global_counters()?,
        })
    }

    /// Entries in conntrack (walks the map: O(entries) syscalls).
    pub fn conntrack_len(&mut self) -> usize {
        self.rec.dataplane().maps.conntrack.keys().count()
    }

    /// Empties conntrack; returns how many entries it deleted.
    pub fn clear_conntrack(&mut self) -> Result<usize> {
        let ct = &mut self.rec.dataplane().maps.conntrack;
        let keys: Vec<FlowKey> = ct
            .keys()
            .collect::<std::result::Result<_, _>>()
            .context("listing conntrack")?;
        for k in &keys {
            // An LRU map may have evicted it meanwhile: not an error.
            let _ = ct.remove(k);
        }
        Ok(keys.len())
    }

    /// What the verifier and the kernel say about each program measured.
    pub fn program_stats(&mut self) -> Result<Vec<ProgramStats>> {
        let mut out = Vec::new();
        let mut add = |name: &str, role: &str, prog: Prog<'_>| -> Result<()> {
            let info = match prog {
                Prog::Xdp(p) => p.info(),
                Prog::Tc(p) => p.info(),
            }
            .with_context(|| format!("program info of {name}"))?;
            out.push(ProgramStats {
                name: name.into(),
                role: role.into(),
                verified_insns: info.verified_instruction_count(),
                xlated_insns: info.size_translated().map(|b| b / 8),
                jited_bytes: info.size_jitted(),
            });
            Ok(())
        };
        add(
            blixt_bpf::loader::LB_PROGRAM,
            "the load balancer (lb.bpf.c) at XDP, as attached to interfaces",
            Prog::Xdp(self.rec.dataplane().lb_program()),
        )?;
        add(
            blixt_bpf::loader::LB_TC_PROGRAM,
            "the load balancer (lb.bpf.c) at TC ingress, as attached in TC mode",
            Prog::Tc(tc(&self.tc_lb, blixt_bpf::loader::LB_TC_PROGRAM)),
        )?;
        add(
            "bench_floor",
            "floor: parse_packet() then XDP_TX",
            Prog::Xdp(xdp(&self.floor, "bench_floor")),
        )?;
        add(
            "bench_empty",
            "empty program (XDP_PASS)",
            Prog::Xdp(xdp(&self.empty, "bench_empty")),
        )?;
        add(
            "bench_empty_tc",
            "empty TC classifier (TC_ACT_OK)",
            Prog::Tc(tc(&self.empty, "bench_empty_tc")),
        )?;
        for (t, role) in [
            (
                Target::Lb,
                "hot-loop wrapper around the load balancer (XDP)",
            ),
            (Target::Floor, "hot-loop wrapper around the floor"),
            (Target::Empty, "hot-loop wrapper around nothing (XDP)"),
            (
                Target::TcLb,
                "hot-loop wrapper around the load balancer (TC)",
            ),
            (Target::TcEmpty, "hot-loop wrapper around nothing (TC)"),
        ] {
            add(t.wrapper_name(), role, self.wrapper(t))?;
        }
        Ok(out)
    }
}
