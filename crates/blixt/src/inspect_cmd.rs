//! `blixt inspect`: the live dataplane, read from the pinned maps (read-only, so it works
//! beside a running agent): frontends, backends with states, Maglev shares, counters,
//! conntrack entries and drop reasons. TLS passthrough lives in the `blixt run` process, not
//! in maps: with `--socket` its SNI tables and counters come from the status socket.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use blixt_agent::tls::TlsStatus;
use blixt_bpf::shared::{
    addr_from, BackendValue, CtEntry, FlowKey, BE_F_ACTIVE, BE_F_TERMINATING, CT_CLOSING,
    CT_DIR_FORWARD, CT_ESTABLISHED, FE_F_ALL_REJECT, SLOT_REJECT, STAT_NAMES,
};
use blixt_bpf::PinnedDataplane;
use blixt_core::snapshot::BackendState;
use serde::Serialize;

use crate::status_socket::StatusMessage;

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
    /// Status socket of a running `blixt run` (NodeConfig `statusSocket`): adds its TLS
    /// passthrough listeners, SNI routes, backends and counters.
    #[arg(long)]
    socket: Option<PathBuf>,
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
    /// From `--socket`: `None` without it, or when `blixt run` serves no TLS listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<TlsStatus>,
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
        tls: None,
    })
}

/// The TLS part of a running `blixt run`, from its status socket.
pub fn tls_from_socket(path: &Path) -> Result<Option<TlsStatus>> {
    let mut conn = UnixStream::connect(path)
        .with_context(|| format!("connecting to {} (is `blixt run` running?)", path.display()))?;
    let mut body = Vec::new();
    conn.read_to_end(&mut body)?;
    let msg: StatusMessage = serde_json::from_slice(&body).context("status message")?;
    Ok(msg.tls)
}

fn sock_addr(a: SocketAddr) -> String {
    match a.ip() {
        IpAddr::V4(ip) => format!("{ip}:{}", a.port()),
        IpAddr::V6(ip) => format!("[{ip}]:{}", a.port()),
    }
}

fn reasons(r: &BTreeMap<String, u64>) -> String {
    if r.is_empty() {
        return "-".to_string();
    }
    r.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The TLS section of the table: each frontend with its counters, its SNI entries in
/// precedence order with their route's counters, and each entry's backends with theirs.
pub fn render_tls(t: &TlsStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<28} {:<30} {:>9} {:>9} {:>6}  REJECTS",
        "TLS FRONTEND", "NAME", "ACCEPTED", "FORWARDED", "ACTIVE"
    );
    for fe in &t.frontends {
        let addr = SocketAddr::new(fe.vip, fe.port);
        let l = t.listeners.iter().find(|l| l.addr == addr);
        let _ = writeln!(
            out,
            "{:<28} {:<30} {:>9} {:>9} {:>6}  {}",
            sock_addr(addr),
            fe.name,
            l.map_or(0, |l| l.accepted),
            l.map_or(0, |l| l.forwarded),
            l.map_or(0, |l| l.active),
            l.map_or_else(|| "-".to_string(), |l| reasons(&l.rejects)),
        );
        for r in &fe.routes {
            let label = r
                .route
                .clone()
                .unwrap_or_else(|| format!("listener:{}", r.hostname.to_ascii_lowercase()));
            let rc = t
                .routes
                .iter()
                .find(|c| c.frontend == addr && c.route == label);
            let target = match &r.route {
                Some(route) => format!("TLSRoute {route}"),
                None => format!("listener {} (no route: rejects)", r.listener),
            };
            let _ = writeln!(
                out,
                "  SNI {:<24} -> {:<34} connections {:>7}  rejects {}",
                r.hostname,
                target,
                rc.map_or(0, |c| c.connections),
                rc.map_or_else(|| "-".to_string(), |c| reasons(&c.rejects)),
            );
            if r.reject_weight > 0 {
                let _ = writeln!(
                    out,
                    "      └ (invalid backends)              weight {:>3}",
                    r.reject_weight
                );
            }
            for b in &r.backends {
                let baddr = SocketAddr::new(b.addr.addr, b.addr.port);
                let bc = t
                    .backends
                    .iter()
                    .find(|c| c.frontend == addr && c.backend == baddr);
                let state = match b.state {
                    BackendState::Active => "active",
                    BackendState::Terminating => "terminating",
                };
                let _ = writeln!(
                    out,
                    "      └ {:<30} {:<11} weight {:>3}  connections {:>7}  active {:>5}  connect errors {}  bytes {} out / {} in",
                    sock_addr(baddr),
                    state,
                    b.weight,
                    bc.map_or(0, |c| c.connections),
                    bc.map_or(0, |c| c.active),
                    bc.map_or(0, |c| c.connect_errors),
                    bc.map_or(0, |c| c.bytes_sent),
                    bc.map_or(0, |c| c.bytes_received),
                );
            }
        }
    }
    if t.frontends.is_empty() {
        let _ = writeln!(out, "  (no TLS listener)");
    }
    let steering = t.steering.map_or_else(
        || "-".to_string(),
        |s| format!("steered {}, assign failed {}", s.steered, s.assign_failed),
    );
    let _ = writeln!(
        out,
        "tls: generation {}, tables applied {}, pending handshakes {}, sk_lookup {steering}",
        t.generation, t.table_updates, t.pending_handshakes
    );
    if let Some(e) = &t.error {
        let _ = writeln!(out, "tls error: {e}");
    }
    out
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
    let mut i = inspect(&p, args.conntrack, args.addr)?;
    if let Some(sock) = &args.socket {
        i.tls = tls_from_socket(sock)?;
    }
    match args.output {
        Format::Table => {
            print_table(&i);
            match (&i.tls, &args.socket) {
                (Some(t), _) => print!("\n{}", render_tls(t)),
                (None, Some(_)) => println!("\ntls: no TLS listener configured"),
                (None, None) => {}
            }
        }
        Format::Json => println!("{}", serde_json::to_string_pretty(&i)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use blixt_agent::tls::{TlsBackendCounters, TlsListenerCounters, TlsRouteCounters};
    use blixt_core::snapshot::{Backend, BackendAddr};
    use blixt_core::tls::{SniRoute, TlsFrontend};

    fn status() -> TlsStatus {
        let vip: SocketAddr = "10.99.100.2:443".parse().unwrap();
        let be0: SocketAddr = "10.99.10.2:8443".parse().unwrap();
        let backend = |a: SocketAddr, weight| Backend {
            addr: BackendAddr {
                addr: a.ip(),
                port: a.port(),
            },
            weight,
            state: BackendState::Active,
        };
        TlsStatus {
            generation: 3,
            error: None,
            frontends: vec![TlsFrontend {
                name: "default/demo-tls/tls".into(),
                vip: vip.ip(),
                port: vip.port(),
                routes: vec![
                    SniRoute {
                        hostname: "a.example.com".into(),
                        listener: "tls".into(),
                        route: Some("default/tls-a".into()),
                        backends: vec![backend(be0, 1)],
                        reject_weight: 1,
                    },
                    SniRoute {
                        hostname: "*.Other.example.com".into(),
                        listener: "other".into(),
                        route: None,
                        backends: vec![],
                        reject_weight: 0,
                    },
                ],
            }],
            listeners: vec![TlsListenerCounters {
                addr: vip,
                name: "default/demo-tls/tls".into(),
                accepted: 7,
                forwarded: 4,
                active: 2,
                idle_timeouts: 0,
                bytes_from_clients: 100,
                bytes_to_clients: 200,
                rejects: [("no_sni".to_string(), 1), ("no_match".to_string(), 2)].into(),
            }],
            routes: vec![
                TlsRouteCounters {
                    frontend: vip,
                    route: "default/tls-a".into(),
                    connections: 4,
                    rejects: BTreeMap::new(),
                },
                TlsRouteCounters {
                    frontend: vip,
                    route: "listener:*.other.example.com".into(),
                    connections: 0,
                    rejects: [("no_route".to_string(), 5)].into(),
                },
            ],
            backends: vec![TlsBackendCounters {
                frontend: vip,
                backend: be0,
                connections: 4,
                active: 2,
                connect_errors: 1,
                bytes_sent: 1234,
                bytes_received: 5678,
            }],
            pending_handshakes: 0,
            table_updates: 3,
            steering: Some(blixt_agent::tls::TlsSteerCounters {
                steered: 7,
                assign_failed: 0,
            }),
        }
    }

    #[test]
    fn tls_table_shows_frontends_routes_backends_and_counters() {
        let out = render_tls(&status());
        let lines: Vec<&str> = out.lines().collect();
        let words = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            words(lines[1]),
            [
                "10.99.100.2:443",
                "default/demo-tls/tls",
                "7",
                "4",
                "2",
                "no_match=2",
                "no_sni=1"
            ],
            "{out}"
        );
        assert_eq!(
            words(lines[2]),
            [
                "SNI",
                "a.example.com",
                "->",
                "TLSRoute",
                "default/tls-a",
                "connections",
                "4",
                "rejects",
                "-"
            ],
            "{out}"
        );
        assert!(lines[3].contains("(invalid backends)") && lines[3].contains("weight   1"));
        assert!(
            lines[4].contains("10.99.10.2:8443")
                && lines[4].contains("connections       4")
                && lines[4].contains("connect errors 1")
                && lines[4].contains("bytes 1234 out / 5678 in"),
            "{out}"
        );
        // an isolation entry: no route, its counters under listener:<hostname>
        assert!(
            lines[5].contains("*.Other.example.com")
                && lines[5].contains("listener other (no route: rejects)")
                && lines[5].contains("no_route=5"),
            "{out}"
        );
        assert!(
            out.contains("tls: generation 3, tables applied 3, pending handshakes 0, sk_lookup steered 7, assign failed 0"),
            "{out}"
        );
    }

    #[test]
    fn status_message_carries_tls_and_older_messages_still_parse() {
        let msg = StatusMessage {
            generation: 3,
            tls: Some(status()),
            ..StatusMessage::default()
        };
        let json = serde_json::to_string(&msg).unwrap();
        let back: StatusMessage = serde_json::from_str(&json).unwrap();
        assert_eq!(back.tls, Some(status()));
        // a `blixt run` without TLS (or an older one) sends no `tls` field
        let plain = serde_json::to_string(&StatusMessage::default()).unwrap();
        assert!(!plain.contains("tls"), "{plain}");
        let back: StatusMessage = serde_json::from_str(&plain).unwrap();
        assert_eq!(back.tls, None);
    }
}
