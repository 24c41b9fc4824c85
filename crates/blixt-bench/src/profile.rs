//! Where the time goes: `perf record` of the benchmark's own thread while a wrapper runs in a
//! hot loop, each sample attributed to what the BPF program was doing.
//!
//! A sample counts when its call stack holds the JIT-compiled wrapper (`bpf_prog_<tag>_<name>`
//! in kallsyms). If the wrapper's frame is the leaf, the time is the program's own
//! instructions; otherwise it is charged to the helper (or inlined map operation) the program
//! called, grouped into a few categories. Shares times the wrapper's measured ns/iteration give
//! ns per category. The profile is optional: without `perf` the report says it was not taken.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Sampling frequency (Hz).
const FREQ: &str = "4999";

/// One wrapper's profile on one path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub path: String,
    /// Which wrapper ran: "blixt", "empty", "tc_blixt" or "tc_empty" (`Target::name`).
    pub target: String,
    /// Samples inside the wrapper.
    pub samples: u64,
    /// (category, share of samples), largest first.
    pub shares: Vec<(String, f64)>,
    /// The wrapper's kernel-timed ns per iteration in the same stretch of runs.
    pub ns_per_iteration: f64,
}

impl Profile {
    pub fn share(&self, category: &str) -> f64 {
        self.shares
            .iter()
            .find(|(c, _)| c == category)
            .map_or(0.0, |(_, s)| *s)
    }

    pub fn ns(&self, category: &str) -> f64 {
        self.share(category) * self.ns_per_iteration
    }
}

pub const CAT_SELF: &str = "program's own instructions";
pub const CAT_FIB: &str = "bpf_fib_lookup (route + neighbour)";
pub const CAT_MAPS: &str = "hash maps (conntrack, frontends): hash, lookup, insert, evict";
pub const CAT_CLOCK: &str = "bpf_ktime_get_coarse_ns";
pub const CAT_REDIRECT: &str = "bpf_redirect";
/// TC only: XDP updates checksums in the program's own instructions.
pub const CAT_CSUM: &str = "bpf_l4_csum_replace (TC)";
pub const CAT_WRAPPER: &str = "wrapper's packet restore (bpf_xdp_store_bytes, bpf_skb_store_bytes)";
pub const CAT_OTHER: &str = "other helpers";

/// Order in which categories are shown.
pub const CATEGORIES: [&str; 8] = [
    CAT_SELF,
    CAT_FIB,
    CAT_MAPS,
    CAT_CLOCK,
    CAT_REDIRECT,
    CAT_CSUM,
    CAT_WRAPPER,
    CAT_OTHER,
];

fn classify(callees: &[&str]) -> &'static str {
    if callees.is_empty() {
        return CAT_SELF;
    }
    let has = |pat: &str| callees.iter().any(|f| f.contains(pat));
    if has("fib") {
        CAT_FIB
    } else if has("store_bytes") || has("xdp_pointer") || has("adjust_tail") {
        CAT_WRAPPER
    } else if has("csum_replace") {
        CAT_CSUM
    } else if has("htab") || has("lru") || has("lookup_nulls") || has("pcpu_freelist") {
        CAT_MAPS
    } else if has("ktime") {
        CAT_CLOCK
    } else if has("redirect") {
        CAT_REDIRECT
    } else {
        CAT_OTHER
    }
}

/// A running `perf record` on this process; stop it with [`Recorder::finish`].
#[derive(Debug)]
pub struct Recorder {
    child: Child,
    file: PathBuf,
}

/// Whether `perf` can be run here.
pub fn available() -> bool {
    Command::new("perf")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Recorder {
    /// Starts sampling every thread of this process, with call stacks.
    pub fn start(tag: &str) -> Result<Recorder> {
        let file = std::env::temp_dir().join(format!(
            "blixt-bench-{}-{tag}.perf.data",
            std::process::id()
        ));
        let child = Command::new("perf")
            .args(["record", "-q", "-g", "-F", FREQ, "-o"])
            .arg(&file)
            .args(["-p", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf record")?;
        // perf needs a moment to open its events before the work starts
        std::thread::sleep(Duration::from_millis(400));
        Ok(Recorder { child, file })
    }

    /// Stops recording and returns the samples' stacks (leaf first).
    pub fn finish(mut self) -> Result<Vec<Vec<String>>> {
        let pid = self.child.id().to_string();
        // SIGINT makes perf flush and write its file
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        self.child.wait().context("waiting for perf record")?;
        let out = Command::new("perf")
            .args(["script", "-i"])
            .arg(&self.file)
            .stderr(Stdio::null())
            .output()
            .context("perf script")?;
        let _ = std::fs::remove_file(&self.file);
        Ok(parse_script(&String::from_utf8_lossy(&out.stdout)))
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Stacks of `perf script` output: a header line per sample, then one indented line per frame
/// (`<addr> <symbol>+<offset> (<dso>)`), a blank line after each sample.
pub fn parse_script(text: &str) -> Vec<Vec<String>> {
    let mut stacks = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                stacks.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if !(line.starts_with('\t') || line.starts_with(' ')) {
            if !cur.is_empty() {
                stacks.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let mut parts = line.split_whitespace();
        let _addr = parts.next();
        let rest: Vec<&str> = parts.collect();
        let sym = rest
            .iter()
            .take_while(|p| !p.starts_with('('))
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        let sym = match sym.rfind("+0x") {
            Some(i) => sym[..i].to_string(),
            None => sym,
        };
        cur.push(sym);
    }
    if !cur.is_empty() {
        stacks.push(cur);
    }
    stacks
}

/// Shares per category of the samples whose stack holds a frame ending in `prog` (the BPF
/// program's name); `None` if there are none.
pub fn attribute(stacks: &[Vec<String>], prog: &str) -> Option<(u64, Vec<(String, f64)>)> {
    let mut counts: std::collections::BTreeMap<&'static str, u64> = Default::default();
    let mut total = 0u64;
    for s in stacks {
        let Some(i) = s
            .iter()
            .position(|f| f.starts_with("bpf_prog_") && f.ends_with(prog))
        else {
            continue;
        };
        let callees: Vec<&str> = s[..i].iter().map(String::as_str).collect();
        *counts.entry(classify(&callees)).or_default() += 1;
        total += 1;
    }
    if total == 0 {
        return None;
    }
    let mut shares: Vec<(String, f64)> = counts
        .into_iter()
        .map(|(c, n)| (c.to_string(), n as f64 / total as f64))
        .collect();
    shares.sort_by(|a, b| b.1.total_cmp(&a.1));
    Some((total, shares))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "\
blixt-bench 123 [000] 1.0: 1 cycles:
\tffffffff81000001 bpf_ipv4_fib_lookup+0x10 ([kernel.kallsyms])
\tffffffffc0000001 bpf_prog_0123456789abcdef_bench_wrap_lb+0x99 (bpf_prog_0123456789abcdef_bench_wrap_lb)
\tffffffff81000002 bpf_test_run+0x20 ([kernel.kallsyms])

blixt-bench 123 [000] 1.1: 1 cycles:
\tffffffffc0000001 bpf_prog_0123456789abcdef_bench_wrap_lb+0x12 (bpf_prog_0123456789abcdef_bench_wrap_lb)
\tffffffff81000002 bpf_test_run+0x20 ([kernel.kallsyms])

blixt-bench 123 [000] 1.2: 1 cycles:
\tffffffff81000003 __pi_memcpy+0x1 ([kernel.kallsyms])
\tffffffff81000004 bpf_xdp_store_bytes+0x1 ([kernel.kallsyms])
\tffffffffc0000001 bpf_prog_0123456789abcdef_bench_wrap_lb+0x12 (bpf_prog_0123456789abcdef_bench_wrap_lb)

blixt-bench 123 [000] 1.3: 1 cycles:
\tffffffff81000005 do_syscall_64+0x1 ([kernel.kallsyms])
";

    #[test]
    fn samples_are_charged_to_the_helper_the_program_called() {
        let stacks = parse_script(SCRIPT);
        assert_eq!(stacks.len(), 4);
        let (n, shares) = attribute(&stacks, "bench_wrap_lb").unwrap();
        assert_eq!(n, 3, "the syscall sample is outside the program");
        let get = |c: &str| shares.iter().find(|(k, _)| k == c).map(|(_, s)| *s);
        assert_eq!(get(CAT_FIB), Some(1.0 / 3.0));
        assert_eq!(get(CAT_SELF), Some(1.0 / 3.0));
        assert_eq!(get(CAT_WRAPPER), Some(1.0 / 3.0));
    }
}
