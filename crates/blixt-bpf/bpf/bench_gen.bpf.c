// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Packet generator of benchmark suite 2 (forwarding capacity). User space runs it with
 * BPF_PROG_TEST_RUN and BPF_F_TEST_XDP_LIVE_FRAMES on the client's end of the client <-> lb
 * veth: every run of the program stamps one frame and returns XDP_TX, which live-frame mode
 * turns into a redirect out of that interface, i.e. into the lb node's receive queue.
 *
 * The template frame (Ethernet, IPv4 without options, UDP or TCP, 64 bytes) comes from user
 * space with source port 0 and the low 16 bits of the source address 0; its checksums are
 * computed for exactly that and passed in as constants below. Live-frame pages are recycled
 * without being rewritten (Documentation/bpf/bpf_prog_run.rst, "live frame mode"), and a
 * recycled page holds whatever the last consumer left there: after a load balancer's full-NAT
 * rewrite and a sink's XDP_DROP, the page comes back addressed to a backend. So every frame
 * is first copied whole from gen_frame, then stamped: nothing is taken from the page.
 * (include/bench_gen.h: the template, its constants and the stamping.)
 */
#include "include/bench_gen.h"

/* Frames stamped since load; the flow index is taken from it. */
__u64 gen_seq = 0;

SEC("xdp")
int bench_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (data + GEN_FRAME_LEN > data_end)
		return XDP_ABORTED;
	gen_stamp(data, gen_seq++);
	return XDP_TX;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
