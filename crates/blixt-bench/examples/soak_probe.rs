//! The sustained-load probe of docs/reliability.md ("Sustained load", issue 17 finding 1): ONE
//! end-to-end lab, never rebuilt, one system on its lb node, and wrk's short connections
//! (`-t1 -c32`, `Connection: close`; the backends close first and keep TIME_WAIT) in
//! back-to-back rounds. After every round: the rate, p99, wrk's errors, the TCP counters that
//! moved in the client and the backends, TIME_WAIT sockets per backend, and the lb's
//! counters (Blixt's global counters that moved).
//!
//! `cargo run --release -p blixt-bench --example soak_probe -- SYSTEM [SECONDS] [ROUND_S]
//! [CLOSING_TIMEOUT_S]` as root. SYSTEM: `blixt` (default), `tc`, `iptables` or `nftables`;
//! CLOSING_TIMEOUT_S: Blixt at XDP with that closing timeout instead of the default.

use std::time::{Duration, Instant};

use anyhow::Result;
use blixt_bench::end_to_end::lab::E2eLab;
use blixt_bench::end_to_end::peers::{self, BlixtLb, Evidence, Installed, System};
use blixt_bench::end_to_end::tcp_counters::TcpCounters;
use blixt_bench::end_to_end::wrk::{Wrk, WrkOptions};
use blixt_lab::NetNs;

/// What runs on the lb node.
enum Lb {
    Installed(Box<Installed>),
    Blixt(BlixtLb),
}

impl Lb {
    fn evidence(&mut self, lab: &E2eLab) -> Result<Evidence> {
        match self {
            Lb::Installed(i) => i.evidence(&lab.lab),
            Lb::Blixt(b) => b.evidence(),
        }
    }
}

fn time_wait(ns: &NetNs) -> usize {
    ns.exec(&["ss", "-tanH", "state", "time-wait"])
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// `Name=value` of the counters that moved.
fn moved(t: &TcpCounters) -> String {
    t.0.iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{}={v}", k.split(':').nth(1).unwrap_or(k)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let system = match args.get(1).map(String::as_str) {
        Some("iptables") => System::Iptables,
        Some("nftables") => System::Nftables,
        Some("tc") => System::BlixtTc,
        _ => System::Blixt,
    };
    let total: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(90);
    let round: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    let closing: Option<u32> = args.get(4).and_then(|s| s.parse().ok());
    let lab = E2eLab::build_with_prefix(3, "blxp")?;
    let mut lb = match closing {
        Some(c) => {
            let b = BlixtLb::start(&lab.lab, &lab.services(), blixt_bpf::AttachMode::Xdp)?;
            let node = blixt_agent::NodeConfig {
                snat_v4: Some(lab.lab.client.link.lb_v4.into()),
                snat_v6: Some(lab.lab.client.link.lb_v6.into()),
                tcp_closing_timeout_s: c,
                ..blixt_agent::NodeConfig::default()
            };
            b.reconciler()
                .lock()
                .map_err(|_| anyhow::anyhow!("reconciler lock poisoned"))?
                .set_node_config(&node)?;
            Lb::Blixt(b)
        }
        None => Lb::Installed(Box::new(peers::install(system, &lab.lab, &lab.services())?)),
    };
    let wrk = Wrk::new()?;
    let mut o = WrkOptions::new(Duration::from_secs(round)).closing();
    o.threads = 1;
    o.connections = 32;
    let t0 = Instant::now();
    let mut ev0 = lb.evidence(&lab)?;
    while t0.elapsed().as_secs() < total {
        let c0 = TcpCounters::read(&lab.lab.client.ns)?;
        let b0 = lab
            .lab
            .backends
            .iter()
            .map(|b| TcpCounters::read(&b.ns))
            .collect::<Result<Vec<_>>>()?;
        let r = wrk.run(&lab.lab.client.ns, lab.http_target(), &o)?;
        let client = TcpCounters::read(&lab.lab.client.ns)?.since(&c0);
        let mut backends = TcpCounters::default();
        for (b, before) in lab.lab.backends.iter().zip(&b0) {
            backends.add(&TcpCounters::read(&b.ns)?.since(before));
        }
        let tw: Vec<usize> = lab.lab.backends.iter().map(|b| time_wait(&b.ns)).collect();
        let ev = lb.evidence(&lab)?;
        let d = ev.since(&ev0);
        ev0 = ev;
        println!(
            "t={:>3}s rate={:>7.0}/s p99={:.1}ms max={:.1}ms err=[{}] tw_be={tw:?} tw_cl={}\n   \
             client: {}\n   backends: {}\n   lb: {:?}",
            t0.elapsed().as_secs(),
            r.rate(),
            r.p99_us as f64 / 1e3,
            r.max_us as f64 / 1e3,
            r.error_summary(),
            time_wait(&lab.lab.client.ns),
            moved(&client),
            moved(&backends),
            d.blixt_stats,
        );
    }
    if let Lb::Installed(i) = lb {
        i.remove(&lab.lab)?;
    }
    Ok(())
}
