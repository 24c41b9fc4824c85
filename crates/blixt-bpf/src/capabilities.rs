//! What the running kernel offers the dataplane, found out once at start the way
//! `bpftool feature probe` does: by loading tiny BPF programs and creating tiny maps with raw
//! `bpf(2)` calls, and reading the verifier's words when the kernel refuses.
//!
//! A helper is probed with `call <helper>; r0 = 0; exit` in the program type that would use it.
//! The verifier looks the helper up before it checks the arguments, so a refusal naming the
//! helper ("unknown func", "invalid func", or "program of this type cannot use helper") means
//! missing, and any other refusal (uninitialised arguments, say) means present.
//!
//! Everything is probed without touching the host's interfaces: tcx with a missing device
//! (ifindex 0), the XDP link on the loopback of a throwaway network namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CStr;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// One kernel capability the dataplane may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    /// Kernel BTF (`/sys/kernel/btf/vmlinux`).
    Btf,
    /// `BPF_MAP_TYPE_LRU_HASH`.
    LruHash,
    /// `BPF_MAP_TYPE_PERCPU_ARRAY`.
    PercpuArray,
    /// `BPF_MAP_TYPE_PERCPU_HASH`.
    PercpuHash,
    /// `BPF_MAP_TYPE_ARRAY` with `BPF_F_MMAPABLE`.
    ArrayMmap,
    /// `BPF_PROG_TYPE_XDP` programs load.
    XdpProgram,
    /// Helper `bpf_fib_lookup` in XDP programs.
    XdpFibLookup,
    /// Helper `bpf_xdp_adjust_meta` in XDP programs.
    XdpAdjustMeta,
    /// Helper `bpf_xdp_adjust_tail` in XDP programs.
    XdpAdjustTail,
    /// Helper `bpf_redirect` in XDP programs.
    XdpRedirect,
    /// Helper `bpf_csum_diff` in XDP programs.
    XdpCsumDiff,
    /// Helper `bpf_ktime_get_coarse_ns` in both XDP and TC (sched_cls) programs.
    KtimeCoarse,
    /// `BPF_PROG_TYPE_SCHED_CLS` programs load.
    TcProgram,
    /// Helper `bpf_fib_lookup` in TC programs.
    TcFibLookup,
    /// Helper `bpf_redirect_neigh` in TC programs.
    TcRedirectNeigh,
    /// Helper `bpf_skb_change_tail` in TC programs.
    TcChangeTail,
    /// Helper `bpf_skb_pull_data` in TC programs.
    TcPullData,
    /// Helpers `bpf_l3_csum_replace` and `bpf_l4_csum_replace` in TC programs.
    TcCsumReplace,
    /// TC programs may read `__sk_buff->data_meta`.
    TcDataMeta,
    /// The kfunc `bpf_cast_to_kern_ctx` in TC programs (reads `skb->ip_summed`).
    TcKernCtx,
    /// tcx attachment (`BPF_LINK_CREATE` with `BPF_TCX_INGRESS`).
    Tcx,
    /// XDP attachment through a bpf_link (`BPF_LINK_CREATE` with `BPF_XDP`).
    XdpLink,
    /// `BPF_PROG_TYPE_SK_LOOKUP` programs with helper `bpf_sk_assign`.
    SkLookup,
}

impl Capability {
    /// Every capability, in probing (and report) order.
    pub const ALL: &'static [Capability] = &[
        Capability::Btf,
        Capability::LruHash,
        Capability::PercpuArray,
        Capability::PercpuHash,
        Capability::ArrayMmap,
        Capability::XdpProgram,
        Capability::XdpFibLookup,
        Capability::XdpAdjustMeta,
        Capability::XdpAdjustTail,
        Capability::XdpRedirect,
        Capability::XdpCsumDiff,
        Capability::KtimeCoarse,
        Capability::TcProgram,
        Capability::TcFibLookup,
        Capability::TcRedirectNeigh,
        Capability::TcChangeTail,
        Capability::TcPullData,
        Capability::TcCsumReplace,
        Capability::TcDataMeta,
        Capability::TcKernCtx,
        Capability::Tcx,
        Capability::XdpLink,
        Capability::SkLookup,
    ];

    /// Stable snake_case name: a Prometheus label value and a `BLIXT_FORCE_FALLBACK` entry.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Btf => "btf",
            Capability::LruHash => "lru_hash",
            Capability::PercpuArray => "percpu_array",
            Capability::PercpuHash => "percpu_hash",
            Capability::ArrayMmap => "array_mmap",
            Capability::XdpProgram => "xdp_program",
            Capability::XdpFibLookup => "xdp_fib_lookup",
            Capability::XdpAdjustMeta => "xdp_adjust_meta",
            Capability::XdpAdjustTail => "xdp_adjust_tail",
            Capability::XdpRedirect => "xdp_redirect",
            Capability::XdpCsumDiff => "xdp_csum_diff",
            Capability::KtimeCoarse => "ktime_coarse",
            Capability::TcProgram => "tc_program",
            Capability::TcFibLookup => "tc_fib_lookup",
            Capability::TcRedirectNeigh => "tc_redirect_neigh",
            Capability::TcChangeTail => "tc_change_tail",
            Capability::TcPullData => "tc_pull_data",
            Capability::TcCsumReplace => "tc_csum_replace",
            Capability::TcDataMeta => "tc_data_meta",
            Capability::TcKernCtx => "tc_kern_ctx",
            Capability::Tcx => "tcx",
            Capability::XdpLink => "xdp_link",
            Capability::SkLookup => "sk_lookup",
        }
    }

    /// The capability with this [`Capability::name`].
    pub fn from_name(name: &str) -> Option<Capability> {
        Capability::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// What it is, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Capability::Btf => "kernel BTF (/sys/kernel/btf/vmlinux)",
            Capability::LruHash => "BPF_MAP_TYPE_LRU_HASH maps",
            Capability::PercpuArray => "BPF_MAP_TYPE_PERCPU_ARRAY maps",
            Capability::PercpuHash => "BPF_MAP_TYPE_PERCPU_HASH maps",
            Capability::ArrayMmap => "BPF_MAP_TYPE_ARRAY maps with BPF_F_MMAPABLE",
            Capability::XdpProgram => "XDP programs (BPF_PROG_TYPE_XDP)",
            Capability::XdpFibLookup => "bpf_fib_lookup in XDP programs",
            Capability::XdpAdjustMeta => "bpf_xdp_adjust_meta in XDP programs",
            Capability::XdpAdjustTail => "bpf_xdp_adjust_tail in XDP programs",
            Capability::XdpRedirect => "bpf_redirect in XDP programs",
            Capability::XdpCsumDiff => "bpf_csum_diff in XDP programs",
            Capability::KtimeCoarse => "bpf_ktime_get_coarse_ns in XDP and TC programs",
            Capability::TcProgram => "TC programs (BPF_PROG_TYPE_SCHED_CLS)",
            Capability::TcFibLookup => "bpf_fib_lookup in TC programs",
            Capability::TcRedirectNeigh => "bpf_redirect_neigh in TC programs",
            Capability::TcChangeTail => "bpf_skb_change_tail in TC programs",
            Capability::TcPullData => "bpf_skb_pull_data in TC programs",
            Capability::TcCsumReplace => {
                "bpf_l3_csum_replace and bpf_l4_csum_replace in TC programs"
            }
            Capability::TcDataMeta => "__sk_buff->data_meta in TC programs",
            Capability::TcKernCtx => {
                "the kfunc bpf_cast_to_kern_ctx in TC programs (reads skb->ip_summed)"
            }
            Capability::Tcx => "tcx attachment (BPF_LINK_CREATE with BPF_TCX_INGRESS)",
            Capability::XdpLink => "XDP attachment through bpf_link (BPF_LINK_CREATE with BPF_XDP)",
            Capability::SkLookup => {
                "sk_lookup programs (BPF_PROG_TYPE_SK_LOOKUP) with bpf_sk_assign"
            }
        }
    }

    /// The upstream kernel release that introduced it (from bcc's docs/kernel-versions.md and
    /// the commits named there; a helper's version is when the program type got it).
    pub fn since(self) -> &'static str {
        match self {
            // kernel/bpf/sysfs_btf.c, 341dfcf8d78e "btf: expose BTF info through sysfs"
            Capability::Btf => "5.4",
            Capability::LruHash => "4.10",
            Capability::PercpuArray => "4.6",
            Capability::PercpuHash => "4.6",
            // fc9702273e2e "bpf: Add mmap() support for BPF_MAP_TYPE_ARRAY"
            Capability::ArrayMmap => "5.5",
            Capability::XdpProgram => "4.8",
            Capability::XdpFibLookup => "4.18",
            Capability::XdpAdjustMeta => "4.15",
            Capability::XdpAdjustTail => "4.18",
            // bpf_redirect itself is 4.4 (TC); XDP got it with XDP_REDIRECT
            Capability::XdpRedirect => "4.14",
            // bpf_csum_diff itself is 4.6 (TC); 205c380778d0 "bpf: add csum_diff helper to xdp as well"
            Capability::XdpCsumDiff => "4.16",
            Capability::KtimeCoarse => "5.11",
            Capability::TcProgram => "4.1",
            Capability::TcFibLookup => "4.18",
            Capability::TcRedirectNeigh => "5.10",
            Capability::TcChangeTail => "4.9",
            Capability::TcPullData => "4.9",
            Capability::TcCsumReplace => "4.1",
            // de8f3a83b0a0 "bpf: add meta pointer for direct access" (with bpf_xdp_adjust_meta)
            Capability::TcDataMeta => "4.15",
            // fd7c211d6875 "bpf: Add a kfunc to type cast from bpf uapi ctx to kernel ctx"
            Capability::TcKernCtx => "6.3",
            Capability::Tcx => "6.6",
            // aa8d3a716b59 "bpf, xdp: Add bpf_link-based XDP attachment API"
            Capability::XdpLink => "5.9",
            Capability::SkLookup => "5.9",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Reason given for every capability that could not be probed because `bpf(2)` said EPERM.
pub const EPERM_REASON: &str = "EPERM: probing needs root (CAP_BPF, CAP_NET_ADMIN)";

/// Reason given by [`Capabilities::reason`] for a capability forced off.
pub const FORCED_REASON: &str = "forced off by BLIXT_FORCE_FALLBACK";

/// What the running kernel offers the dataplane, minus what was forced off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// `uname -r`.
    pub kernel_release: String,
    present: BTreeMap<Capability, bool>,
    /// Why each missing capability is missing: the verifier's / syscall's own words (one line,
    /// e.g. "program of this type cannot use helper bpf_xdp_adjust_meta#54" or "EINVAL from
    /// BPF_MAP_CREATE").
    reasons: BTreeMap<Capability, String>,
    /// Capabilities turned off on purpose (forced fallbacks), not by the kernel.
    forced: BTreeSet<Capability>,
}

impl Capabilities {
    /// Probes every capability in [`Capability::ALL`] on the running kernel. Never panics;
    /// what could not be probed (EPERM when not root, say) is reported missing, with why.
    pub fn probe() -> Capabilities {
        let mut caps = Capabilities {
            kernel_release: kernel_release(),
            present: BTreeMap::new(),
            reasons: BTreeMap::new(),
            forced: BTreeSet::new(),
        };
        let mut prober = Prober::new();
        for &c in Capability::ALL {
            let result = prober.probe(c);
            caps.set(c, result);
        }
        caps
    }

    /// [`Capabilities::probe`], then [`Capabilities::force_off`] for each capability named in
    /// the environment variable `BLIXT_FORCE_FALLBACK` (comma-separated), if it is set.
    pub fn probe_with_env() -> Result<Capabilities, String> {
        let list = match std::env::var("BLIXT_FORCE_FALLBACK") {
            Ok(list) => Some(list),
            Err(std::env::VarError::NotPresent) => None,
            Err(e) => return Err(format!("BLIXT_FORCE_FALLBACK: {e}")),
        };
        let forced = match &list {
            Some(list) => Capabilities::parse_forced(list)?,
            None => Vec::new(),
        };
        let mut caps = Capabilities::probe();
        for c in forced {
            caps.force_off(c);
        }
        Ok(caps)
    }

    /// A fixed set for unit tests of code that consumes capabilities: everything present.
    pub fn all_present(kernel_release: &str) -> Capabilities {
        Capabilities {
            kernel_release: kernel_release.to_string(),
            present: Capability::ALL.iter().map(|&c| (c, true)).collect(),
            reasons: BTreeMap::new(),
            forced: BTreeSet::new(),
        }
    }

    /// Present in the kernel and not forced off: the dataplane may use it.
    pub fn has(&self, c: Capability) -> bool {
        self.kernel_has(c) && !self.forced.contains(&c)
    }

    /// Present in the kernel, whether or not it was forced off.
    pub fn kernel_has(&self, c: Capability) -> bool {
        self.present.get(&c).copied().unwrap_or(false)
    }

    /// The capabilities forced off.
    pub fn forced(&self) -> &BTreeSet<Capability> {
        &self.forced
    }

    /// Why `c` cannot be used: [`FORCED_REASON`] if forced off, else the kernel's words; `None`
    /// when it can be used.
    pub fn reason(&self, c: Capability) -> Option<&str> {
        if self.forced.contains(&c) {
            return Some(FORCED_REASON);
        }
        if self.kernel_has(c) {
            return None;
        }
        Some(
            self.reasons
                .get(&c)
                .map(String::as_str)
                .unwrap_or("not probed"),
        )
    }

    /// Turns `c` off whatever the kernel offers (a forced fallback).
    pub fn force_off(&mut self, c: Capability) {
        self.forced.insert(c);
    }

    /// Parses a comma-separated list of capability names (the `BLIXT_FORCE_FALLBACK` format;
    /// blanks around names and empty entries are ignored, repeats are dropped).
    pub fn parse_forced(list: &str) -> Result<Vec<Capability>, String> {
        let mut out = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let Some(c) = Capability::from_name(name) else {
                let valid: Vec<&str> = Capability::ALL.iter().map(|c| c.name()).collect();
                return Err(format!(
                    "unknown capability {name:?} in BLIXT_FORCE_FALLBACK; valid names: {}",
                    valid.join(", ")
                ));
            };
            if !out.contains(&c) {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// One line per capability, names aligned: `xdp_adjust_meta  no   (program of this type
    /// cannot use helper bpf_xdp_adjust_meta#54)`; "yes", "no", or "off" (forced off).
    pub fn report_lines(&self) -> Vec<String> {
        let width = Capability::ALL
            .iter()
            .map(|c| c.name().len())
            .max()
            .unwrap_or(0);
        Capability::ALL
            .iter()
            .map(|&c| {
                let name = c.name();
                if self.forced.contains(&c) {
                    let kernel = if self.kernel_has(c) {
                        String::new()
                    } else {
                        format!("; kernel: {}", self.reasons.get(&c).map_or("", |r| r))
                    };
                    format!("{name:<width$}  off  ({FORCED_REASON}{kernel})")
                } else if self.kernel_has(c) {
                    format!("{name:<width$}  yes")
                } else {
                    format!("{name:<width$}  no   ({})", self.reason(c).unwrap_or(""))
                }
            })
            .collect()
    }

    /// `(capability, usable)` for every capability in [`Capability::ALL`] order, usable being
    /// [`Capabilities::has`] (false when missing or forced off): the metrics' view.
    pub fn iter(&self) -> impl Iterator<Item = (Capability, bool)> + '_ {
        Capability::ALL.iter().map(move |&c| (c, self.has(c)))
    }

    fn set(&mut self, c: Capability, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.present.insert(c, true);
                self.reasons.remove(&c);
            }
            Err(reason) => {
                self.present.insert(c, false);
                self.reasons.insert(c, reason);
            }
        }
    }
}

/// `uname -r`, or "unknown" if uname fails.
fn kernel_release() -> String {
    // SAFETY: utsname is plain bytes; zeroed is a valid value and uname fills it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname writes only into the struct we own.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return "unknown".to_string();
    }
    // SAFETY: uname NUL-terminates release within its 65 bytes (zeroed beforehand too).
    let release = unsafe { CStr::from_ptr(uts.release.as_ptr()) };
    release.to_string_lossy().into_owned()
}

// ---- the bpf(2) ABI (include/uapi/linux/bpf.h); libc has none of these ----

// enum bpf_cmd
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;

// enum bpf_map_type
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
// map_flags
const BPF_F_MMAPABLE: u32 = 1 << 10;

// enum bpf_prog_type
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_PROG_TYPE_SK_LOOKUP: u32 = 30;

// enum bpf_attach_type
const BPF_SK_LOOKUP: u32 = 36;
const BPF_XDP: u32 = 37;
const BPF_TCX_INGRESS: u32 = 46;

// enum bpf_func_id
const BPF_FUNC_L3_CSUM_REPLACE: i32 = 10;
const BPF_FUNC_L4_CSUM_REPLACE: i32 = 11;
const BPF_FUNC_REDIRECT: i32 = 23;
const BPF_FUNC_CSUM_DIFF: i32 = 28;
const BPF_FUNC_SKB_CHANGE_TAIL: i32 = 38;
const BPF_FUNC_SKB_PULL_DATA: i32 = 39;
const BPF_FUNC_XDP_ADJUST_META: i32 = 54;
const BPF_FUNC_XDP_ADJUST_TAIL: i32 = 65;
const BPF_FUNC_FIB_LOOKUP: i32 = 69;
const BPF_FUNC_SK_ASSIGN: i32 = 124;
const BPF_FUNC_REDIRECT_NEIGH: i32 = 152;
const BPF_FUNC_KTIME_GET_COARSE_NS: i32 = 160;

// XDP_FLAGS_SKB_MODE (include/uapi/linux/if_link.h): generic XDP, which loopback supports.
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
// TCX_NEXT (enum tcx_action_base)
const TCX_NEXT: i32 = -1;
// XDP_PASS (enum xdp_action)
const XDP_PASS: i32 = 2;
// offsetof(struct __sk_buff, data_meta)
const SKB_DATA_META_OFF: i16 = 140;

const VERIFIER_LOG_SIZE: usize = 64 * 1024;

/// struct bpf_insn: code, dst_reg:4 | src_reg:4, off, imm.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    /// `call imm` (BPF_JMP | BPF_CALL).
    const fn call(helper: i32) -> Insn {
        Insn {
            code: 0x85,
            regs: 0,
            off: 0,
            imm: helper,
        }
    }

    /// `call` of the kfunc with BTF id `id` in the kernel's BTF (src_reg
    /// BPF_PSEUDO_KFUNC_CALL).
    const fn kfunc_call(id: u32) -> Insn {
        Insn {
            code: 0x85,
            regs: 2 << 4,
            off: 0,
            imm: id as i32,
        }
    }

    /// `dst = imm` (BPF_ALU64 | BPF_MOV | BPF_K).
    const fn mov64_imm(dst: u8, imm: i32) -> Insn {
        Insn {
            code: 0xb7,
            regs: dst & 0xf,
            off: 0,
            imm,
        }
    }

    /// `dst = *(u32 *)(src + off)` (BPF_LDX | BPF_MEM | BPF_W).
    const fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
        Insn {
            code: 0x61,
            regs: (dst & 0xf) | ((src & 0xf) << 4),
            off,
            imm: 0,
        }
    }

    /// `exit` (BPF_JMP | BPF_EXIT).
    const fn exit() -> Insn {
        Insn {
            code: 0x95,
            regs: 0,
            off: 0,
            imm: 0,
        }
    }
}

/// union bpf_attr for BPF_PROG_LOAD, up to expected_attach_type; the kernel zero-fills the rest.
#[repr(C)]
#[derive(Debug, Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// union bpf_attr for BPF_MAP_CREATE, up to map_flags.
#[repr(C)]
#[derive(Debug, Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// union bpf_attr for BPF_LINK_CREATE, up to flags.
#[repr(C)]
#[derive(Debug, Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// `bpf(cmd, attr, sizeof *attr)`: the new fd, or the errno.
fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> Result<OwnedFd, i32> {
    // SAFETY: attr is a #[repr(C)] prefix of union bpf_attr that we own, of the size passed;
    // every pointer inside it (instructions, license, log) outlives the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if rc < 0 {
        return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: a successful BPF_MAP_CREATE / BPF_PROG_LOAD / BPF_LINK_CREATE returns a new fd
    // that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) })
}

/// The usual name of an errno the bpf(2) calls here return.
fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        524 => "ENOTSUPP",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

/// What a program load came to.
enum Load {
    Loaded(#[allow(dead_code, reason = "held only to be closed on drop")] OwnedFd),
    Refused { errno: i32, log: String },
}

/// The line of a verifier log that says a helper is not there for this program type: "unknown
/// func" (old kernels), "invalid func" (newer) or "cannot use helper" (a helper the kernel has
/// but does not give this program type).
fn helper_refusal(log: &str) -> Option<&str> {
    log.lines().map(str::trim).find(|l| {
        l.contains("unknown func") || l.contains("invalid func") || l.contains("cannot use helper")
    })
}

/// Why the verifier refused: the last line of its log that is neither an instruction or state
/// dump ("0: (61) r2 = ...", "0: R1=ctx() R10=fp0") nor the closing tally ("processed N insns",
/// "verification time", "stack depth").
fn verifier_complaint(log: &str) -> Option<&str> {
    log.lines().map(str::trim).rfind(|l| {
        let dump = l
            .split_once(": ")
            .is_some_and(|(pc, _)| !pc.is_empty() && pc.bytes().all(|b| b.is_ascii_digit()));
        let tally = ["processed ", "verification time", "stack depth"]
            .iter()
            .any(|t| l.starts_with(t));
        !l.is_empty() && !dump && !tally
    })
}

/// "EINVAL from BPF_PROG_LOAD: <last verifier line>", or [`EPERM_REASON`].
fn refusal_reason(what: &str, errno: i32, log: &str) -> String {
    if errno == libc::EPERM {
        return EPERM_REASON.to_string();
    }
    match verifier_complaint(log) {
        Some(line) => format!("{} from {what}: {line}", errno_name(errno)),
        None => format!("{} from {what}", errno_name(errno)),
    }
}

/// Loads programs with one reusable verifier log buffer.
struct Prober {
    log: Vec<u8>,
}

impl Prober {
    fn new() -> Prober {
        Prober {
            log: vec![0; VERIFIER_LOG_SIZE],
        }
    }

    fn load(&mut self, prog_type: u32, expected_attach_type: u32, insns: &[Insn]) -> Load {
        const LICENSE: &CStr = c"GPL";
        self.log[0] = 0;
        // no prog_name, so kernels older than the field (4.15) take the attr as well
        let mut attr = ProgLoadAttr {
            prog_type,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: LICENSE.as_ptr() as u64,
            log_level: 1,
            log_size: self.log.len() as u32,
            log_buf: self.log.as_mut_ptr() as u64,
            expected_attach_type,
            ..ProgLoadAttr::default()
        };
        match sys_bpf(BPF_PROG_LOAD, &mut attr) {
            Ok(fd) => Load::Loaded(fd),
            Err(errno) => {
                let end = self
                    .log
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(self.log.len());
                let log = String::from_utf8_lossy(&self.log[..end]).into_owned();
                Load::Refused { errno, log }
            }
        }
    }

    /// Loads a program that must load as is: the fd, or why not.
    fn load_whole(
        &mut self,
        prog_type: u32,
        expected_attach_type: u32,
        insns: &[Insn],
    ) -> Result<OwnedFd, String> {
        match self.load(prog_type, expected_attach_type, insns) {
            Load::Loaded(fd) => Ok(fd),
            Load::Refused { errno, log } => Err(refusal_reason("BPF_PROG_LOAD", errno, &log)),
        }
    }

    /// Whether programs of `prog_type` may call `helper` (see the module docs).
    fn helper(
        &mut self,
        prog_type: u32,
        expected_attach_type: u32,
        helper: i32,
    ) -> Result<(), String> {
        let insns = [Insn::call(helper), Insn::mov64_imm(0, 0), Insn::exit()];
        match self.load(prog_type, expected_attach_type, &insns) {
            Load::Loaded(_) => Ok(()),
            Load::Refused {
                errno: libc::EPERM, ..
            } => Err(EPERM_REASON.to_string()),
            Load::Refused { errno, log } => {
                if let Some(line) = helper_refusal(&log) {
                    Err(line.to_string())
                } else if log.trim().is_empty() {
                    // refused before the verifier ran: the program type itself is unknown
                    Err(refusal_reason("BPF_PROG_LOAD", errno, &log))
                } else {
                    // the verifier found the helper and refused something else (the arguments)
                    Ok(())
                }
            }
        }
    }

    fn probe(&mut self, c: Capability) -> Result<(), String> {
        const XDP: u32 = BPF_PROG_TYPE_XDP;
        const TC: u32 = BPF_PROG_TYPE_SCHED_CLS;
        match c {
            Capability::Btf => probe_btf(),
            Capability::LruHash => probe_map(BPF_MAP_TYPE_LRU_HASH, 0),
            Capability::PercpuArray => probe_map(BPF_MAP_TYPE_PERCPU_ARRAY, 0),
            Capability::PercpuHash => probe_map(BPF_MAP_TYPE_PERCPU_HASH, 0),
            Capability::ArrayMmap => probe_map(BPF_MAP_TYPE_ARRAY, BPF_F_MMAPABLE),
            Capability::XdpProgram => self.xdp_pass().map(drop),
            Capability::XdpFibLookup => self.helper(XDP, 0, BPF_FUNC_FIB_LOOKUP),
            Capability::XdpAdjustMeta => self.helper(XDP, 0, BPF_FUNC_XDP_ADJUST_META),
            Capability::XdpAdjustTail => self.helper(XDP, 0, BPF_FUNC_XDP_ADJUST_TAIL),
            Capability::XdpRedirect => self.helper(XDP, 0, BPF_FUNC_REDIRECT),
            Capability::XdpCsumDiff => self.helper(XDP, 0, BPF_FUNC_CSUM_DIFF),
            Capability::KtimeCoarse => {
                let xdp = self.helper(XDP, 0, BPF_FUNC_KTIME_GET_COARSE_NS);
                let tc = self.helper(TC, 0, BPF_FUNC_KTIME_GET_COARSE_NS);
                let in_type = |e: String, ty: &str| {
                    if e == EPERM_REASON {
                        e
                    } else {
                        format!("{e} (in {ty})")
                    }
                };
                match (xdp, tc) {
                    (Ok(()), Ok(())) => Ok(()),
                    (Err(e), _) => Err(in_type(e, "XDP")),
                    (Ok(()), Err(e)) => Err(in_type(e, "sched_cls")),
                }
            }
            Capability::TcProgram => self.tc_next().map(drop),
            Capability::TcFibLookup => self.helper(TC, 0, BPF_FUNC_FIB_LOOKUP),
            Capability::TcRedirectNeigh => self.helper(TC, 0, BPF_FUNC_REDIRECT_NEIGH),
            Capability::TcChangeTail => self.helper(TC, 0, BPF_FUNC_SKB_CHANGE_TAIL),
            Capability::TcPullData => self.helper(TC, 0, BPF_FUNC_SKB_PULL_DATA),
            Capability::TcCsumReplace => {
                self.helper(TC, 0, BPF_FUNC_L3_CSUM_REPLACE)?;
                self.helper(TC, 0, BPF_FUNC_L4_CSUM_REPLACE)
            }
            Capability::TcDataMeta => {
                let insns = [
                    Insn::ldx_w(2, 1, SKB_DATA_META_OFF),
                    Insn::mov64_imm(0, 0),
                    Insn::exit(),
                ];
                self.load_whole(TC, 0, &insns).map(drop)
            }
            Capability::TcKernCtx => {
                // r1 = ctx already; bpf_cast_to_kern_ctx(ctx); return 0
                let id = crate::kfunc::cast_to_kern_ctx_id()?;
                let insns = [Insn::kfunc_call(id), Insn::mov64_imm(0, 0), Insn::exit()];
                self.load_whole(TC, 0, &insns).map(drop)
            }
            Capability::Tcx => {
                let prog = self.tc_next()?;
                probe_tcx(&prog)
            }
            Capability::XdpLink => {
                let prog = self.xdp_pass()?;
                probe_xdp_link(&prog)
            }
            Capability::SkLookup => {
                // r1 = ctx already; bpf_sk_assign(ctx, NULL, 0); return SK_DROP: loads whole
                let insns = [
                    Insn::mov64_imm(2, 0),
                    Insn::mov64_imm(3, 0),
                    Insn::call(BPF_FUNC_SK_ASSIGN),
                    Insn::mov64_imm(0, 0),
                    Insn::exit(),
                ];
                match self.load(BPF_PROG_TYPE_SK_LOOKUP, BPF_SK_LOOKUP, &insns) {
                    Load::Loaded(_) => Ok(()),
                    Load::Refused { errno, log } => Err(match helper_refusal(&log) {
                        Some(line) => line.to_string(),
                        None => refusal_reason("BPF_PROG_LOAD", errno, &log),
                    }),
                }
            }
        }
    }

    /// `return XDP_PASS`.
    fn xdp_pass(&mut self) -> Result<OwnedFd, String> {
        let insns = [Insn::mov64_imm(0, XDP_PASS), Insn::exit()];
        self.load_whole(BPF_PROG_TYPE_XDP, 0, &insns)
    }

    /// `return TCX_NEXT`.
    fn tc_next(&mut self) -> Result<OwnedFd, String> {
        let insns = [Insn::mov64_imm(0, TCX_NEXT), Insn::exit()];
        self.load_whole(BPF_PROG_TYPE_SCHED_CLS, 0, &insns)
    }
}

/// A one-entry map of `map_type` (4-byte keys and values) can be created.
fn probe_map(map_type: u32, map_flags: u32) -> Result<(), String> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        map_flags,
    };
    match sys_bpf(BPF_MAP_CREATE, &mut attr) {
        Ok(_fd) => Ok(()),
        Err(errno) => Err(refusal_reason("BPF_MAP_CREATE", errno, "")),
    }
}

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Kernel BTF: `/sys/kernel/btf/vmlinux` readable and starting with the BTF magic.
fn probe_btf() -> Result<(), String> {
    use std::io::Read;
    let mut magic = [0u8; 2];
    std::fs::File::open(VMLINUX_BTF)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|e| format!("{VMLINUX_BTF}: {e}"))?;
    // BTF_MAGIC 0xeB9F, in the kernel's (here: host) byte order
    if u16::from_ne_bytes(magic) != 0xeb9f {
        return Err(format!("{VMLINUX_BTF}: no BTF magic"));
    }
    Ok(())
}

/// tcx: BPF_LINK_CREATE of a sched_cls program with BPF_TCX_INGRESS on ifindex 0, which no
/// device has, so nothing is attached anywhere.
///
/// With tcx (6.6+), link_create() (kernel/bpf/syscall.c) checks the attach type against the
/// program (bpf_prog_attach_check_attach_type: sched_cls takes BPF_TCX_* and BPF_NETKIT_*) and
/// hands it to tcx_link_attach() (kernel/bpf/tcx.c), whose `__dev_get_by_index(net,
/// target_ifindex)` fails: ENODEV. Before 6.6 attach type 46 is unknown, so
/// attach_type_to_prog_type() gives BPF_PROG_TYPE_UNSPEC and link_create() answers EINVAL (and
/// before 5.7 BPF_LINK_CREATE itself is an unknown command: EINVAL too).
fn probe_tcx(prog: &OwnedFd) -> Result<(), String> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: 0,
        attach_type: BPF_TCX_INGRESS,
        flags: 0,
    };
    match sys_bpf(BPF_LINK_CREATE, &mut attr) {
        // cannot happen with ifindex 0; the link (if any) is closed right here
        Ok(_link) => Ok(()),
        Err(libc::ENODEV) => Ok(()),
        Err(libc::EPERM) => Err(EPERM_REASON.to_string()),
        Err(errno) => Err(format!(
            "{} from BPF_LINK_CREATE with BPF_TCX_INGRESS",
            errno_name(errno)
        )),
    }
}

/// XDP link: BPF_LINK_CREATE with BPF_XDP (generic mode) on the loopback of a network namespace
/// of its own, made for the probe by a short-lived thread and gone when it ends.
///
/// A missing device cannot tell us here: bpf_xdp_link_attach() (net/core/dev.c) answers
/// `dev_get_by_index() == NULL` with EINVAL, the very errno older kernels give for the unknown
/// attach type BPF_XDP (attach_type_to_prog_type() → UNSPEC → EINVAL in link_create()). So the
/// probe attaches for real, to a loopback nobody else sees, and closes the link at once. Where
/// the namespace cannot be made (no CAP_SYS_ADMIN), kernel BTF decides: struct bpf_xdp_link
/// came with the feature.
fn probe_xdp_link(prog: &OwnedFd) -> Result<(), String> {
    let prog_fd = prog.as_raw_fd();
    // Builder::spawn_scoped rather than Scope::spawn, which panics if no thread can be made
    let outcome = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("blixt-probe".into())
            .spawn_scoped(s, || xdp_link_in_scratch_netns(prog_fd))
            .ok()
            .and_then(|t| t.join().ok())
    });
    match outcome {
        Some(Some(result)) => result,
        // no namespace (or no thread): fall back on BTF
        Some(None) | None => xdp_link_from_btf(),
    }
}

/// On this thread only: a new network namespace, then the XDP link on its loopback. `None` if
/// the namespace could not be made.
fn xdp_link_in_scratch_netns(prog_fd: RawFd) -> Option<Result<(), String>> {
    // SAFETY: unshare(CLONE_NEWNET) only moves the calling thread (this probe thread, which
    // ends right after) into a new network namespace; no memory is involved.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return None;
    }
    // SAFETY: a valid NUL-terminated name; the lookup happens in this thread's namespace.
    let lo = match unsafe { libc::if_nametoindex(c"lo".as_ptr()) } {
        0 => 1, // LOOPBACK_IFINDEX
        i => i,
    };
    let mut attr = LinkCreateAttr {
        prog_fd: prog_fd as u32,
        target_ifindex: lo,
        attach_type: BPF_XDP,
        flags: XDP_FLAGS_SKB_MODE,
    };
    Some(match sys_bpf(BPF_LINK_CREATE, &mut attr) {
        // dropping the link detaches the program; the namespace goes with the thread
        Ok(_link) => Ok(()),
        Err(libc::EPERM) => Err(EPERM_REASON.to_string()),
        Err(errno) => Err(format!(
            "{} from BPF_LINK_CREATE with BPF_XDP on a scratch loopback",
            errno_name(errno)
        )),
    })
}

/// XDP links from kernel BTF: the string `bpf_xdp_link` (the link's struct) among its names.
fn xdp_link_from_btf() -> Result<(), String> {
    let not_verified = "unshare(CLONE_NEWNET) failed, so BPF_LINK_CREATE with BPF_XDP could not \
                        be tried on a scratch loopback";
    let btf = std::fs::read(VMLINUX_BTF)
        .map_err(|e| format!("{not_verified}, and {VMLINUX_BTF}: {e}"))?;
    if btf_has_name(&btf, b"bpf_xdp_link") {
        Ok(())
    } else {
        Err(format!(
            "{not_verified}, and kernel BTF has no bpf_xdp_link"
        ))
    }
}

/// Whether the string section of a raw BTF blob holds `name`.
fn btf_has_name(btf: &[u8], name: &[u8]) -> bool {
    // struct btf_header: magic u16, version u8, flags u8, hdr_len u32, type_off u32,
    // type_len u32, str_off u32, str_len u32 (offsets relative to the end of the header)
    let u32_at = |at: usize| -> Option<usize> {
        let b: [u8; 4] = btf.get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_ne_bytes(b) as usize)
    };
    let strings = (|| {
        let hdr_len = u32_at(4)?;
        let start = hdr_len.checked_add(u32_at(16)?)?;
        btf.get(start..start.checked_add(u32_at(20)?)?)
    })();
    strings.unwrap_or(btf).split(|&b| b == 0).any(|s| s == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need_root() {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            panic!("this test probes the real kernel and needs root (euid 0), not euid {euid}");
        }
    }

    #[test]
    fn attr_layouts_match_the_uapi() {
        // offsetof(union bpf_attr, ...) in include/uapi/linux/bpf.h
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, log_buf), 32);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, prog_ifindex), 64);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(std::mem::size_of::<ProgLoadAttr>(), 72);
        assert_eq!(std::mem::offset_of!(MapCreateAttr, map_flags), 16);
        assert_eq!(std::mem::offset_of!(LinkCreateAttr, attach_type), 8);
        assert_eq!(std::mem::size_of::<Insn>(), 8);
    }

    #[test]
    fn names_are_unique_snake_case_and_round_trip() {
        let mut seen = BTreeSet::new();
        for &c in Capability::ALL {
            let name = c.name();
            assert!(seen.insert(name), "{name} twice");
            assert!(
                name.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'),
                "{name} is not snake_case"
            );
            assert_eq!(Capability::from_name(name), Some(c));
            assert!(!c.describe().is_empty());
            let (major, minor) = c.since().split_once('.').expect("since is major.minor");
            assert!(major.parse::<u32>().is_ok() && minor.parse::<u32>().is_ok());
        }
        assert_eq!(Capability::ALL.len(), 23);
        assert_eq!(Capability::XdpAdjustMeta.name(), "xdp_adjust_meta");
        assert_eq!(Capability::XdpAdjustMeta.since(), "4.15");
    }

    #[test]
    fn parse_forced_reads_the_list() {
        assert_eq!(Capabilities::parse_forced(""), Ok(vec![]));
        assert_eq!(
            Capabilities::parse_forced(" xdp_adjust_meta , tcx,,xdp_adjust_meta"),
            Ok(vec![Capability::XdpAdjustMeta, Capability::Tcx])
        );
    }

    #[test]
    fn parse_forced_names_the_unknown_and_lists_the_valid() {
        let err = Capabilities::parse_forced("tcx,xdp_adjust_mta").unwrap_err();
        assert!(err.contains("\"xdp_adjust_mta\""), "{err}");
        assert!(err.contains("BLIXT_FORCE_FALLBACK"), "{err}");
        for &c in Capability::ALL {
            assert!(err.contains(c.name()), "{err} does not list {}", c.name());
        }
    }

    #[test]
    fn force_off_turns_a_present_capability_off_with_a_reason() {
        let mut caps = Capabilities::all_present("6.1.0-test");
        assert!(caps.has(Capability::Tcx));
        assert_eq!(caps.reason(Capability::Tcx), None);
        caps.force_off(Capability::Tcx);
        assert!(!caps.has(Capability::Tcx));
        assert!(caps.kernel_has(Capability::Tcx));
        assert_eq!(caps.reason(Capability::Tcx), Some(FORCED_REASON));
        assert_eq!(caps.forced(), &BTreeSet::from([Capability::Tcx]));
        assert!(caps.has(Capability::XdpLink));
        let usable: Vec<_> = caps.iter().filter(|(_, u)| !u).map(|(c, _)| c).collect();
        assert_eq!(usable, vec![Capability::Tcx]);
    }

    #[test]
    fn a_missing_capability_keeps_the_kernels_words() {
        let mut caps = Capabilities::all_present("6.18.0-test");
        let words = "program of this type cannot use helper bpf_xdp_adjust_meta#54";
        caps.set(Capability::XdpAdjustMeta, Err(words.to_string()));
        assert!(!caps.has(Capability::XdpAdjustMeta));
        assert_eq!(caps.reason(Capability::XdpAdjustMeta), Some(words));
        caps.force_off(Capability::XdpAdjustMeta);
        assert_eq!(caps.reason(Capability::XdpAdjustMeta), Some(FORCED_REASON));
    }

    #[test]
    fn report_lines_align_names_and_give_reasons() {
        let mut caps = Capabilities::all_present("6.18.0-test");
        let words = "program of this type cannot use helper bpf_xdp_adjust_meta#54";
        caps.set(Capability::XdpAdjustMeta, Err(words.to_string()));
        caps.force_off(Capability::Tcx);
        let lines = caps.report_lines();
        assert_eq!(lines.len(), Capability::ALL.len());
        // the longest name is tc_redirect_neigh (17)
        assert_eq!(
            lines[Capability::ALL
                .iter()
                .position(|&c| c == Capability::XdpAdjustMeta)
                .unwrap()],
            format!("xdp_adjust_meta    no   ({words})")
        );
        assert_eq!(lines[0], "btf                yes");
        let tcx = lines.iter().find(|l| l.starts_with("tcx ")).unwrap();
        assert_eq!(tcx, &format!("tcx                off  ({FORCED_REASON})"));
        for line in &lines {
            // status column at 17 (the longest name, tc_redirect_neigh) + 2
            assert_eq!(&line[17..19], "  ", "{line}");
            assert!(["yes", "no ", "off"].contains(&&line[19..22]), "{line}");
        }
    }

    #[test]
    fn helper_refusals_are_recognised_in_all_three_wordings() {
        let logs = [
            "0: (85) call bpf_xdp_adjust_meta#54\nprogram of this type cannot use helper bpf_xdp_adjust_meta#54\n",
            "0: (85) call unknown#152\nunknown func bpf_redirect_neigh#152\n",
            "0: (85) call unknown#160\ninvalid func unknown#160\nprocessed 1 insns\n",
        ];
        for log in logs {
            let line = helper_refusal(log).expect(log);
            assert!(!line.starts_with("0:"), "{line}");
        }
        assert_eq!(
            helper_refusal("0: (85) call bpf_redirect#23\nR2 !read_ok\n"),
            None
        );
    }

    #[test]
    fn the_verifiers_complaint_is_picked_from_its_log() {
        let log = "0: R1=ctx() R10=fp0\n0: (61) r2 = *(u32 *)(r1 +1000)\n\
                   invalid bpf_context access off=1000 size=4\n\
                   processed 1 insns (limit 1000000) max_states_per_insn 0\n\
                   verification time 12 usec\nstack depth 0\n";
        assert_eq!(
            verifier_complaint(log),
            Some("invalid bpf_context access off=1000 size=4")
        );
        assert_eq!(
            refusal_reason("BPF_PROG_LOAD", libc::EACCES, log),
            "EACCES from BPF_PROG_LOAD: invalid bpf_context access off=1000 size=4"
        );
        assert_eq!(
            refusal_reason("BPF_MAP_CREATE", libc::EINVAL, ""),
            "EINVAL from BPF_MAP_CREATE"
        );
        assert_eq!(
            refusal_reason("BPF_MAP_CREATE", libc::EPERM, ""),
            EPERM_REASON
        );
    }

    #[test]
    fn btf_names_are_found_in_the_string_section() {
        // header (24 bytes), no types, strings "\0foo\0bpf_xdp_link\0"
        let strings = b"\0foo\0bpf_xdp_link\0";
        let mut btf = Vec::new();
        btf.extend_from_slice(&0xeb9fu16.to_ne_bytes());
        btf.extend_from_slice(&[1, 0]);
        for v in [24u32, 0, 0, 0, strings.len() as u32] {
            btf.extend_from_slice(&v.to_ne_bytes());
        }
        btf.extend_from_slice(strings);
        assert!(btf_has_name(&btf, b"bpf_xdp_link"));
        assert!(!btf_has_name(&btf, b"bpf_xdp"));
    }

    #[test]
    fn probe_finds_what_this_kernel_offers() {
        need_root();
        let caps = Capabilities::probe();
        for line in caps.report_lines() {
            eprintln!("{line}");
        }
        assert!(!caps.kernel_release.is_empty() && caps.kernel_release != "unknown");
        assert!(!caps.has(Capability::XdpAdjustMeta), "{:?}", caps);
        let why = caps.reason(Capability::XdpAdjustMeta).unwrap();
        assert!(why.contains("xdp_adjust_meta"), "{why}");
        for c in [
            Capability::XdpFibLookup,
            Capability::TcRedirectNeigh,
            Capability::LruHash,
            Capability::ArrayMmap,
            Capability::KtimeCoarse,
            Capability::TcProgram,
            Capability::XdpProgram,
            Capability::SkLookup,
        ] {
            assert!(caps.has(c), "{c} missing: {:?}", caps.reason(c));
        }
    }

    /// Set in the child run of [`probe_without_privileges_reports_eperm`].
    const UNPRIVILEGED_CHILD: &str = "BLIXT_CAPABILITIES_UNPRIVILEGED_CHILD";

    #[test]
    fn probe_without_privileges_reports_eperm() {
        if std::env::var_os(UNPRIVILEGED_CHILD).is_some() {
            // the child: this very test, re-run as nobody; the parent reads the lines
            for line in Capabilities::probe().report_lines() {
                println!("CAP {line}");
            }
            return;
        }
        need_root();
        use std::os::unix::process::CommandExt;
        let test = format!(
            "{}::probe_without_privileges_reports_eperm",
            module_path!().split_once("::").unwrap().1
        );
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([test.as_str(), "--exact", "--nocapture", "--test-threads=1"])
            .env(UNPRIVILEGED_CHILD, "1")
            .uid(65534)
            .gid(65534)
            .output()
            .expect("run the test binary as nobody");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // libtest's "test ... " may share the first line
        let lines: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.split_once("CAP ").map(|(_, line)| line))
            .collect();
        assert_eq!(lines.len(), Capability::ALL.len(), "{stdout}");
        for line in &lines {
            assert!(
                line.ends_with("  yes") || line.ends_with(&format!("no   ({EPERM_REASON})")),
                "{line}"
            );
        }
        let xdp = lines
            .iter()
            .find(|l| l.starts_with("xdp_program "))
            .unwrap();
        assert!(xdp.contains(EPERM_REASON), "{xdp}");
    }

    #[test]
    fn probe_is_idempotent() {
        need_root();
        assert_eq!(Capabilities::probe(), Capabilities::probe());
    }

    #[test]
    fn probe_is_quick() {
        need_root();
        let start = std::time::Instant::now();
        let _ = Capabilities::probe();
        let took = start.elapsed();
        assert!(
            took < std::time::Duration::from_millis(100),
            "probe took {took:?}"
        );
    }
}
