//! Live-frame test runs for the forwarding benchmark: BPF_PROG_TEST_RUN with
//! `BPF_F_TEST_XDP_LIVE_FRAMES` (Linux 5.18+), which aya 0.14 does not expose, and the
//! benchmark's own XDP objects (packet generator and sink).
//!
//! In live-frame mode the kernel runs the program `repeat` times on copies of one frame and
//! then *acts* on the verdict: XDP_TX becomes a redirect out of the context's
//! `ingress_ifindex` (resolved in the calling thread's network namespace), XDP_PASS injects the
//! frame into the stack, XDP_DROP recycles it. Frames are processed in batches (default 64, at
//! most 256) from a page pool whose pages are *not* rewritten when recycled, so a program that
//! changes the frame must write every field it varies (see bench_gen.bpf.c).

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use aya::programs::Xdp;

/// bench_gen.bpf.c: stamps source port/address from a counter and returns XDP_TX.
pub static BENCH_GEN_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_gen.o"));
/// bench_sink.bpf.c: counts and drops (per-CPU counters in `sink_counts`).
pub static BENCH_SINK_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_sink.o"));

/// `BPF_PROG_TEST_RUN` (alias `BPF_PROG_RUN`), from include/uapi/linux/bpf.h.
const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// Transmit/pass/drop the frames for real instead of returning them.
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
/// Most frames per batch the kernel accepts in live mode.
pub const MAX_BATCH: u32 = 256;

/// The `test` member of `union bpf_attr` up to `batch_size` (Linux 5.18), padded to 8 bytes.
#[repr(C)]
#[derive(Debug, Default)]
struct TestAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: u32,
}

/// What one live run reports.
#[derive(Debug, Clone, Copy)]
pub struct LiveRun {
    /// The kernel's average time per repetition (its timer pauses while it reschedules).
    pub per_frame: Duration,
}

/// Runs `prog` `repeat` times in live-frame mode on copies of `frame`, as if each copy had
/// arrived on interface `ifindex` of the calling thread's network namespace, `batch_size`
/// frames per batch (0: the kernel's default of 64).
///
/// Failures of single frames (a redirect to a full queue, say) are not reported: the kernel
/// goes on with the next repetition, so count what arrives at the other end.
pub fn run_live_frames(
    prog: &Xdp,
    frame: &[u8],
    ifindex: u32,
    repeat: u32,
    batch_size: u32,
) -> io::Result<LiveRun> {
    let fd = prog
        .fd()
        .map_err(|e| io::Error::other(format!("program not loaded: {e}")))?;
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
    let ctx: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
    let mut attr = TestAttr {
        prog_fd: fd.as_fd().as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ctx_size_in: std::mem::size_of_val(&ctx) as u32,
        ctx_in: ctx.as_ptr() as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size,
        ..TestAttr::default()
    };
    // SAFETY: bpf(2) with a fully initialised attr whose pointers (frame, ctx) outlive the
    // call; the kernel writes back only into `attr` (retval, duration), which we own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestAttr,
            std::mem::size_of::<TestAttr>(),
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES (needs Linux 5.18+): {e}"),
        ));
    }
    Ok(LiveRun {
        per_frame: Duration::from_nanos(u64::from(attr.duration)),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn attr_layout_matches_the_uapi() {
        // offsetof(union bpf_attr, test.batch_size) == 72 in include/uapi/linux/bpf.h
        assert_eq!(std::mem::offset_of!(super::TestAttr, flags), 64);
        assert_eq!(std::mem::offset_of!(super::TestAttr, batch_size), 72);
        assert_eq!(std::mem::size_of::<super::TestAttr>(), 80);
    }
}
