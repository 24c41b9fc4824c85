//! Where the whole machine's CPU goes during a round of suite 6, split between the parts of the
//! lab: the load generator (client), the TLS backends (servers), the lb node's process (the
//! proxy), the kernel's softirq threads, and everything else.
//!
//! The load generator and the backends run in the bench process itself: the backends on
//! threads named [`BACKEND_THREAD`], the client on the rest (its runtime's threads; the main
//! thread only waits). Without `CONFIG_IRQ_TIME_ACCOUNTING` (the common build), softirq work is
//! charged to the task it interrupted: on veth the receiver's TCP stack runs inline in the
//! sender's system call, so each part's figure includes the kernel receive work its sends
//! trigger. What the kernel defers to `ksoftirqd` is shown on its own.

use anyhow::{Context, Result};

use super::systems::{cpu_seconds, stat_seconds};
use crate::end_to_end::cpu::CpuTimes;

/// Thread name of the backends' runtime (see [`super::servers`]).
pub const BACKEND_THREAD: &str = "tls-backend";

/// The parts, in the order shown: (id, label).
pub const PARTS: [(&str, &str); 6] = [
    ("client", "client (load generator)"),
    ("servers", "TLS servers (3 backends)"),
    ("lb", "lb process (the proxy)"),
    ("ksoftirqd", "ksoftirqd"),
    ("other", "other (rest of the machine)"),
    ("total", "whole machine"),
];

/// CPU seconds used so far by the machine and by each part of the lab.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// All CPUs.
    machine: CpuTimes,
    /// The bench process (client + servers).
    bench: f64,
    servers: f64,
    /// The lb node's process, if any.
    lb: f64,
    ksoftirqd: f64,
}

/// CPU seconds per part over a round, and the machine's capacity over it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Split {
    pub client: f64,
    pub servers: f64,
    pub lb: f64,
    pub ksoftirqd: f64,
    pub other: f64,
    pub total: f64,
    /// Busy share of all CPUs over the round (1.0: every core busy all the time).
    pub busy_share: f64,
}

impl Split {
    /// Each part's CPU seconds as microseconds per one of `connections` (NaN for none); the
    /// busy share stays as it is.
    pub fn per_connection_us(&self, connections: u64) -> Split {
        let per = |s: f64| {
            if connections > 0 {
                s / connections as f64 * 1e6
            } else {
                f64::NAN
            }
        };
        Split {
            client: per(self.client),
            servers: per(self.servers),
            lb: per(self.lb),
            ksoftirqd: per(self.ksoftirqd),
            other: per(self.other),
            total: per(self.total),
            busy_share: self.busy_share,
        }
    }

    /// The part with id `id` (one of [`PARTS`]).
    pub fn part(&self, id: &str) -> f64 {
        match id {
            "client" => self.client,
            "servers" => self.servers,
            "lb" => self.lb,
            "ksoftirqd" => self.ksoftirqd,
            "other" => self.other,
            _ => self.total,
        }
    }
}

impl Snapshot {
    /// Reads every counter now; `lb` is the lb node's process, if the system has one.
    pub fn take(lb: Option<u32>) -> Result<Snapshot> {
        Ok(Snapshot {
            machine: CpuTimes::now()?,
            bench: cpu_seconds(std::process::id())?,
            servers: threads_named(BACKEND_THREAD)?,
            lb: lb.map(cpu_seconds).transpose()?.unwrap_or(0.0),
            ksoftirqd: ksoftirqd()?,
        })
    }

    /// What was used from `self` to `later`, over `wall` seconds on `cpus` CPUs.
    pub fn until(&self, later: &Snapshot, wall: f64, cpus: usize) -> Split {
        let servers = later.servers - self.servers;
        let client = (later.bench - self.bench - servers).max(0.0);
        let lb = later.lb - self.lb;
        let ksoftirqd = later.ksoftirqd - self.ksoftirqd;
        let total = later.machine.since(&self.machine).busy_s();
        Split {
            client,
            servers,
            lb,
            ksoftirqd,
            other: (total - client - servers - lb - ksoftirqd).max(0.0),
            total,
            busy_share: if wall > 0.0 && cpus > 0 {
                total / (wall * cpus as f64)
            } else {
                f64::NAN
            },
        }
    }
}

/// CPU seconds of this process's live threads named `name`.
fn threads_named(name: &str) -> Result<f64> {
    let mut sum = 0.0;
    let dir = std::fs::read_dir("/proc/self/task").context("listing /proc/self/task")?;
    for entry in dir {
        let path = entry.context("/proc/self/task")?.path();
        // a thread may end between the listing and the reads
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        if comm.trim_end() != name {
            continue;
        }
        let stat = path.join("stat");
        if let Ok(text) = std::fs::read_to_string(&stat) {
            sum += stat_seconds(&text, &stat)?;
        }
    }
    Ok(sum)
}

/// CPU seconds of the kernel's `ksoftirqd/N` threads.
fn ksoftirqd() -> Result<f64> {
    let mut sum = 0.0;
    for entry in std::fs::read_dir("/proc").context("listing /proc")? {
        let path = entry.context("/proc")?.path();
        let is_pid = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        if !is_pid {
            continue;
        }
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        if !comm.starts_with("ksoftirqd/") {
            continue;
        }
        let stat = path.join("stat");
        if let Ok(text) = std::fs::read_to_string(&stat) {
            sum += stat_seconds(&text, &stat)?;
        }
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_shows_in_the_split() {
        let t0 = Snapshot::take(None).unwrap();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let t1 = Snapshot::take(None).unwrap();
        let s = t0.until(&t1, 0.3, 1);
        // this test's thread is neither a backend thread nor the lb: it counts as client
        assert!(s.client >= 0.1, "{s:?}");
        assert!(s.total >= s.client - 0.05, "{s:?}");
        assert_eq!(s.lb, 0.0);
    }
}
