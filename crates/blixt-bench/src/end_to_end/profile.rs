//! Where the whole machine's time goes during a short-connection run: `perf record -a -g`
//! (every CPU, call stacks), each non-idle sample put in one bucket by its stack and its
//! thread. The load balancer's own share (Blixt's XDP program, netfilter's hooks, HAProxy's
//! process) next to the client's and the backends' shows how much of an end-to-end figure the
//! load balancer can move at all.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

/// Sampling frequency (Hz), per CPU.
const FREQ: &str = "999";

/// Buckets, in the order the report shows them: (id, description). A sample goes to the first
/// that matches.
pub const BUCKETS: [(&str, &str); 9] = [
    (
        "blixt_xdp",
        "lb: Blixt's program, XDP or TC (with its helpers)",
    ),
    (
        "veth_xdp",
        "lb: veth's XDP machinery (skb copied into a page for XDP, redirect, frame → skb)",
    ),
    (
        "netfilter",
        "lb: netfilter (rules, NAT, conntrack; any namespace)",
    ),
    ("haproxy", "lb: the HAProxy process (user and kernel)"),
    (
        "forwarding",
        "lb: kernel IP forwarding (ip_forward, routing)",
    ),
    (
        "client",
        "client: wrk (user and kernel, incl. softirq run in its context)",
    ),
    ("backends", "backends: HTTP servers (user and kernel)"),
    (
        "kernel",
        "other kernel work (softirq threads, idle-loop softirq)",
    ),
    ("other", "other processes (not the lab)"),
];

/// A system-wide recording; stops (and deletes its file) on drop.
#[derive(Debug)]
pub struct Recorder {
    child: Child,
    file: PathBuf,
}

/// Whether `perf` can be run here.
pub fn available() -> bool {
    crate::profile::available()
}

impl Recorder {
    /// Starts sampling every CPU with call stacks.
    pub fn start(tag: &str) -> Result<Recorder> {
        let file = std::env::temp_dir().join(format!(
            "blixt-bench-e2e-{}-{tag}.perf.data",
            std::process::id()
        ));
        let child = Command::new("perf")
            .args(["record", "-q", "-a", "-g", "-F", FREQ, "-o"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf record -a")?;
        std::thread::sleep(Duration::from_millis(400));
        Ok(Recorder { child, file })
    }

    /// Stops and returns the share of non-idle samples per bucket ([`BUCKETS`] order), and
    /// the number of non-idle samples.
    pub fn finish(mut self) -> Result<(u64, Vec<f64>)> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        self.child.wait().context("waiting for perf record")?;
        let out = Command::new("perf")
            .args(["script", "-F", "comm,ip,sym", "-i"])
            .arg(&self.file)
            .stderr(Stdio::null())
            .output()
            .context("perf script")?;
        Ok(buckets(&String::from_utf8_lossy(&out.stdout)))
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.file);
    }
}

fn is_idle(comm: &str, stack: &[&str]) -> bool {
    comm.starts_with("swapper")
        && stack.first().is_some_and(|leaf| {
            ["idle", "cpuidle", "halt", "mwait", "poll_idle", "safe_halt"]
                .iter()
                .any(|p| leaf.contains(p))
        })
}

/// Kernel functions that only an XDP program on a veth makes run: copying a received skb into
/// a page-pool page for the program (when the skb is cloned, as every TCP data segment is, or
/// lacks headroom), sending redirected frames to the peer and building skbs from them again.
/// (veth_xdp_rcv_skb itself is left out: with GRO on, as in the lab, every skb passes it, and
/// it returns at once when no program is attached.)
const VETH_XDP: [&str; 10] = [
    "veth_xdp_rcv_one",
    "veth_xdp_xmit",
    "veth_ndo_xdp_xmit",
    "veth_xdp_flush_bq",
    "skb_pp_cow_data",
    "skb_cow_data_for_xdp",
    "__xdp_build_skb_from_frame",
    "xdp_build_skb_from_buff",
    "xdp_do_redirect",
    "xdp_do_flush",
];

/// Frames of ordinary receive processing: a sample below one of these (nearer the leaf) is
/// the receiving stack's work, which it does with or without XDP.
const STACK_RECEIVE: [&str; 6] = [
    "napi_gro_receive",
    "netif_receive_skb",
    "__netif_receive_skb",
    "ip_rcv",
    "ip6_rcv",
    "gro_receive_skb",
];

/// Whether the sample is veth's XDP machinery itself (leaf first: a veth XDP frame comes
/// before any frame of ordinary receive processing).
fn in_veth_xdp(stack: &[&str]) -> bool {
    let first = |names: &[&str]| {
        stack
            .iter()
            .position(|s| names.iter().any(|n| s.split('.').next() == Some(*n)))
    };
    match (first(&VETH_XDP), first(&STACK_RECEIVE)) {
        (Some(v), Some(r)) => v < r,
        (Some(_), None) => true,
        _ => false,
    }
}

fn bucket(comm: &str, stack: &[&str]) -> usize {
    let any = |f: &dyn Fn(&str) -> bool| stack.iter().any(|s| f(s));
    let idx = |id: &str| {
        BUCKETS
            .iter()
            .position(|(b, _)| *b == id)
            .unwrap_or(BUCKETS.len() - 1)
    };
    if any(&|s| {
        s.starts_with("bpf_prog_") && (s.ends_with("blixt_lb") || s.ends_with("blixt_lb_tc"))
    }) {
        idx("blixt_xdp")
    } else if in_veth_xdp(stack) {
        idx("veth_xdp")
    } else if any(&|s| {
        [
            "nf_",
            "nft_",
            "ipt_",
            "xt_",
            "__nf_",
            "ipv4_conntrack",
            "nf_nat",
            "masquerade",
        ]
        .iter()
        .any(|p| s.starts_with(p))
    }) {
        idx("netfilter")
    } else if comm == "haproxy" {
        idx("haproxy")
    } else if any(&|s| s.starts_with("ip_forward") || s.starts_with("ip_route_input")) {
        idx("forwarding")
    } else if comm == "wrk" {
        idx("client")
    } else if comm.starts_with("http-") {
        idx("backends")
    } else if comm.starts_with("swapper") || comm.starts_with("ksoftirqd") {
        idx("kernel")
    } else {
        idx("other")
    }
}

/// Counts `perf script -F comm,ip,sym` output (a comm line, padded and possibly with spaces,
/// then one tab-indented frame per line, leaf first, a blank line after each sample).
fn buckets(text: &str) -> (u64, Vec<f64>) {
    let mut counts = [0u64; BUCKETS.len()];
    let mut comm = String::new();
    let mut stack: Vec<String> = Vec::new();
    let mut flush = |comm: &str, stack: &mut Vec<String>| {
        if comm.is_empty() {
            return;
        }
        let frames: Vec<&str> = stack.iter().map(String::as_str).collect();
        if !is_idle(comm, &frames) {
            counts[bucket(comm, &frames)] += 1;
        }
        stack.clear();
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&comm, &mut stack);
            comm.clear();
        } else if line.starts_with('\t') {
            // "<addr> <symbol>+<offset> (<dso>)" or "<symbol>"; keep the symbol
            let words: Vec<&str> = line.split_whitespace().collect();
            let sym = if words.len() >= 2 && u64::from_str_radix(words[0], 16).is_ok() {
                words[1]
            } else {
                words[0]
            };
            let sym = sym.split("+0x").next().unwrap_or(sym);
            stack.push(sym.to_string());
        } else {
            flush(&comm, &mut stack);
            comm = line.trim().to_string();
        }
    }
    flush(&comm, &mut stack);
    let total: u64 = counts.iter().sum();
    let shares = counts
        .iter()
        .map(|c| *c as f64 / total.max(1) as f64)
        .collect();
    (total, shares)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_land_in_their_bucket() {
        let text = "wrk\n\tffffffff81000000 bpf_prog_abc_blixt_lb+0x10 (bpf)\n\t\
                    ffffffff81000001 veth_xdp_rcv+0x1 ([kernel.kallsyms])\n\n\
                    swapper\n\tffffffff81000002 default_idle+0x5 ([kernel.kallsyms])\n\n\
                    http-be0\n\tffffffff81000003 tcp_v4_rcv+0x5 ([kernel.kallsyms])\n\n\
                    ksoftirqd/1\n\tffffffff81000004 nf_conntrack_in+0x5 ([kernel.kallsyms])\n\n\
                    \x20 lto cgu.00 \n\t7f00 main+0x1 (/usr/bin/rustc)\n";
        let (n, s) = buckets(text);
        assert_eq!(n, 4);
        let share = |id: &str| s[BUCKETS.iter().position(|(b, _)| *b == id).unwrap()];
        assert_eq!(share("blixt_xdp"), 0.25);
        assert_eq!(share("netfilter"), 0.25);
        assert_eq!(share("backends"), 0.25);
        assert_eq!(share("other"), 0.25);
    }

    #[test]
    fn veth_xdp_work_is_told_from_the_receiving_stack() {
        let copy = ["memcpy", "skb_pp_cow_data", "veth_xdp_rcv_skb", "veth_poll"];
        assert!(!in_veth_xdp(&[
            "veth_xdp_rcv_skb",
            "veth_xdp_rcv",
            "veth_poll"
        ]));
        assert_eq!(bucket("wrk", &copy), 1, "the copy before the program runs");
        let xmit = [
            "veth_xdp_xmit",
            "xdp_do_redirect",
            "veth_xdp_rcv",
            "veth_poll",
        ];
        assert!(in_veth_xdp(&xmit));
        // the backend's TCP stack run from veth's NAPI poll is the stack's own work
        let rx = [
            "tcp_v4_rcv",
            "ip_rcv",
            "napi_gro_receive",
            "veth_xdp_rcv",
            "veth_poll",
        ];
        assert!(!in_veth_xdp(&rx));
        let rx_after_build = [
            "tcp_v4_rcv",
            "netif_receive_skb",
            "__xdp_build_skb_from_frame",
        ];
        assert!(!in_veth_xdp(&rx_after_build));
        let program = ["bpf_prog_1234_blixt_lb", "veth_xdp_rcv_skb"];
        assert_eq!(bucket("wrk", &program), 0, "the program itself first");
    }
}
