//! Loading the dataplane: the load balancer (XDP and TC entry points of one object, sharing its
//! maps) and the TC companion, shaped by what the kernel offers ([`Plan`]); map sizes, pinning
//! under bpffs, attaching (and re-adopting) links so an agent restart or upgrade keeps conntrack.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{
    NlOptions, SchedClassifierLink, TcAttachOptions, TcAttachType, TcError, TcHandle,
};
use aya::programs::xdp::XdpLink;
use aya::programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};

use crate::capabilities::{Capabilities, Capability};
use crate::plan::{AttachMode, Hook, Plan, Refusal};

use crate::shared::{
    BackendValue, Config, Counters, CtEntry, FlowKey, FrontendKey, FrontendValue, Iface, VipKey,
    IFACE_F_ANNOUNCE,
};

/// The compiled load-balancer object (lb.bpf.c): XDP and TC entry points over one set of maps.
pub static LB_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb.o"));
/// An XDP program that passes everything (peer_pass.bpf.c), for the far end of lab veths.
pub static PEER_PASS_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/peer_pass.o"));

/// Writes [`PEER_PASS_OBJ`] to a file (for `ip link set ... xdp obj`) and returns its path.
/// The file is named by a hash of its bytes, so every process (test binaries included) shares
/// one file per build of the object instead of leaving one behind each.
pub fn peer_pass_object() -> io::Result<PathBuf> {
    // FNV-1a: a name, not a security boundary
    let hash = PEER_PASS_OBJ.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    let path = std::env::temp_dir().join(format!("blixt-peer-pass-{hash:016x}.o"));
    if fs::read(&path).is_ok_and(|b| b == PEER_PASS_OBJ) {
        return Ok(path);
    }
    // written beside it and renamed, so a concurrent reader never sees half a file
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    fs::write(&tmp, PEER_PASS_OBJ)?;
    fs::rename(&tmp, &path)?;
    Ok(path)
}

static NEIGH_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/neigh_tc.o"));

/// Name of the XDP program in lb.bpf.c.
pub const LB_PROGRAM: &str = "blixt_lb";
/// Name of the TC classifier in lb.bpf.c: the same load balancer at TC ingress.
pub const LB_TC_PROGRAM: &str = "blixt_lb_tc";
/// Priority of the TC programs when attached through netlink (no tcx): fixed, so that a restart
/// finds and replaces its own filter.
const TC_NETLINK_PRIORITY: u16 = 0x3b1;
const TC_NETLINK_HANDLE: TcHandle = TcHandle::new(0, 1);
/// Name of the TC program in neigh_tc.bpf.c.
pub const NEIGH_PROGRAM: &str = "blixt_neigh";

/// Maps that hold state worth keeping across restarts; pinned when a pin directory is set.
const PINNED_MAPS: &[&str] = &[
    "blixt_frontends",
    "blixt_rings",
    "blixt_backends",
    "blixt_conntrack",
    "blixt_config",
    "blixt_frontend_stats",
    "blixt_backend_stats",
    "blixt_stats",
    "blixt_vips",
    "blixt_ifaces",
];

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("loading the BPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("BPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error(
        "the kernel's verifier refused BPF program {name} ({summary}); its full log is in {}",
        log.display()
    )]
    Verifier {
        name: &'static str,
        /// The log's last lines, where the verifier says why.
        summary: String,
        log: PathBuf,
    },
    #[error(transparent)]
    Unsupported(#[from] Refusal),
    #[error("BLIXT_FORCE_FALLBACK: {0}")]
    ForcedFallback(String),
    #[error("linking kernel functions: {0}")]
    Kfunc(String),
    #[error("BPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("interface {iface}: {message}")]
    Interface { iface: String, message: String },
    #[error("pinning {path}: {message}")]
    Pin { path: PathBuf, message: String },
    #[error("option {field} = {value}: {message}")]
    Option {
        field: &'static str,
        value: u64,
        message: &'static str,
    },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Sizes and placement of the dataplane. Changing a size of a pinned dataplane needs a fresh
/// pin directory (the kernel cannot resize a map).
#[derive(Debug, Clone)]
pub struct DataplaneOptions {
    pub max_frontends: u32,
    pub max_backends: u32,
    /// Slots per Maglev ring; a prime (see blixt_core::maglev).
    pub ring_size: u32,
    pub conntrack_entries: u32,
    /// bpffs directory for maps and links; `None` keeps everything private to this process
    /// (tests), so it all goes away when the [`Dataplane`] is dropped.
    pub pin_dir: Option<PathBuf>,
    /// Where the load balancer runs: XDP, TC, or XDP where it can (auto).
    pub attach: AttachMode,
    /// Capabilities to treat as missing although the kernel has them, so that every fallback
    /// can be exercised on any kernel (tests, `BLIXT_FORCE_FALLBACK`).
    pub force_off: Vec<Capability>,
}

impl Default for DataplaneOptions {
    fn default() -> Self {
        DataplaneOptions {
            max_frontends: 256,
            max_backends: 16384,
            ring_size: blixt_core::maglev::DEFAULT_TABLE_SIZE,
            conntrack_entries: 262_144,
            pin_dir: None,
            attach: AttachMode::Auto,
            force_off: Vec::new(),
        }
    }
}

impl DataplaneOptions {
    /// Adds the capabilities named in `BLIXT_FORCE_FALLBACK` (comma-separated, e.g.
    /// `xdp_adjust_meta,tcx`) to [`DataplaneOptions::force_off`].
    pub fn force_off_from_env(mut self) -> Result<Self, DataplaneError> {
        if let Ok(list) = std::env::var("BLIXT_FORCE_FALLBACK") {
            let forced =
                Capabilities::parse_forced(&list).map_err(DataplaneError::ForcedFallback)?;
            self.force_off.extend(forced);
        }
        Ok(self)
    }

    /// Number of Maglev rings: two per frontend, so a new table is written beside the live one.
    pub fn rings(&self) -> u32 {
        2 * self.max_frontends
    }

    fn validate(&self) -> Result<(), DataplaneError> {
        let bad = |field, value: u32, message| {
            Err(DataplaneError::Option {
                field,
                value: value.into(),
                message,
            })
        };
        if !blixt_core::maglev::is_prime(self.ring_size) {
            return bad("ring_size", self.ring_size, "must be a prime");
        }
        if self.max_frontends == 0 {
            return bad("max_frontends", 0, "must be at least 1");
        }
        if self.max_backends == 0 {
            return bad("max_backends", 0, "must be at least 1");
        }
        if self.conntrack_entries < 16 {
            return bad(
                "conntrack_entries",
                self.conntrack_entries,
                "must be at least 16",
            );
        }
        if u64::from(self.rings()) * u64::from(self.ring_size) > u64::from(u32::MAX / 4) {
            return bad(
                "ring_size",
                self.ring_size,
                "ring_size * 2 * max_frontends slots exceed a BPF array",
            );
        }
        Ok(())
    }
}

/// The Maglev rings, written through a shared mapping of the BPF array (BPF_F_MMAPABLE): a
/// 16k-slot table is one memcpy, not 16k syscalls.
#[derive(Debug)]
pub struct Rings {
    _map: MapData,
    ptr: *mut u32,
    len: usize,
    ring_size: usize,
}

// SAFETY: the mapping is owned by this struct and only reached through &mut self (writes) or
// &self (reads of plain u32s); the BPF side tolerates concurrent reads of a ring being written
// because rings in use are never written (see blixt-agent's reconciler).
unsafe impl Send for Rings {}

impl Rings {
    fn new(map: MapData, slots: usize, ring_size: usize) -> Result<Self, DataplaneError> {
        // two 32-bit slots per 8-byte element (see maps.h)
        let bytes = slots.div_ceil(2) * 8;
        // SAFETY: mmap of a BPF array fd created with BPF_F_MMAPABLE; length within the map.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error().into());
        }
        Ok(Rings {
            _map: map,
            ptr: ptr.cast(),
            len: slots,
            ring_size,
        })
    }

    /// Overwrites ring `ring` with `slots` (exactly ring_size backend ids or SLOT_REJECT).
    pub fn write(&mut self, ring: u32, slots: &[u32]) {
        assert_eq!(slots.len(), self.ring_size, "ring length");
        let start = ring as usize * self.ring_size;
        assert!(
            start + self.ring_size <= self.len,
            "ring {ring} out of range"
        );
        // SAFETY: bounds checked above; the mapping lives as long as self.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), self.ring_size) };
        dst.copy_from_slice(slots);
    }

    /// Reads ring `ring`.
    pub fn read(&self, ring: u32) -> &[u32] {
        let start = ring as usize * self.ring_size;
        assert!(
            start + self.ring_size <= self.len,
            "ring {ring} out of range"
        );
        // SAFETY: bounds checked above; the mapping lives as long as self.
        unsafe { std::slice::from_raw_parts(self.ptr.add(start), self.ring_size) }
    }

    pub fn ring_size(&self) -> usize {
        self.ring_size
    }
}

impl Drop for Rings {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len.div_ceil(2) * 8);
        }
    }
}

/// Typed handles on every map of the dataplane.
pub struct DataplaneMaps {
    pub frontends: HashMap<MapData, FrontendKey, FrontendValue>,
    pub rings: Rings,
    pub backends: Array<MapData, BackendValue>,
    pub conntrack: HashMap<MapData, FlowKey, CtEntry>,
    pub config: Array<MapData, Config>,
    pub frontend_stats: PerCpuArray<MapData, Counters>,
    pub backend_stats: PerCpuArray<MapData, Counters>,
    pub stats: PerCpuArray<MapData, u64>,
    pub vips: HashMap<MapData, VipKey, u32>,
    pub ifaces: HashMap<MapData, u32, Iface>,
}

impl std::fmt::Debug for DataplaneMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataplaneMaps")
            .field("rings", &self.rings)
            .finish_non_exhaustive()
    }
}

/// How the load balancer attached to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachedMode {
    /// XDP in the driver.
    Native,
    /// XDP on the kernel's generic (skb) path: the driver has no XDP.
    Generic,
    /// The load balancer at TC ingress (attach: tc, or auto where XDP could not attach).
    Tc,
}

impl AttachedMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachedMode::Native => "xdp-native",
            AttachedMode::Generic => "xdp-generic",
            AttachedMode::Tc => "tc",
        }
    }
}

/// What one BPF_PROG_TEST_RUN of the load balancer did, in terms common to both hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    /// Back out of the interface it came in on (XDP_TX; TC redirects to the same device).
    Tx,
    /// Out of another interface (XDP_REDIRECT, TC_ACT_REDIRECT).
    Redirect,
    /// Anything else, raw.
    Other(u32),
}

/// The loaded dataplane: programs, maps, links.
#[derive(Debug)]
pub struct Dataplane {
    lb: Ebpf,
    neigh: Option<Ebpf>,
    pub maps: DataplaneMaps,
    pub options: DataplaneOptions,
    capabilities: Capabilities,
    plan: Plan,
    /// Whether blixt_lb_tc has been loaded (it is loaded when the plan or an interface needs it).
    tc_lb_loaded: bool,
    attached: BTreeMap<String, AttachedMode>,
}

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, DataplaneError> {
    ebpf.take_map(name).ok_or(DataplaneError::Map {
        name,
        source: aya::maps::MapError::InvalidName { name: name.into() },
    })
}

/// A program's load error, with a verifier log kept in a file instead of in the message.
fn load_error(name: &'static str, source: ProgramError) -> DataplaneError {
    let ProgramError::LoadError { verifier_log, .. } = &source else {
        return DataplaneError::Program { name, source };
    };
    let text = verifier_log.to_string();
    let summary = text
        .lines()
        .map(str::trim)
        .rfind(|l| {
            !l.is_empty()
                && !["processed ", "verification time", "stack depth"]
                    .iter()
                    .any(|p| l.starts_with(p))
        })
        .unwrap_or("no verifier output")
        .to_string();
    let log =
        std::env::temp_dir().join(format!("blixt-verifier-{name}-{}.log", std::process::id()));
    match fs::write(&log, &text) {
        Ok(()) => DataplaneError::Verifier { name, summary, log },
        Err(_) => DataplaneError::Program { name, source },
    }
}

fn load_xdp(ebpf: &mut Ebpf) -> Result<(), DataplaneError> {
    let prog: &mut Xdp = ebpf
        .program_mut(LB_PROGRAM)
        .expect("blixt_lb in object")
        .try_into()
        .map_err(|source| DataplaneError::Program {
            name: LB_PROGRAM,
            source,
        })?;
    prog.load().map_err(|e| load_error(LB_PROGRAM, e))
}

fn load_classifier(ebpf: &mut Ebpf, name: &'static str) -> Result<(), DataplaneError> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(name)
        .unwrap_or_else(|| panic!("{name} in object"))
        .try_into()
        .map_err(|source| DataplaneError::Program { name, source })?;
    prog.load().map_err(|e| load_error(name, e))
}

impl Dataplane {
    /// Probes the kernel, chooses the dataplane's shape ([`Plan`]) and loads its programs with
    /// the given sizes. With a pin directory, maps already pinned there are reused (conntrack,
    /// counters and tables survive), otherwise created and pinned.
    pub fn load(options: DataplaneOptions) -> Result<Self, DataplaneError> {
        let mut caps = Capabilities::probe();
        for c in &options.force_off {
            caps.force_off(*c);
        }
        Self::load_with(options, caps)
    }

    /// [`Dataplane::load`] with capabilities probed (and forced) by the caller.
    pub fn load_with(
        options: DataplaneOptions,
        capabilities: Capabilities,
    ) -> Result<Self, DataplaneError> {
        options.validate()?;
        let plan = Plan::choose(&capabilities, options.attach)?;
        let slots = options.rings() * options.ring_size;
        let neigh_via_meta = u8::from(plan.neigh_via_meta());
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries("blixt_frontends", options.max_frontends)
            .map_max_entries("blixt_vips", options.max_frontends)
            .map_max_entries("blixt_frontend_stats", options.max_frontends)
            .map_max_entries("blixt_rings", slots.div_ceil(2))
            .map_max_entries("blixt_backends", options.max_backends)
            .map_max_entries("blixt_backend_stats", options.max_backends)
            .map_max_entries("blixt_nexthops", options.max_backends)
            .map_max_entries("blixt_conntrack", options.conntrack_entries)
            .override_global("ring_size", &options.ring_size, true)
            .override_global("neigh_via_meta", &neigh_via_meta, true);
        let (lb_obj, have_kern_ctx) =
            crate::kfunc::link_for_plan(LB_OBJ, &plan).map_err(DataplaneError::Kfunc)?;
        loader.override_global("have_kern_ctx", &have_kern_ctx, true);
        let pin_paths: Vec<(&'static str, PathBuf)> = match &options.pin_dir {
            Some(dir) => {
                check_bpffs(dir)?;
                fs::create_dir_all(dir)?;
                PINNED_MAPS.iter().map(|m| (*m, dir.join(m))).collect()
            }
            None => Vec::new(),
        };
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut lb = loader.load(&lb_obj)?;
        if plan.hook == Hook::Xdp {
            load_xdp(&mut lb)?;
        }
        if plan.tc_load_balancer() {
            load_classifier(&mut lb, LB_TC_PROGRAM)?;
        }
        let neigh = if plan.hook == Hook::Xdp && plan.neigh_via_meta() {
            let mut neigh = EbpfLoader::new().load(NEIGH_OBJ)?;
            load_classifier(&mut neigh, NEIGH_PROGRAM)?;
            Some(neigh)
        } else {
            None
        };

        let rings = match take(&mut lb, "blixt_rings")? {
            Map::Array(data) => Rings::new(data, slots as usize, options.ring_size as usize)?,
            _ => unreachable!("blixt_rings is an array"),
        };
        let maps = DataplaneMaps {
            frontends: HashMap::try_from(take(&mut lb, "blixt_frontends")?)
                .map_err(map_err("blixt_frontends"))?,
            rings,
            backends: Array::try_from(take(&mut lb, "blixt_backends")?)
                .map_err(map_err("blixt_backends"))?,
            conntrack: HashMap::try_from(take(&mut lb, "blixt_conntrack")?)
                .map_err(map_err("blixt_conntrack"))?,
            config: Array::try_from(take(&mut lb, "blixt_config")?)
                .map_err(map_err("blixt_config"))?,
            frontend_stats: PerCpuArray::try_from(take(&mut lb, "blixt_frontend_stats")?)
                .map_err(map_err("blixt_frontend_stats"))?,
            backend_stats: PerCpuArray::try_from(take(&mut lb, "blixt_backend_stats")?)
                .map_err(map_err("blixt_backend_stats"))?,
            stats: PerCpuArray::try_from(take(&mut lb, "blixt_stats")?)
                .map_err(map_err("blixt_stats"))?,
            vips: HashMap::try_from(take(&mut lb, "blixt_vips")?).map_err(map_err("blixt_vips"))?,
            ifaces: HashMap::try_from(take(&mut lb, "blixt_ifaces")?)
                .map_err(map_err("blixt_ifaces"))?,
        };
        let tc_lb_loaded = plan.tc_load_balancer();
        Ok(Dataplane {
            lb,
            neigh,
            maps,
            options,
            capabilities,
            plan,
            tc_lb_loaded,
            attached: BTreeMap::new(),
        })
    }

    /// What the kernel offers, as probed at load (forced fallbacks included).
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// The dataplane's shape on this kernel.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The XDP program, e.g. for BPF_PROG_TEST_RUN. Panics in TC mode (not loaded).
    pub fn lb_program(&mut self) -> &mut Xdp {
        assert_eq!(
            self.plan.hook,
            Hook::Xdp,
            "blixt_lb is loaded in XDP mode only"
        );
        self.lb
            .program_mut(LB_PROGRAM)
            .expect("blixt_lb in object")
            .try_into()
            .expect("blixt_lb is XDP")
    }

    fn tc_lb_program(&mut self) -> Result<&mut SchedClassifier, DataplaneError> {
        if !self.tc_lb_loaded {
            load_classifier(&mut self.lb, LB_TC_PROGRAM)?;
            self.tc_lb_loaded = true;
        }
        Ok(self
            .lb
            .program_mut(LB_TC_PROGRAM)
            .expect("blixt_lb_tc in object")
            .try_into()
            .expect("blixt_lb_tc is a classifier"))
    }

    /// One BPF_PROG_TEST_RUN of the load balancer at the plan's hook, on frame `pkt` arriving
    /// on `ifindex`: the verdict and the frame as the program left it.
    pub fn test_run(
        &mut self,
        pkt: &[u8],
        ifindex: u32,
    ) -> Result<(Verdict, Vec<u8>), DataplaneError> {
        self.test_run_at(self.plan.hook, pkt, ifindex)
    }

    /// [`Dataplane::test_run`] at a given hook: `Hook::Tc` runs blixt_lb_tc (loading it if the
    /// plan did not), e.g. on what XDP passed up.
    pub fn test_run_at(
        &mut self,
        hook: Hook,
        pkt: &[u8],
        ifindex: u32,
    ) -> Result<(Verdict, Vec<u8>), DataplaneError> {
        let mut out = vec![0u8; pkt.len() + 512];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(pkt);
        opts.data_out = Some(&mut out);
        let ctx: Vec<u8>;
        let result = match hook {
            Hook::Xdp => {
                // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress
                let words: [u32; 6] = [0, pkt.len() as u32, 0, ifindex, 0, 0];
                ctx = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
                opts.ctx_in = Some(&ctx);
                self.lb_program().test_run(opts)
            }
            Hook::Tc => {
                // struct __sk_buff (192 bytes): ifindex at 40 picks the device the skb is on
                let mut skb = vec![0u8; 192];
                skb[40..44].copy_from_slice(&ifindex.to_ne_bytes());
                ctx = skb;
                opts.ctx_in = Some(&ctx);
                self.tc_lb_program()?.test_run(opts)
            }
        }
        .map_err(|source| DataplaneError::Program {
            name: match hook {
                Hook::Xdp => LB_PROGRAM,
                Hook::Tc => LB_TC_PROGRAM,
            },
            source,
        })?;
        out.truncate(result.data_size_out as usize);
        let verdict = match (hook, result.return_value) {
            (Hook::Xdp, 1) | (Hook::Tc, 2) => Verdict::Drop,
            (Hook::Xdp, 2) | (Hook::Tc, 0) => Verdict::Pass,
            (Hook::Xdp, 3) => Verdict::Tx,
            (Hook::Xdp, 4) | (Hook::Tc, 7) => Verdict::Redirect,
            (_, v) => Verdict::Other(v),
        };
        Ok((verdict, out))
    }

    fn link_path(&self, kind: &str, iface: &str) -> Option<PathBuf> {
        self.options
            .pin_dir
            .as_ref()
            .map(|d| d.join(format!("link_{kind}_{iface}")))
    }

    /// Attaches the load balancer to `iface` as the plan says: XDP (native mode, generic as
    /// fallback) with a TC companion (neigh_tc, or blixt_lb_tc when XDP has no metadata), or
    /// blixt_lb_tc alone at TC ingress. In `auto`, an interface that takes no XDP at all gets
    /// TC. With a pin directory the links are pinned, and a link pinned by an earlier run is
    /// updated in place (bpf_link_update: the program is swapped atomically, no packet sees no
    /// program, conntrack stays); a link of a hook this run does not use is removed.
    pub fn attach(&mut self, iface: &str) -> Result<AttachedMode, DataplaneError> {
        let mut mode = AttachedMode::Tc;
        if self.plan.hook == Hook::Xdp {
            match self.attach_xdp(iface) {
                Ok(m) => mode = m,
                Err(e) if self.plan.requested == AttachMode::Auto => {
                    tracing::warn!(%iface, "XDP could not attach ({e}); the load balancer runs at TC there");
                }
                Err(e) => return Err(e),
            }
        }
        if mode == AttachedMode::Tc {
            self.detach_pinned("xdp", iface)?;
        }
        let tc_program = if mode != AttachedMode::Tc && self.plan.neigh_via_meta() {
            NEIGH_PROGRAM
        } else {
            LB_TC_PROGRAM
        };
        self.attach_tc(iface, tc_program)?;
        self.attached.insert(iface.to_string(), mode);
        Ok(mode)
    }

    fn attach_xdp(&mut self, iface: &str) -> Result<AttachedMode, DataplaneError> {
        let iface_err = |message: String| DataplaneError::Interface {
            iface: iface.to_string(),
            message,
        };
        let xdp_pin = self.link_path("xdp", iface);
        let prog = self.lb_program();
        let mut mode = AttachedMode::Native;
        let link_id = match xdp_pin.as_deref().filter(|p| p.exists()) {
            Some(path) => {
                let fd_link = adopt_link(path)?;
                prog.attach_to_link(XdpLink::try_from(fd_link).map_err(|e| {
                    iface_err(format!(
                        "pinned XDP link {} is not XDP: {e}",
                        path.display()
                    ))
                })?)
                .map_err(|e| iface_err(format!("replacing the XDP program: {e}")))?
            }
            None => match prog.attach(iface, XdpMode::Driver) {
                Ok(id) => id,
                Err(native) => {
                    mode = AttachedMode::Generic;
                    prog.attach(iface, XdpMode::Skb).map_err(|generic| {
                        iface_err(format!(
                            "attaching XDP failed natively ({native}) and generically ({generic})"
                        ))
                    })?
                }
            },
        };
        if let Some(path) = &xdp_pin {
            let link = prog
                .take_link(link_id)
                .map_err(|e| iface_err(format!("taking the XDP link: {e}")))?;
            let fd_link = FdLink::try_from(link)
                .map_err(|e| iface_err(format!("XDP link is not a bpf_link: {e}")))?;
            pin_link(fd_link, path)?;
        }
        Ok(mode)
    }

    /// Attaches TC classifier `name` (blixt_lb_tc or neigh_tc) at ingress of `iface`: a tcx
    /// link (pinned, or updated in place when pinned by an earlier run), or, without tcx, a
    /// netlink filter on a clsact qdisc at a fixed priority (an earlier run's is replaced).
    fn attach_tc(&mut self, iface: &str, name: &'static str) -> Result<(), DataplaneError> {
        let iface_err = |message: String| DataplaneError::Interface {
            iface: iface.to_string(),
            message,
        };
        let tc_pin = self.link_path("tc", iface).filter(|_| self.plan.tcx);
        let tcx = self.plan.tcx;
        let persistent = self.options.pin_dir.is_some();
        let tc: &mut SchedClassifier = if name == LB_TC_PROGRAM {
            self.tc_lb_program()?
        } else {
            self.neigh
                .as_mut()
                .expect("neigh_tc loaded with XDP metadata")
                .program_mut(NEIGH_PROGRAM)
                .expect("blixt_neigh in object")
                .try_into()
                .expect("blixt_neigh is a classifier")
        };
        if !tcx {
            match aya::programs::tc::qdisc_add_clsact(iface) {
                Ok(()) => {}
                Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(iface_err(format!("adding the clsact qdisc: {e}"))),
            }
            // an earlier run's filter (same priority and handle) gets the new program in place
            // (a change of the existing filter: no moment without one); else a new filter
            let earlier = SchedClassifierLink::attached(
                iface,
                TcAttachType::Ingress,
                TC_NETLINK_PRIORITY,
                TC_NETLINK_HANDLE,
                None,
            )
            .map_err(|e| iface_err(format!("looking up the interface: {e}")))?;
            let id = match tc.attach_to_link(earlier) {
                Ok(id) => id,
                Err(_) => tc
                    .attach_with_options(
                        iface,
                        TcAttachType::Ingress,
                        TcAttachOptions::Netlink(NlOptions {
                            priority: TC_NETLINK_PRIORITY,
                            handle: TC_NETLINK_HANDLE,
                            ..NlOptions::default()
                        }),
                    )
                    .map_err(|e| iface_err(format!("attaching {name} through netlink: {e}")))?,
            };
            if persistent {
                // a netlink filter outlives this process like a pinned link does
                let link = tc
                    .take_link(id)
                    .map_err(|e| iface_err(format!("taking the TC link: {e}")))?;
                std::mem::forget(link);
            }
            return Ok(());
        }
        let tc_id = match tc_pin.as_deref().filter(|p| p.exists()) {
            Some(path) => {
                let fd_link = adopt_link(path)?;
                tc.attach_to_link(SchedClassifierLink::try_from(fd_link).map_err(|e| {
                    iface_err(format!("pinned TC link {} is not TC: {e}", path.display()))
                })?)
                .map_err(|e| iface_err(format!("replacing the TC program: {e}")))?
            }
            None => tc
                .attach(iface, TcAttachType::Ingress)
                .map_err(|e| iface_err(format!("attaching {name}: {e}")))?,
        };
        if let Some(path) = &tc_pin {
            let link = tc
                .take_link(tc_id)
                .map_err(|e| iface_err(format!("taking the TC link: {e}")))?;
            let fd_link = FdLink::try_from(link)
                .map_err(|e| iface_err(format!("TC link is not a bpf_link: {e}")))?;
            pin_link(fd_link, path)?;
        }
        Ok(())
    }

    /// Removes a link an earlier run pinned for a hook this run does not use on `iface`.
    fn detach_pinned(&self, kind: &str, iface: &str) -> Result<(), DataplaneError> {
        if let Some(path) = self.link_path(kind, iface).filter(|p| p.exists()) {
            // unpinned and dropped: the last reference goes, the link detaches
            drop(adopt_link(&path)?);
        }
        Ok(())
    }
    /// Answer (or stop answering) ARP and NDP for announced VIPs on `iface`, with its MAC.
    pub fn announce_on(&mut self, iface: &str, announce: bool) -> Result<(), DataplaneError> {
        let (ifindex, mac) = interface_mac(iface)?;
        let value = Iface {
            mac,
            flags: if announce { IFACE_F_ANNOUNCE } else { 0 },
            pad: 0,
        };
        self.maps
            .ifaces
            .insert(ifindex, value, 0)
            .map_err(map_err("blixt_ifaces"))
    }

    /// Interfaces this process attached to, with the XDP mode.
    pub fn attached(&self) -> &BTreeMap<String, AttachedMode> {
        &self.attached
    }

    /// Detaches everything and removes the pin directory: the dataplane is gone, conntrack too.
    pub fn remove_pinned(pin_dir: &Path) -> Result<(), DataplaneError> {
        if pin_dir.exists() {
            fs::remove_dir_all(pin_dir)?;
        }
        Ok(())
    }
}

/// Index and MAC of an interface of the calling thread's network namespace (ioctl, so it
/// works in a namespace whose /sys belongs to another one).
fn interface_mac(iface: &str) -> Result<(u32, [u8; 6]), DataplaneError> {
    let err = |message: String| DataplaneError::Interface {
        iface: iface.to_string(),
        message,
    };
    let name = std::ffi::CString::new(iface).map_err(|e| err(e.to_string()))?;
    // SAFETY: if_nametoindex reads a valid C string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(err("no such interface".into()));
    }
    // SAFETY: plain socket/ioctl/close on an ifreq we own, zero-initialised, name bounded.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error().into());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, s) in req
            .ifr_name
            .iter_mut()
            .zip(name.as_bytes().iter().take(libc::IFNAMSIZ - 1))
        {
            *d = *s as libc::c_char;
        }
        let rc = libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req);
        let e = io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            return Err(err(format!("reading its MAC: {e}")));
        }
        let sa = req.ifr_ifru.ifru_hwaddr.sa_data;
        Ok((ifindex, std::array::from_fn(|i| sa[i] as u8)))
    }
}

/// Pins only survive on a bpf filesystem; say so plainly instead of failing with ENOENT.
fn check_bpffs(dir: &Path) -> Result<(), DataplaneError> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let mut probe = dir;
    while !probe.exists() {
        probe = probe.parent().unwrap_or(Path::new("/"));
    }
    let c = std::ffi::CString::new(probe.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statfs fills the struct we own from a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error().into());
    }
    if st.f_type as i64 != BPF_FS_MAGIC {
        return Err(DataplaneError::Pin {
            path: dir.to_path_buf(),
            message: format!(
                "{} is not on a bpf filesystem (mount one: mount -t bpf bpf /sys/fs/bpf; note that \
                 `ip netns exec` hides the host's /sys/fs/bpf)",
                probe.display()
            ),
        });
    }
    Ok(())
}

fn adopt_link(path: &Path) -> Result<FdLink, DataplaneError> {
    let pinned = PinnedLink::from_pin(path).map_err(|e| DataplaneError::Pin {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    pinned.unpin().map_err(|e| DataplaneError::Pin {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn pin_link(link: FdLink, path: &Path) -> Result<(), DataplaneError> {
    let pinned = link.pin(path).map_err(|e| DataplaneError::Pin {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    // The pin holds the link; dropping our handle leaves it attached.
    drop(pinned);
    Ok(())
}
