//! What the dataplane does on this kernel: from the [`Capabilities`] the kernel offers and the
//! attach mode the operator asked for, which hook runs the load balancer, how packets with an
//! unresolved next hop leave, how programs are attached, and which fallbacks that makes active
//! (and why). Pure: unit-tested on made-up capability sets, so every branch is covered whatever
//! kernel runs the tests.

use std::fmt;
use std::str::FromStr;

use crate::capabilities::{Capabilities, Capability};

/// Where the operator wants the load balancer (NodeConfig `attach`, `blixt agent --attach`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// XDP where the kernel and the interface's driver support it, TC elsewhere.
    #[default]
    Auto,
    /// XDP only: refuse to start where it cannot work.
    Xdp,
    /// TC ingress only (interfaces or kernels without usable XDP).
    Tc,
}

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Auto => "auto",
            AttachMode::Xdp => "xdp",
            AttachMode::Tc => "tc",
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AttachMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(AttachMode::Auto),
            "xdp" => Ok(AttachMode::Xdp),
            "tc" => Ok(AttachMode::Tc),
            other => Err(format!("attach mode {other:?} is not one of auto, xdp, tc")),
        }
    }
}

/// The hook the load balancer runs at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hook {
    Xdp,
    Tc,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Xdp => "xdp",
            Hook::Tc => "tc",
        }
    }
}

/// How an XDP load balancer sends a packet whose next hop the kernel has not resolved (XDP
/// cannot queue a packet behind ARP/NDP; TC's bpf_redirect_neigh() can).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighPath {
    /// XDP rewrites the packet, leaves the egress interface in metadata
    /// (bpf_xdp_adjust_meta) and the TC companion (neigh_tc.bpf.c) redirects it.
    XdpMeta,
    /// XDP passes the packet up unchanged and `blixt_lb_tc` on TC ingress balances it again and
    /// redirects it (a second pass for those few packets; nothing is lost).
    TcLoadBalancer,
}

/// A capability the dataplane uses is missing (or forced off) and something else does its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// The missing capability.
    pub capability: Capability,
    /// What runs instead, in a few words.
    pub instead: &'static str,
    /// Why the capability is missing: the kernel's own words, or "forced off".
    pub because: String,
}

/// The kernel lacks something the dataplane cannot do without.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub capability: Capability,
    /// What needs it.
    pub needed_by: &'static str,
    pub because: String,
    pub kernel_release: String,
}

impl std::error::Error for Refusal {}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "this kernel ({}) lacks {} (capability {}), which {} needs, with no fallback; it \
             needs Linux {} or newer, and Blixt as a whole needs Linux {} (probe said: {})",
            self.kernel_release,
            self.capability.describe(),
            self.capability.name(),
            self.needed_by,
            self.capability.since(),
            MINIMUM_KERNEL,
            self.because
        )
    }
}

/// The oldest kernel that has every capability without a fallback (bpf_ktime_get_coarse_ns, 5.11).
pub const MINIMUM_KERNEL: &str = "5.11";

/// Capabilities without a fallback, with what needs them.
const REQUIRED: &[(Capability, &str)] = &[
    (Capability::LruHash, "conntrack (blixt_conntrack)"),
    (
        Capability::PercpuArray,
        "the counters and the next-hop cache",
    ),
    (
        Capability::ArrayMmap,
        "the Maglev rings (written through a shared mapping)",
    ),
    (
        Capability::KtimeCoarse,
        "conntrack timestamps in both hooks",
    ),
    (
        Capability::TcProgram,
        "the TC programs (every mode has one)",
    ),
    (
        Capability::TcRedirectNeigh,
        "forwarding to next hops the kernel has not resolved yet",
    ),
];

/// What the XDP load balancer needs; without one of them `auto` runs at TC.
const XDP_NEEDS: &[Capability] = &[
    Capability::XdpProgram,
    Capability::XdpFibLookup,
    Capability::XdpAdjustTail,
    Capability::XdpRedirect,
];

/// What the TC load balancer needs.
const TC_NEEDS: &[Capability] = &[
    Capability::TcFibLookup,
    Capability::TcChangeTail,
    Capability::TcPullData,
    Capability::TcCsumReplace,
];

/// The dataplane's shape on this kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// What the operator asked for.
    pub requested: AttachMode,
    /// The hook interfaces get by default. In `auto`, an interface whose driver refuses XDP
    /// (natively and generically) still gets TC.
    pub hook: Hook,
    /// For the XDP hook: how unresolved next hops are reached.
    pub neigh: NeighPath,
    /// TC programs attach through tcx links (pinned, replaced atomically); otherwise through
    /// netlink on a clsact qdisc.
    pub tcx: bool,
    /// The TC load balancer reads each packet's checksum state (`skb->ip_summed`) and
    /// updates the L4 checksum in place where the field holds the full checksum, as XDP does;
    /// otherwise every packet's goes through bpf_l4_csum_replace().
    pub kern_ctx: bool,
    /// Fallbacks active, each with its reason.
    pub fallbacks: Vec<Fallback>,
}

impl Plan {
    /// Chooses the dataplane's shape, or refuses with the first missing capability that has no
    /// fallback.
    pub fn choose(caps: &Capabilities, requested: AttachMode) -> Result<Plan, Refusal> {
        let refuse = |capability: Capability, needed_by: &'static str| Refusal {
            capability,
            needed_by,
            because: reason(caps, capability),
            kernel_release: caps.kernel_release.clone(),
        };
        for &(c, needed_by) in REQUIRED {
            if !caps.has(c) {
                return Err(refuse(c, needed_by));
            }
        }
        let mut fallbacks = Vec::new();
        let tc_missing = TC_NEEDS.iter().copied().find(|c| !caps.has(*c));
        let xdp_missing = XDP_NEEDS.iter().copied().find(|c| !caps.has(*c));

        let hook = match (requested, xdp_missing) {
            (AttachMode::Tc, _) => Hook::Tc,
            (AttachMode::Xdp, Some(c)) => {
                return Err(refuse(c, "the XDP load balancer (attach: xdp)"));
            }
            (AttachMode::Xdp, None) | (AttachMode::Auto, None) => Hook::Xdp,
            (AttachMode::Auto, Some(c)) => {
                fallbacks.push(Fallback {
                    capability: c,
                    instead: "the load balancer runs at TC ingress on every interface",
                    because: reason(caps, c),
                });
                Hook::Tc
            }
        };

        let meta = [Capability::XdpAdjustMeta, Capability::TcDataMeta]
            .into_iter()
            .find(|c| !caps.has(*c));
        let neigh = match meta {
            None => NeighPath::XdpMeta,
            Some(c) => {
                if hook == Hook::Xdp {
                    fallbacks.push(Fallback {
                        capability: c,
                        instead: "packets to unresolved next hops go up unchanged and \
                                  blixt_lb_tc forwards them from TC ingress",
                        because: reason(caps, c),
                    });
                }
                NeighPath::TcLoadBalancer
            }
        };
        // the TC load balancer runs in TC mode and behind XDP without metadata (and in auto,
        // on any interface XDP cannot attach to)
        let tc_lb_needed = hook == Hook::Tc || neigh == NeighPath::TcLoadBalancer;
        if let (Some(c), true) = (tc_missing, tc_lb_needed) {
            return Err(refuse(c, "the TC load balancer (blixt_lb_tc)"));
        }

        let kern_ctx = caps.has(Capability::TcKernCtx);
        if !kern_ctx && tc_lb_needed {
            fallbacks.push(Fallback {
                capability: Capability::TcKernCtx,
                instead: "blixt_lb_tc updates every L4 checksum through bpf_l4_csum_replace() \
                          (two helper calls a packet, about 45 ns)",
                because: reason(caps, Capability::TcKernCtx),
            });
        }

        let tcx = caps.has(Capability::Tcx);
        if !tcx {
            fallbacks.push(Fallback {
                capability: Capability::Tcx,
                instead: "TC programs attach through netlink (clsact), unpinned: a restart \
                          re-attaches them",
                because: reason(caps, Capability::Tcx),
            });
        }
        if !caps.has(Capability::Btf) {
            fallbacks.push(Fallback {
                capability: Capability::Btf,
                instead: "maps load without kernel BTF (bpftool shows raw bytes)",
                because: reason(caps, Capability::Btf),
            });
        }
        Ok(Plan {
            requested,
            hook,
            neigh,
            tcx,
            kern_ctx,
            fallbacks,
        })
    }

    /// Whether the TC load balancer (`blixt_lb_tc`) is part of this plan from the start.
    pub fn tc_load_balancer(&self) -> bool {
        self.hook == Hook::Tc || self.neigh == NeighPath::TcLoadBalancer
    }

    /// The value of lb.bpf.c's `neigh_via_meta` constant.
    pub fn neigh_via_meta(&self) -> bool {
        self.neigh == NeighPath::XdpMeta
    }

    /// One line each: `<capability>: <instead> (<because>)`.
    pub fn fallback_lines(&self) -> Vec<String> {
        self.fallbacks
            .iter()
            .map(|f| format!("{}: {} ({})", f.capability.name(), f.instead, f.because))
            .collect()
    }
}

fn reason(caps: &Capabilities, c: Capability) -> String {
    caps.reason(c)
        .unwrap_or("not offered by the kernel")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn without(cs: &[Capability]) -> Capabilities {
        let mut caps = Capabilities::all_present("6.1.0-test");
        for c in cs {
            caps.force_off(*c);
        }
        caps
    }

    #[test]
    fn a_full_kernel_runs_xdp_with_metadata_and_no_fallback() {
        let plan = Plan::choose(&without(&[]), AttachMode::Auto).unwrap();
        assert_eq!(plan.hook, Hook::Xdp);
        assert_eq!(plan.neigh, NeighPath::XdpMeta);
        assert!(plan.tcx);
        assert!(plan.fallbacks.is_empty(), "{:?}", plan.fallbacks);
        assert!(!plan.tc_load_balancer());
        assert!(plan.neigh_via_meta());
    }

    #[test]
    fn without_adjust_meta_xdp_hands_unresolved_hops_to_the_tc_load_balancer() {
        let plan = Plan::choose(&without(&[Capability::XdpAdjustMeta]), AttachMode::Auto).unwrap();
        assert_eq!(plan.hook, Hook::Xdp);
        assert_eq!(plan.neigh, NeighPath::TcLoadBalancer);
        assert!(plan.tc_load_balancer());
        assert!(!plan.neigh_via_meta());
        let lines = plan.fallback_lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("xdp_adjust_meta: "), "{lines:?}");
        assert!(lines[0].contains("forced off"), "{lines:?}");
    }

    #[test]
    fn auto_without_xdp_runs_at_tc_and_says_why() {
        let plan = Plan::choose(&without(&[Capability::XdpFibLookup]), AttachMode::Auto).unwrap();
        assert_eq!(plan.hook, Hook::Tc);
        assert!(plan.tc_load_balancer());
        assert_eq!(plan.fallbacks[0].capability, Capability::XdpFibLookup);
    }

    #[test]
    fn xdp_requested_without_xdp_is_refused_naming_the_capability() {
        let err = Plan::choose(&without(&[Capability::XdpRedirect]), AttachMode::Xdp).unwrap_err();
        assert_eq!(err.capability, Capability::XdpRedirect);
        let msg = err.to_string();
        assert!(msg.contains("xdp_redirect"), "{msg}");
        assert!(msg.contains("attach: xdp"), "{msg}");
        assert!(msg.contains(MINIMUM_KERNEL), "{msg}");
        assert!(msg.contains("6.1.0-test"), "{msg}");
    }

    #[test]
    fn tc_requested_uses_tc_even_on_a_full_kernel() {
        let plan = Plan::choose(&without(&[]), AttachMode::Tc).unwrap();
        assert_eq!(plan.hook, Hook::Tc);
        // no XDP, so no XDP fallback to report
        assert!(plan.fallbacks.is_empty(), "{:?}", plan.fallbacks);
    }

    #[test]
    fn required_capabilities_refuse_in_every_mode() {
        for (c, _) in REQUIRED {
            for mode in [AttachMode::Auto, AttachMode::Xdp, AttachMode::Tc] {
                let err = Plan::choose(&without(&[*c]), mode).unwrap_err();
                assert_eq!(err.capability, *c, "{mode}");
            }
        }
    }

    #[test]
    fn a_missing_tc_helper_refuses_only_where_the_tc_load_balancer_runs() {
        let caps = without(&[Capability::TcCsumReplace]);
        assert!(Plan::choose(&caps, AttachMode::Auto).is_ok());
        assert_eq!(
            Plan::choose(&caps, AttachMode::Tc).unwrap_err().capability,
            Capability::TcCsumReplace
        );
        let caps = without(&[Capability::TcCsumReplace, Capability::XdpAdjustMeta]);
        let err = Plan::choose(&caps, AttachMode::Auto).unwrap_err();
        assert!(err.to_string().contains("blixt_lb_tc"), "{err}");
    }

    #[test]
    fn no_tcx_falls_back_to_netlink() {
        let plan = Plan::choose(&without(&[Capability::Tcx]), AttachMode::Auto).unwrap();
        assert!(!plan.tcx);
        let names: Vec<_> = plan.fallbacks.iter().map(|f| f.capability).collect();
        assert_eq!(names, [Capability::Tcx]);
    }

    #[test]
    fn attach_modes_parse_and_print() {
        for m in [AttachMode::Auto, AttachMode::Xdp, AttachMode::Tc] {
            assert_eq!(m.to_string().parse::<AttachMode>().unwrap(), m);
        }
        let err = "bpf".parse::<AttachMode>().unwrap_err();
        assert!(err.contains("auto, xdp, tc"), "{err}");
    }
}
