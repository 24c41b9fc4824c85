//! The packet generator: bench_gen.bpf.c run through BPF_PROG_TEST_RUN in live-frame mode on
//! the client's end of the client <-> lb veth, from a thread inside the client namespace
//! pinned to one CPU. Every frame it stamps leaves the client with XDP_TX and lands in the lb
//! node's receive queue, as if a NIC had received it.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use aya::programs::Xdp;
use aya::{Ebpf, EbpfLoader};
use blixt_bpf::live::{run_live_frames, BENCH_GEN_OBJ};
use blixt_bpf::testing::{Packet, TcpFlags};

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

impl Generator {
    /// Loads bench_gen for `template`, cycling through `flows` flows (0: every packet new).
    pub fn load(template: &Template, flows: u32) -> Result<Generator> {
        let t = template;
        ensure!(
            t.frame.len() == FRAME_LEN,
            "template frame is {} bytes, bench_gen copies {FRAME_LEN}",
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
        let mut ebpf = EbpfLoader::new()
            .override_global("gen_frame", &words, true)
            .override_global("gen_flows", &flows, true)
            .override_global("gen_ip_csum", &ip_csum, true)
            .override_global("gen_l4_csum", &l4_csum, true)
            .override_global("gen_l4_csum_off", &l4_off, true)
            .override_global("gen_udp", &udp, true)
            .load(BENCH_GEN_OBJ)
            .context("loading bench_gen.o")?;
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

/// Real-time priority of the generator thread and the lb's NAPI kthread (SCHED_FIFO).
pub const RT_PRIORITY: u32 = 50;

/// Pins the calling thread to `cpu` and gives it [`RT_PRIORITY`] (`taskset`/`chrt` on its
/// thread id: no `unsafe` needed).
pub fn pin_current_thread(cpu: usize) -> Result<()> {
    let link = std::fs::read_link("/proc/thread-self").context("reading /proc/thread-self")?;
    let tid = link
        .file_name()
        .and_then(|s| s.to_str())
        .context("thread id from /proc/thread-self")?
        .to_string();
    pin_task(&tid, cpu, RT_PRIORITY)
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
