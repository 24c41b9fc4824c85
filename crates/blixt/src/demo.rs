//! `blixt demo`: a namespace lab (client, load-balancer node, three backends), the agent on the
//! node, real TCP and UDP traffic over IPv4 and IPv6, and the per-backend distribution next to
//! the configured weights; then a live weight change and a refused bad config while traffic
//! flows. Everything it creates is removed at the end.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use blixt_bpf::shared::{BE_F_ACTIVE, STAT_NAMES};
use blixt_bpf::PinnedDataplane;
use blixt_lab::process::LabProcess;
use blixt_lab::topology::{Lab, LabSpec};
use blixt_lab::traffic::{self, LongLived, Report, UdpOptions};
use blixt_lab::{EchoConfig, EchoServer};

const BACKEND_PORT: u16 = 8080;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Connections and UDP flows per family and protocol.
    #[arg(long, default_value_t = 1000)]
    flows: usize,
}

/// Progress lines with the time since start, for a person watching.
struct Progress {
    t0: Instant,
    step: usize,
    steps: usize,
}

impl Progress {
    fn step(&mut self, what: &str) {
        self.step += 1;
        println!(
            "[{}/{}] {what} ({:.1}s)",
            self.step,
            self.steps,
            self.t0.elapsed().as_secs_f64()
        );
        let _ = std::io::stdout().flush();
    }
}

struct Cleanup {
    agent: Option<LabProcess>,
    pins: PathBuf,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.terminate(Duration::from_secs(2));
        }
        let _ = blixt_bpf::Dataplane::remove_pinned(&self.pins);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The manifests of examples/standalone, built in so the demo runs from anywhere.
const EXAMPLES: &[(&str, &str)] = &[
    (
        "gateway.yaml",
        include_str!("../../../examples/standalone/gateway.yaml"),
    ),
    (
        "routes.yaml",
        include_str!("../../../examples/standalone/routes.yaml"),
    ),
    (
        "backends.yaml",
        include_str!("../../../examples/standalone/backends.yaml"),
    ),
    (
        "node.yaml",
        include_str!("../../../examples/standalone/node.yaml"),
    ),
];

fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn wait_generation(agent: &mut LabProcess, generation: u64) -> Result<()> {
    let want = format!("\"generation\":{generation}}}");
    agent
        .wait_for_line(Duration::from_secs(30), |l| l.contains(&want))
        .with_context(|| format!("blixt run did not apply generation {generation}"))?;
    Ok(())
}

fn status(socket: &Path) -> Result<String> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("status")
        .arg("--socket")
        .arg(socket)
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

fn share_table(weights: &[u32], columns: &[(String, &Report)]) {
    let wsum: u32 = weights.iter().sum();
    print!("  {:<8} {:>6} {:>9}", "backend", "weight", "expected");
    for (name, _) in columns {
        print!(" {name:>9}");
    }
    println!();
    for (i, w) in weights.iter().enumerate() {
        let name = format!("be{i}");
        print!(
            "  {name:<8} {w:>6} {:>8.1}%",
            100.0 * f64::from(*w) / f64::from(wsum)
        );
        for (_, r) in columns {
            let n = r.backends.get(&name).copied().unwrap_or(0);
            print!(" {:>8.1}%", 100.0 * n as f64 / r.ok.max(1) as f64);
        }
        println!();
    }
    print!("  {:<8} {:>6} {:>9}", "ok", "", "");
    for (_, r) in columns {
        print!(" {:>9}", format!("{}/{}", r.ok, r.attempted));
    }
    println!();
}

pub fn run(args: DemoArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo needs root (BPF and network namespaces): run it as root");
    }
    let mut p = Progress {
        t0: Instant::now(),
        step: 0,
        steps: 6,
    };
    p.step("building the lab: client, load-balancer node, 3 backends (veth, IPv4 + IPv6)");
    let lab = Lab::build(LabSpec::with_backends(3)).context("building the lab")?;
    lab.attach_peer_xdp(&blixt_bpf::loader::peer_pass_object()?)?;
    let _servers: Vec<EchoServer> = lab
        .backends
        .iter()
        .map(|b| EchoServer::start_in(&b.ns, EchoConfig::new(b.name.clone(), BACKEND_PORT)))
        .collect::<Result<_>>()?;
    let dir = std::env::temp_dir().join(format!("blixt-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut cleanup = Cleanup {
        agent: None,
        pins: PathBuf::from(format!("/sys/fs/bpf/blixt-demo-{}", std::process::id())),
        dir: dir.clone(),
    };
    // the examples, with this run's pin directory and status socket
    let pins = cleanup.pins.display().to_string();
    let socket = dir.join("status.sock");
    for (name, text) in EXAMPLES {
        let text = text
            .replace("pinDir: /sys/fs/bpf/blixt", &format!("pinDir: {pins}"))
            .replace(
                "statusSocket: /run/blixt/status.sock",
                &format!("statusSocket: {}", socket.display()),
            );
        std::fs::write(dir.join(name), text)?;
    }
    let weights = [2, 1, 1];

    p.step(&format!(
        "starting `blixt run --config {}` on the node (XDP on every node interface)",
        dir.display()
    ));
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("run").arg("--config").arg(&dir);
    cmd.env(
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
    );
    let agent = cleanup
        .agent
        .insert(lab.lb.spawn_netns_only("blixt run", cmd)?);
    wait_generation(agent, 1)?;
    print!("{}", indent(&status(&socket)?));

    let v4 = IpAddr::from(lab.vip4(1));
    let v6 = IpAddr::from(lab.vip6(1));
    p.step(&format!(
        "sending {} TCP connections and {} UDP flows to {v4} and {v6}",
        args.flows, args.flows
    ));
    let n = args.flows;
    let reports: Vec<(String, Report)> = lab.client.ns.run_in(|| {
        let mut out = Vec::new();
        for (fam, vip) in [("v4", v4), ("v6", v6)] {
            let t = traffic::tcp_burst(SocketAddr::new(vip, 80), n, 32, Duration::from_secs(5));
            let u = traffic::udp_flows(SocketAddr::new(vip, 53), n, &UdpOptions::default());
            out.push((format!("TCP {fam}"), t));
            out.push((format!("UDP {fam}"), u));
        }
        out.into_iter()
            .map(|(k, r)| r.map(|r| (k, r)))
            .collect::<Result<Vec<_>>>()
    })?;
    for (proto, w) in [("TCP", &weights[..]), ("UDP", &[1, 1, 1][..])] {
        let cols: Vec<(String, &Report)> = reports
            .iter()
            .filter(|(k, _)| k.starts_with(proto))
            .map(|(k, r)| (k.clone(), r))
            .collect();
        println!("  {proto}Route weights:");
        share_table(w, &cols);
    }
    let seen: BTreeMap<IpAddr, usize> = reports
        .iter()
        .flat_map(|(_, r)| r.peers_seen.clone())
        .collect();
    println!(
        "  backends saw only the node's addresses {:?} (full-NAT); every reply came from the VIP: {}",
        seen.keys().collect::<Vec<_>>(),
        reports.iter().all(|(_, r)| r.wrong_source == 0)
    );
    print_counters(&cleanup.pins)?;

    p.step("changing weights to 1:1:2 while 100 connections stay open");
    let tcp4 = SocketAddr::new(v4, 80);
    let long = lab.client.ns.run_in(|| {
        LongLived::start(tcp4, 100, Duration::from_millis(50), Duration::from_secs(3))
    })?;
    long.wait_rounds(2, Duration::from_secs(10))?;
    let weights = [1, 1, 2];
    let routes = dir.join("routes.yaml");
    let original = std::fs::read_to_string(&routes)?;
    let edited = original
        .replacen(
            "name: be0\n      port: 8080\n      weight: 2",
            "name: be0\n      port: 8080\n      weight: 1",
            1,
        )
        .replacen(
            "name: be2\n      port: 8080\n      weight: 1",
            "name: be2\n      port: 8080\n      weight: 2",
            1,
        );
    write_atomic(&routes, &edited)?;
    println!("  edited routes.yaml: TCPRoute weights be0=1 be1=1 be2=2");
    wait_generation(cleanup.agent.as_mut().expect("agent"), 2)?;
    let after = lab
        .client
        .ns
        .run_in(|| traffic::tcp_burst(tcp4, n, 32, Duration::from_secs(5)))?;
    share_table(&weights, &[("TCP v4".to_string(), &after)]);

    p.step(
        "writing a broken routes.yaml (a port that is not a number): refused, traffic unaffected",
    );
    write_atomic(&routes, &edited.replacen("port: 8080", "port: eighty", 1))?;
    std::thread::sleep(Duration::from_millis(500));
    print!(
        "{}",
        indent(
            &status(&socket)?
                .lines()
                .take(6)
                .collect::<Vec<_>>()
                .join("\n")
        )
    );
    let still = lab
        .client
        .ns
        .run_in(|| traffic::tcp_burst(tcp4, 200, 16, Duration::from_secs(5)))?;
    println!(
        "  after the refused config: {}/{} new connections ok",
        still.ok, still.attempted
    );
    long.wait_rounds(2, Duration::from_secs(10))?;
    let r = long.stop();
    println!(
        "  long-lived connections across both changes: {} of {} broken, {} messages",
        r.broken, r.conns, r.messages
    );

    p.step("cleaning up (agent, pinned programs and maps, namespaces)");
    drop(cleanup);
    Ok(())
}

fn print_counters(pins: &Path) -> Result<()> {
    let p = PinnedDataplane::open(pins)?;
    let mut packets = 0;
    let mut flows = 0;
    for id in 0..16384u32 {
        match p.backends.get(&id, 0) {
            Ok(b) if b.flags & BE_F_ACTIVE != 0 => {
                let c = p.backend_counters(id)?;
                packets += c.packets;
                flows += c.new_flows;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    println!("  XDP counters: {flows} new flows, {packets} packets forwarded by the BPF path");
    let g = p.global_counters()?;
    let nonzero: Vec<String> = STAT_NAMES
        .iter()
        .zip(&g)
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !nonzero.is_empty() {
        println!("  other counters: {}", nonzero.join(" "));
    }
    Ok(())
}
