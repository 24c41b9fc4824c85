//! Loading the dataplane: the XDP load balancer and its TC companion, map sizes, pinning under
//! bpffs, attaching (and re-adopting) links so an agent restart or upgrade keeps conntrack.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachType};
use aya::programs::xdp::XdpLink;
use aya::programs::{SchedClassifier, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};

use crate::shared::{
    BackendValue, Config, Counters, CtEntry, FlowKey, FrontendKey, FrontendValue, Iface, VipKey,
    IFACE_F_ANNOUNCE,
};

/// The compiled load-balancer object (lb_xdp.bpf.c).
pub static LB_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb_xdp.o"));
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

/// Name of the XDP program in lb_xdp.bpf.c.
pub const LB_PROGRAM: &str = "blixt_lb";
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
}

impl Default for DataplaneOptions {
    fn default() -> Self {
        DataplaneOptions {
            max_frontends: 256,
            max_backends: 16384,
            ring_size: blixt_core::maglev::DEFAULT_TABLE_SIZE,
            conntrack_entries: 262_144,
            pin_dir: None,
        }
    }
}

impl DataplaneOptions {
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

/// How the XDP program attached to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachedMode {
    Native,
    Generic,
}

/// The loaded dataplane: programs, maps, links.
#[derive(Debug)]
pub struct Dataplane {
    lb: Ebpf,
    neigh: Ebpf,
    pub maps: DataplaneMaps,
    pub options: DataplaneOptions,
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

impl Dataplane {
    /// Loads both programs with the given sizes. With a pin directory, maps already pinned
    /// there are reused (conntrack, counters and tables survive), otherwise created and pinned.
    pub fn load(options: DataplaneOptions) -> Result<Self, DataplaneError> {
        options.validate()?;
        let slots = options.rings() * options.ring_size;
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
            .override_global("ring_size", &options.ring_size, true);
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
        let mut lb = loader.load(LB_OBJ)?;
        let prog: &mut Xdp = lb
            .program_mut(LB_PROGRAM)
            .expect("blixt_lb in object")
            .try_into()
            .map_err(|source| DataplaneError::Program {
                name: LB_PROGRAM,
                source,
            })?;
        prog.load().map_err(|source| DataplaneError::Program {
            name: LB_PROGRAM,
            source,
        })?;

        let mut neigh = EbpfLoader::new().load(NEIGH_OBJ)?;
        let tc: &mut SchedClassifier = neigh
            .program_mut(NEIGH_PROGRAM)
            .expect("blixt_neigh in object")
            .try_into()
            .map_err(|source| DataplaneError::Program {
                name: NEIGH_PROGRAM,
                source,
            })?;
        tc.load().map_err(|source| DataplaneError::Program {
            name: NEIGH_PROGRAM,
            source,
        })?;

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
        Ok(Dataplane {
            lb,
            neigh,
            maps,
            options,
            attached: BTreeMap::new(),
        })
    }

    /// The XDP program, e.g. for BPF_PROG_TEST_RUN.
    pub fn lb_program(&mut self) -> &mut Xdp {
        self.lb
            .program_mut(LB_PROGRAM)
            .expect("blixt_lb in object")
            .try_into()
            .expect("blixt_lb is XDP")
    }

    fn link_path(&self, kind: &str, iface: &str) -> Option<PathBuf> {
        self.options
            .pin_dir
            .as_ref()
            .map(|d| d.join(format!("link_{kind}_{iface}")))
    }

    /// Attaches the XDP program (native mode, generic as fallback) and the TC companion to
    /// `iface`. With a pin directory the links are pinned, and a link pinned by an earlier run
    /// is updated in place (bpf_link_update: the program is swapped atomically, no packet sees
    /// no program, conntrack stays).
    pub fn attach(&mut self, iface: &str) -> Result<AttachedMode, DataplaneError> {
        let iface_err = |message: String| DataplaneError::Interface {
            iface: iface.to_string(),
            message,
        };
        let xdp_pin = self.link_path("xdp", iface);
        let tc_pin = self.link_path("tc", iface);
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

        let tc: &mut SchedClassifier = self
            .neigh
            .program_mut(NEIGH_PROGRAM)
            .expect("blixt_neigh in object")
            .try_into()
            .expect("blixt_neigh is a classifier");
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
                .map_err(|e| iface_err(format!("attaching the TC program: {e}")))?,
        };
        if let Some(path) = &tc_pin {
            let link = tc
                .take_link(tc_id)
                .map_err(|e| iface_err(format!("taking the TC link: {e}")))?;
            let fd_link = FdLink::try_from(link)
                .map_err(|e| iface_err(format!("TC link is not a bpf_link: {e}")))?;
            pin_link(fd_link, path)?;
        }
        self.attached.insert(iface.to_string(), mode);
        Ok(mode)
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
