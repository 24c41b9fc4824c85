//! `blixt inspect`: the live dataplane, read from the pinned maps (read-only, so it works
//! beside a running agent): frontends, backends with states, Maglev shares, counters,
//! conntrack entries and drop reasons.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use blixt_bpf::shared::{
    addr_from, BackendValue, CtEntry, FlowKey, BE_F_ACTIVE, BE_F_TERMINATING, CT_CLOSING,
    CT_DIR_FORWARD, CT_ESTABLISHED, FE_F_ALL_REJECT, SLOT_REJECT, STAT_NAMES,
};
use blixt_bpf::PinnedDataplane;
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The agent's pin directory.
    #[arg(long, default_value = "/sys/fs/bpf/blixt")]
    pin_dir: PathBuf,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: Format,
    /// List conntrack entries (forward direction), at most this many.
    #[arg(long, default_value_t = 0)]
    conntrack: usize,
    /// Only conntrack entries whose client, VIP, node or backend address is this one.
    #[arg(long)]
    addr: Option<IpAddr>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Debug, Serialize)]
pub struct Inspection {
    frontends: Vec<FrontendInfo>,
    conntrack_entries: usize,
    flows: Vec<FlowInfo>,
    events: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
struct FrontendInfo {
    id: u32,
    protocol: String,
    vip: IpAddr,
    port: u16,
    all_reject: bool,
    new_flows: u64,
    rejects: u64,
    reject_slots: u32,
    backends: Vec<BackendInfo>,
}

#[derive(Debug, Serialize)]
struct BackendInfo {
    id: u32,
    addr: IpAddr,
    port: u16,
    state: &'static str,
    slots: u32,
    share_percent: f64,
    packets: u64,
    bytes: u64,
    new_flows: u64,
}

#[derive(Debug, Serialize)]
struct FlowInfo {
    protocol: &'static str,
    client: String,
    vip: String,
    node: String,
    backend: String,
    backend_id: u32,
    state: &'static str,
    idle_s: u64,
}

fn sock(addr: IpAddr, port_be: u16) -> String {
    let port = u16::from_be(port_be);
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

fn flow(key: &FlowKey, e: &CtEntry, now: u64) -> FlowInfo {
    FlowInfo {
        protocol: if key.proto == 6 { "TCP" } else { "UDP" },
        client: sock(key.src_addr(), key.sport),
        vip: sock(key.dst_addr(), key.dport),
        node: sock(addr_from(&e.nsrc, key.family), e.nsport),
        backend: sock(addr_from(&e.ndst, key.family), e.ndport),
        backend_id: e.backend_id,
        state: match e.state {
            CT_ESTABLISHED => "established",
            CT_CLOSING => "closing",
            _ => "new",
        },
        idle_s: now.saturating_sub(e.last_seen_ns) / 1_000_000_000,
    }
}

/// Reads everything from the pinned maps.
pub fn inspect(
    p: &PinnedDataplane,
    max_flows: usize,
    filter: Option<IpAddr>,
) -> Result<Inspection> {
    let cfg = p.node_config()?;
    let backends: Vec<(u32, BackendValue)> = (0..)
        .map_while(|id| p.backends.get(&id, 0).ok().map(|b| (id, b)))
        .filter(|(_, b)| b.flags & BE_F_ACTIVE != 0)
        .collect();
    let mut frontends = Vec::new();
    for item in p.frontends.iter() {
        let (k, v) = item?;
        let ring = p.ring(v.ring, cfg.ring_size)?;
        let mut slots: BTreeMap<u32, u32> = BTreeMap::new();
        for s in &ring {
            *slots.entry(*s).or_default() += 1;
        }
        let total = ring.len().max(1) as f64;
        let fc = p.frontend_counters(v.id)?;
        let mut bes = Vec::new();
        for (id, b) in backends.iter().filter(|(_, b)| b.frontend_id == v.id) {
            let c = p.backend_counters(*id)?;
            let n = slots.get(id).copied().unwrap_or(0);
            bes.push(BackendInfo {
                id: *id,
                addr: addr_from(&b.addr, b.family),
                port: u16::from_be(b.port),
                state: if b.flags & BE_F_TERMINATING != 0 {
                    "terminating"
                } else {
                    "active"
                },
                slots: n,
                share_percent: (1000.0 * f64::from(n) / total).round() / 10.0,
                packets: c.packets,
                bytes: c.bytes,
                new_flows: c.new_flows,
            });
        }
        frontends.push(FrontendInfo {
            id: v.id,
            protocol: if k.proto == 6 { "TCP" } else { "UDP" }.to_string(),
            vip: addr_from(&k.addr, k.family),
            port: u16::from_be(k.port),
            all_reject: v.flags & FE_F_ALL_REJECT != 0,
            new_flows: fc.new_flows,
            rejects: fc.rejects,
            reject_slots: slots.get(&SLOT_REJECT).copied().unwrap_or(0),
            backends: bes,
        });
    }
    frontends.sort_by_key(|f| (f.vip, f.port, f.protocol.clone()));

    let now = blixt_agent::reconciler::monotonic_ns();
    let mut conntrack_entries = 0;
    let mut flows = Vec::new();
    for item in p.conntrack.iter() {
        let Ok((k, e)) = item else { continue };
        conntrack_entries += 1;
        if e.dir != CT_DIR_FORWARD || flows.len() >= max_flows {
            continue;
        }
        if let Some(a) = filter {
            let addrs = [
                k.src_addr(),
                k.dst_addr(),
                addr_from(&e.nsrc, k.family),
                addr_from(&e.ndst, k.family),
            ];
            if !addrs.contains(&a) {
                continue;
            }
        }
        flows.push(flow(&k, &e, now));
    }
    let events = STAT_NAMES
        .iter()
        .zip(p.global_counters()?)
        .map(|(n, v)| (n.to_string(), v))
        .collect();
    Ok(Inspection {
        frontends,
        conntrack_entries,
        flows,
        events,
    })
}

fn print_table(i: &Inspection) {
    println!(
        "{:<5} {:<4} {:<28} {:>10} {:>8} {:>7}",
        "ID", "PROTO", "FRONTEND", "NEW-FLOWS", "REJECTS", "REJECT%"
    );
    for f in &i.frontends {
        let vip = match f.vip {
            IpAddr::V4(a) => format!("{a}:{}", f.port),
            IpAddr::V6(a) => format!("[{a}]:{}", f.port),
        };
        let ring: u32 = f.backends.iter().map(|b| b.slots).sum::<u32>() + f.reject_slots;
        println!(
            "{:<5} {:<5} {:<28} {:>9} {:>8} {:>6.1}%{}",
            f.id,
            f.protocol,
            vip,
            f.new_flows,
            f.rejects,
            100.0 * f64::from(f.reject_slots) / f64::from(ring.max(1)),
            if f.all_reject {
                "  (no valid backend: rejects all)"
            } else {
                ""
            }
        );
        for b in &f.backends {
            let addr = match b.addr {
                IpAddr::V4(a) => format!("{a}:{}", b.port),
                IpAddr::V6(a) => format!("[{a}]:{}", b.port),
            };
            println!(
                "      └ {:<5} {:<30} {:<11} share {:>5.1}%  flows {:>7}  packets {:>9}  bytes {:>11}",
                b.id, addr, b.state, b.share_percent, b.new_flows, b.packets, b.bytes
            );
        }
    }
    println!(
        "conntrack entries (both directions): {}",
        i.conntrack_entries
    );
    for f in &i.flows {
        println!(
            "  {} {} -> {}  =>  {} -> {}  {} idle {}s",
            f.protocol, f.client, f.vip, f.node, f.backend, f.state, f.idle_s
        );
    }
    let events: Vec<String> = i
        .events
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!(
        "events: {}",
        if events.is_empty() {
            "none".to_string()
        } else {
            events.join(" ")
        }
    );
}

pub fn run(args: InspectArgs) -> Result<()> {
    let p = PinnedDataplane::open(&args.pin_dir)
        .with_context(|| format!("opening the dataplane pinned at {}", args.pin_dir.display()))?;
    let i = inspect(&p, args.conntrack, args.addr)?;
    match args.output {
        Format::Table => print_table(&i),
        Format::Json => println!("{}", serde_json::to_string_pretty(&i)?),
    }
    Ok(())
}
