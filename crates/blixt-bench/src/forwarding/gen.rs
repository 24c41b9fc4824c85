//! The packet generator, in one of two ways ([`Method`]), both offering the lb node's receive
//! queue the same 64-byte frames as `xdp_frame`s (as if a NIC had received them), from one CPU:
//!
//! - **live frames** ([`Generator`]): bench_gen.bpf.c run through BPF_PROG_TEST_RUN with
//!   `BPF_F_TEST_XDP_LIVE_FRAMES` on the client's end of the client <-> lb veth, from a thread
//!   inside the client namespace pinned to one CPU; every frame it stamps leaves the client
//!   with XDP_TX.
//! - **veth loop** ([`LoopGenerator`], for kernels that refuse live frames, e.g. with EPERM):
//!   bench_gen_loop.bpf.c on `gen1` of a veth pair `gen0 <-> gen1` in the client namespace,
//!   whose NAPI runs as a kthread pinned to the same CPU. A few frames sent into `gen1` once
//!   keep going round: each time the program stamps the next flow into the frame and
//!   redirects it with `BPF_F_BROADCAST` to the client's veth end (a copy for the lb node) and
//!   to `gen0` (back to `gen1`). A control thread on that CPU, at a higher real-time priority,
//!   starts and stops it.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use aya::maps::{Array, DevMap, MapData};
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use blixt_bpf::live::{run_live_frames, BENCH_GEN_OBJ};
use blixt_bpf::testing::{Packet, TcpFlags};
use blixt_lab::NetNs;

static BENCH_GEN_LOOP_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_gen_loop.o"));

/// Source addresses of generated flows: 10.98.0.1 onwards (the low half is stamped per flow).
const SRC_BASE: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 0);
/// Frames per batch: what a NAPI poll takes at most (the kernel's default too).
const BATCH: u32 = 64;
const ETH_IP_LEN: usize = 14 + 20;
/// Every generated frame is this long (bench_gen copies it as 8 words).
pub const FRAME_LEN: usize = 64;

/// What the generated packets are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// UDP datagrams (22 bytes of payload: 64-byte frames).
    Udp,
    /// TCP segments with ACK|PSH and 10 bytes of payload (64-byte frames): packets of an
    /// established connection.
    TcpAck,
}

/// The frame every generated packet starts from, with its checksums for source port 0 and
/// the low half of the source address 0.
#[derive(Debug, Clone)]
pub struct Template {
    pub frame: Vec<u8>,
    pub proto: Proto,
}

impl Template {
    pub fn new(
        proto: Proto,
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        dst: Ipv4Addr,
        dport: u16,
    ) -> Self {
        let ip = Packet::eth(src_mac, dst_mac).ipv4(SRC_BASE, dst);
        let frame = match proto {
            Proto::Udp => ip.udp(0, dport).payload(&[0x5a; 22]).build(),
            Proto::TcpAck => ip
                .tcp(0, dport)
                .flags(TcpFlags::ACK | TcpFlags::PSH)
                .seq(1_000_000)
                .ack(2_000_000)
                .window(65_000)
                .payload(&[0x5a; 10])
                .build(),
        };
        Template { frame, proto }
    }

    fn l4_csum_off(&self) -> usize {
        match self.proto {
            Proto::Udp => 6,
            Proto::TcpAck => 16,
        }
    }

    /// A checksum as the BPF program reads it: the two bytes in frame order, native u16.
    fn word(&self, at: usize) -> u32 {
        u32::from(u16::from_ne_bytes([self.frame[at], self.frame[at + 1]]))
    }
}

/// A loaded generator: one flow pattern, a counter that continues across runs (so "every
/// packet a new flow" never repeats a tuple between warm-up and rounds).
pub struct Generator {
    ebpf: Ebpf,
    frame: Vec<u8>,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator").finish_non_exhaustive()
    }
}

/// What one generator run did.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// Frames stamped and handed to the veth (some may be dropped there when the lb's receive
    /// queue is full: that is the point of an overloaded LB).
    pub frames: u64,
    pub elapsed: Duration,
}

impl Sent {
    pub fn pps(&self) -> f64 {
        self.frames as f64 / self.elapsed.as_secs_f64()
    }
}

/// Loads `obj` (bench_gen.o or bench_gen_loop.o, which share their constants) for
/// `template`, cycling through `flows` flows (0: every packet new).
fn load_gen_object(obj: &[u8], what: &str, template: &Template, flows: u32) -> Result<Ebpf> {
    let t = template;
    ensure!(
        t.frame.len() == FRAME_LEN,
        "template frame is {} bytes, {what} copies {FRAME_LEN}",
        t.frame.len()
    );
    let mut words = [0u64; FRAME_LEN / 8];
    for (w, b) in words.iter_mut().zip(t.frame.chunks_exact(8)) {
        *w = u64::from_ne_bytes(b.try_into().expect("8-byte chunk"));
    }
    let ip_csum = t.word(24);
    let l4_off = t.l4_csum_off() as u32;
    let l4_csum = t.word(ETH_IP_LEN + t.l4_csum_off());
    let udp = u32::from(t.proto == Proto::Udp);
    EbpfLoader::new()
        .override_global("gen_frame", &words, true)
        .override_global("gen_flows", &flows, true)
        .override_global("gen_ip_csum", &ip_csum, true)
        .override_global("gen_l4_csum", &l4_csum, true)
        .override_global("gen_l4_csum_off", &l4_off, true)
        .override_global("gen_udp", &udp, true)
        .load(obj)
        .with_context(|| format!("loading {what}"))
}

impl Generator {
    /// Loads bench_gen for `template`, cycling through `flows` flows (0: every packet new).
    pub fn load(template: &Template, flows: u32) -> Result<Generator> {
        let t = template;
        let mut ebpf = load_gen_object(BENCH_GEN_OBJ, "bench_gen.o", t, flows)?;
        let prog: &mut Xdp = ebpf
            .program_mut("bench_gen")
            .context("bench_gen not in its object")?
            .try_into()
            .context("bench_gen is not XDP")?;
        prog.load().context("loading bench_gen")?;
        Ok(Generator {
            ebpf,
            frame: t.frame.clone(),
        })
    }

    /// Runs for about `duration` on the calling thread, which must be in the client's namespace
    /// (`ifindex` is resolved there), in calls of `chunk` frames each.
    pub fn run(&self, ifindex: u32, duration: Duration, chunk: u32) -> Result<Sent> {
        let prog: &Xdp = self
            .ebpf
            .program("bench_gen")
            .context("bench_gen program")?
            .try_into()
            .context("bench_gen is not XDP")?;
        let start = Instant::now();
        let mut frames = 0u64;
        loop {
            run_live_frames(prog, &self.frame, ifindex, chunk, BATCH)
                .context("running the packet generator")?;
            frames += u64::from(chunk);
            if start.elapsed() >= duration {
                break;
            }
        }
        Ok(Sent {
            frames,
            elapsed: start.elapsed(),
        })
    }
}

/// How this kernel lets the generator offer frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `BPF_F_TEST_XDP_LIVE_FRAMES` ([`Generator`]).
    LiveFrames,
    /// The kernel refused live frames (its error here): the veth loop ([`LoopGenerator`]).
    VethLoop(String),
}

impl Method {
    /// Tries one live frame of `g` into `ifindex` (a frame the lb node then receives, before
    /// any measured round): the live-frame generator if the kernel takes it.
    pub fn detect(g: &Generator, ifindex: u32) -> Method {
        let prog: Option<&Xdp> = g.ebpf.program("bench_gen").and_then(|p| p.try_into().ok());
        match prog.map(|p| run_live_frames(p, &g.frame, ifindex, 1, 1)) {
            Some(Ok(_)) => Method::LiveFrames,
            Some(Err(e)) => Method::VethLoop(e.to_string()),
            None => Method::VethLoop("bench_gen is not loaded".into()),
        }
    }
}

/// The loop's veth pair in the client namespace: `gen0` (addressed) <-> `gen1` (the program).
const LOOP_TX: &str = "gen0";
const LOOP_RX: &str = "gen1";
const LOOP_TX_ADDR: &str = "10.97.0.1";
const LOOP_RX_ADDR: &str = "10.97.0.2";
/// Frames sent into the loop to start it: enough for full NAPI batches, well inside a veth
/// ring (256 frames).
const LOOP_FRAMES: usize = 128;
/// UDP payload that makes a 64-byte frame (14 + 20 + 8 + 22).
const LOOP_PAYLOAD: [u8; 22] = [0x5a; 22];
/// `struct gen_ctl` of bench_gen_loop.bpf.c: seq, sent, limit (u64), run, pad (u32).
const CTL_SIZE: usize = 32;

/// `(ifindex, MAC)` of `dev` in `ns` (sysfs shows the namespace a thread was started in, not
/// the one it entered, so ask `ip`).
fn link_info(ns: &NetNs, dev: &str) -> Result<(u32, String)> {
    let out = ns.ip(&["-j", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("ip -j link show")?;
    let l = v
        .get(0)
        .with_context(|| format!("no link {dev} in {out}"))?;
    let ifindex = l
        .get("ifindex")
        .and_then(|i| i.as_u64())
        .with_context(|| format!("no ifindex for {dev} in {out}"))?;
    let mac = l
        .get("address")
        .and_then(|a| a.as_str())
        .with_context(|| format!("no address for {dev} in {out}"))?;
    Ok((ifindex as u32, mac.to_string()))
}

/// The loop's veth pair, set up once per client namespace; its NAPI kthread pinned to `cpu`.
#[derive(Debug)]
pub struct Loop {
    /// `napi/gen1-<id>` kthread.
    pub napi_pid: String,
}

impl Loop {
    /// Creates `gen0 <-> gen1` in `ns`, with threaded NAPI on `gen1` (`napi` turns it on and
    /// returns its kthread) pinned to `cpu` at [`RT_PRIORITY`].
    pub fn set_up(
        ns: &NetNs,
        cpu: usize,
        napi: impl Fn(&NetNs, &str) -> Result<String>,
    ) -> Result<Loop> {
        let lines = [
            format!("link add {LOOP_TX} type veth peer name {LOOP_RX}"),
            format!("link set {LOOP_TX} up"),
            format!("link set {LOOP_RX} up"),
            format!("addr add {LOOP_TX_ADDR}/30 dev {LOOP_TX}"),
        ];
        for l in &lines {
            ns.ip(&l.split_whitespace().collect::<Vec<_>>())
                .with_context(|| format!("ip {l}"))?;
        }
        let (_, mac) = link_info(ns, LOOP_RX)?;
        ns.ip(&[
            "neigh",
            "replace",
            LOOP_RX_ADDR,
            "lladdr",
            &mac,
            "dev",
            LOOP_TX,
            "nud",
            "permanent",
        ])?;
        // NAPI on gen1 before any program (GRO): it stays up while programs come and go, and
        // makes gen0 a redirect target
        ns.exec(&["ethtool", "-K", LOOP_RX, "gro", "on"])
            .context("GRO on gen1 (ethtool)")?;
        let napi_pid = napi(ns, LOOP_RX)?;
        pin_task(&napi_pid, cpu, RT_PRIORITY)?;
        Ok(Loop { napi_pid })
    }
}

/// bench_gen_loop attached to `gen1` for one template and flow pattern; see the module docs.
pub struct LoopGenerator {
    /// Keeps the program attached to gen1.
    _ebpf: Ebpf,
    ctl: Array<MapData, [u8; CTL_SIZE]>,
}

impl std::fmt::Debug for LoopGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopGenerator").finish_non_exhaustive()
    }
}

fn ctl_decode(b: &[u8; CTL_SIZE]) -> (u64, u64) {
    let u = |o: usize| u64::from_ne_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    (u(0), u(8))
}

impl LoopGenerator {
    /// Loads bench_gen_loop for `template` and `flows` and attaches it to `gen1` in `ns`, its
    /// copies going to `client_ifindex` (the client's end of the veth to the lb node).
    pub fn load(
        ns: &NetNs,
        template: &Template,
        flows: u32,
        client_ifindex: u32,
    ) -> Result<LoopGenerator> {
        let mut ebpf = load_gen_object(BENCH_GEN_LOOP_OBJ, "bench_gen_loop.o", template, flows)?;
        let ctl = Array::try_from(ebpf.take_map("gen_ctl").context("gen_ctl map")?)
            .context("gen_ctl: value size differs from CTL_SIZE")?;
        let mut out: DevMap<MapData> =
            DevMap::try_from(ebpf.take_map("gen_out").context("gen_out map")?)
                .context("gen_out map")?;
        let (tx, _) = link_info(ns, LOOP_TX)?;
        // a devmap resolves ifindexes in the namespace of the thread that writes it
        ns.run_in(|| -> Result<()> {
            out.set(0, client_ifindex, None, 0)
                .context("gen_out[0]: the client's veth end")?;
            out.set(1, tx, None, 0).context("gen_out[1]: gen0")?;
            let prog: &mut Xdp = ebpf
                .program_mut("bench_gen_loop")
                .context("bench_gen_loop not in its object")?
                .try_into()
                .context("bench_gen_loop is not XDP")?;
            prog.load().context("loading bench_gen_loop")?;
            prog.attach(LOOP_RX, XdpMode::Driver)
                .context("attaching bench_gen_loop to gen1")?;
            Ok(())
        })?;
        // the loaded program holds the devmap now; this handle can go
        drop(out);
        Ok(LoopGenerator { _ebpf: ebpf, ctl })
    }

    fn write_ctl(&mut self, sent: u64, limit: u64, run: bool) -> Result<()> {
        let cur = self.ctl.get(&0, 0).context("reading gen_ctl")?;
        let mut b = cur;
        b[8..16].copy_from_slice(&sent.to_ne_bytes());
        b[16..24].copy_from_slice(&limit.to_ne_bytes());
        b[24..28].copy_from_slice(&u32::from(run).to_ne_bytes());
        self.ctl.set(0, b, 0).context("writing gen_ctl")
    }

    fn sent(&self) -> Result<u64> {
        Ok(ctl_decode(&self.ctl.get(&0, 0).context("reading gen_ctl")?).1)
    }

    /// Runs the loop for about `duration` (zero: until it has offered `frames` frames), on the
    /// calling thread, which must be in the client namespace on the loop's CPU at a real-time
    /// priority above its NAPI kthread's.
    pub fn run(&mut self, duration: Duration, frames: u32) -> Result<Sent> {
        let limit = if duration.is_zero() {
            u64::from(frames)
        } else {
            0
        };
        self.write_ctl(0, limit, true)?;
        let sock = UdpSocket::bind((LOOP_TX_ADDR, 0)).context("a UDP socket on gen0")?;
        let inject = |n: usize| -> Result<()> {
            for _ in 0..n {
                sock.send_to(&LOOP_PAYLOAD, (LOOP_RX_ADDR, 9))
                    .context("sending a frame into the generator's loop")?;
            }
            Ok(())
        };
        let start = Instant::now();
        inject(LOOP_FRAMES)?;
        let mut last = 0;
        loop {
            std::thread::sleep(Duration::from_millis(2));
            let sent = self.sent()?;
            if limit > 0 && sent >= limit || limit == 0 && start.elapsed() >= duration {
                break;
            }
            if sent == last {
                // every frame of the loop was lost (a full ring): start it again
                inject(LOOP_FRAMES)?;
            }
            last = sent;
            if start.elapsed() > Duration::from_secs(120) {
                bail!("the generator's loop offered {sent} of {limit} frames in 2 minutes");
            }
        }
        self.write_ctl(self.sent()?, limit, false)?;
        let elapsed = start.elapsed();
        let frames = self.sent()?;
        // the frames still in the loop are dropped on their next pass
        std::thread::sleep(Duration::from_millis(1));
        Ok(Sent { frames, elapsed })
    }
}

impl Drop for LoopGenerator {
    fn drop(&mut self) {
        // stop the loop before the program goes (it would stop anyway: no program, no loop)
        let _ = self.write_ctl(0, 0, false);
    }
}

/// Real-time priority of the generator thread and the lb's NAPI kthread (SCHED_FIFO).
pub const RT_PRIORITY: u32 = 50;

/// Pins the calling thread to `cpu` and gives it [`RT_PRIORITY`] (`taskset`/`chrt` on its
/// thread id: no `unsafe` needed).
pub fn pin_current_thread(cpu: usize) -> Result<()> {
    pin_current_thread_at(cpu, RT_PRIORITY)
}

/// [`pin_current_thread`] at real-time priority `priority`.
pub fn pin_current_thread_at(cpu: usize, priority: u32) -> Result<()> {
    let link = std::fs::read_link("/proc/thread-self").context("reading /proc/thread-self")?;
    let tid = link
        .file_name()
        .and_then(|s| s.to_str())
        .context("thread id from /proc/thread-self")?
        .to_string();
    pin_task(&tid, cpu, priority)
}

/// Pins task (thread or kthread) `tid` to `cpu` and makes it SCHED_FIFO at `priority`:
/// on a real NIC the receive path runs in softirq context, ahead of every process; a
/// threaded NAPI (or the generator) at normal priority would instead share its CPU with
/// whatever else the machine runs (compilers, on these shared machines).
pub fn pin_task(tid: &str, cpu: usize, priority: u32) -> Result<()> {
    let prio = priority.to_string();
    let cpu = cpu.to_string();
    for (tool, args) in [
        ("taskset", ["-p", "-c", cpu.as_str(), tid]),
        ("chrt", ["-f", "-p", prio.as_str(), tid]),
    ] {
        let out = std::process::Command::new(tool)
            .args(args)
            .output()
            .with_context(|| format!("running {tool} (util-linux)"))?;
        ensure!(
            out.status.success(),
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_64_byte_frames() {
        for p in [Proto::Udp, Proto::TcpAck] {
            let t = Template::new(p, [2; 6], [4; 6], Ipv4Addr::new(10, 99, 100, 1), 53);
            assert_eq!(t.frame.len(), FRAME_LEN, "{p:?}");
        }
    }
}
