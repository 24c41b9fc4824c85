//! CPU time of the whole machine from `/proc/stat`: every namespace of the lab (client,
//! load balancer, backends) shares the host's CPUs, so the aggregate `cpu` line's busy time
//! over a run is what the whole lab spent, softirq (where XDP and netfilter run) included.

use anyhow::{Context, Result};

/// `USER_HZ`: the unit of /proc/stat. 100 on every Linux architecture the project runs on
/// (it is fixed for the ABI; `getconf CLK_TCK` says the same).
const USER_HZ: f64 = 100.0;

/// The aggregate CPU line of /proc/stat, in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

/// Busy CPU seconds between two samples, split the way the report shows them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CpuDelta {
    /// user + nice
    pub user_s: f64,
    /// system + irq
    pub system_s: f64,
    /// softirq: packet processing, XDP and netfilter included
    pub softirq_s: f64,
    /// Time the hypervisor gave to others.
    pub steal_s: f64,
    /// Idle + iowait.
    pub idle_s: f64,
}

impl CpuDelta {
    /// CPU seconds spent (user, system, irq, softirq).
    pub fn busy_s(&self) -> f64 {
        self.user_s + self.system_s + self.softirq_s
    }
}

impl CpuTimes {
    /// Reads /proc/stat now.
    pub fn now() -> Result<CpuTimes> {
        let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        parse(&text)
    }

    /// What was spent from `earlier` to `self`.
    pub fn since(&self, earlier: &CpuTimes) -> CpuDelta {
        let s = |a: u64, b: u64| a.saturating_sub(b) as f64 / USER_HZ;
        CpuDelta {
            user_s: s(self.user + self.nice, earlier.user + earlier.nice),
            system_s: s(self.system + self.irq, earlier.system + earlier.irq),
            softirq_s: s(self.softirq, earlier.softirq),
            steal_s: s(self.steal, earlier.steal),
            idle_s: s(self.idle + self.iowait, earlier.idle + earlier.iowait),
        }
    }
}

fn parse(text: &str) -> Result<CpuTimes> {
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("/proc/stat has no aggregate cpu line")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse::<u64>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("parsing /proc/stat line {line:?}"))?;
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    Ok(CpuTimes {
        user: at(0),
        nice: at(1),
        system: at(2),
        idle: at(3),
        iowait: at(4),
        irq: at(5),
        softirq: at(6),
        steal: at(7),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_of_two_samples() {
        let a = parse("cpu  100 0 50 1000 0 0 10 0 0 0\ncpu0 1 2 3\n").unwrap();
        let b = parse("cpu  300 0 70 1100 0 5 60 0 0 0\n").unwrap();
        let d = b.since(&a);
        assert_eq!(d.user_s, 2.0);
        assert_eq!(d.system_s, 0.25);
        assert_eq!(d.softirq_s, 0.5);
        assert_eq!(d.busy_s(), 2.75);
        assert_eq!(d.idle_s, 1.0);
        assert!(parse("intr 1 2").is_err());
    }
}
