// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Packet generator of benchmark suite 2 for kernels that refuse BPF_F_TEST_XDP_LIVE_FRAMES
 * (bench_gen.bpf.c's way): a loop of frames between the two ends of a veth pair of the
 * client's own, gen0 <-> gen1, fed once by user space with a few 64-byte frames.
 *
 * This program runs on gen1's receive path (its NAPI, threaded and pinned to the generator's
 * CPU). For every frame it receives it writes the template frame and the next flow into it,
 * exactly as bench_gen does, and redirects it with BPF_F_BROADCAST to both devices of
 * gen_out: the client's end of the client <-> lb veth (the copy goes to the lb node's receive
 * queue, as an xdp_frame, like a live frame sent with XDP_TX) and gen0 (whose peer is gen1:
 * the frame comes back here and goes round again). So the frames in the loop keep it going
 * and every round trip offers one frame to the load balancer, as fast as one CPU can turn
 * the loop. User space stops it with gen_ctl.run = 0 or a limit on the frames sent; the
 * frames in the loop are then dropped.
 *
 * The template frame (Ethernet, IPv4 without options, UDP or TCP, 64 bytes) comes from user
 * space with source port 0 and the low 16 bits of the source address 0; its checksums are
 * computed for exactly that (include/bench_gen.h, shared with bench_gen.bpf.c).
 */
#include "include/bench_gen.h"

/* Mirrored in blixt-bench (src/forwarding/gen.rs). Written by one CPU only (gen1's NAPI). */
struct gen_ctl {
	__u64 seq;   /* frames stamped since load; the flow index is taken from it */
	__u64 sent;  /* frames offered to the load balancer since user space last zeroed it */
	__u64 limit; /* stop after this many (0: no limit) */
	__u32 run;   /* 0: drop whatever arrives (the loop stops) */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct gen_ctl);
	__uint(max_entries, 1);
} gen_ctl SEC(".maps");

/* [0]: the client's end of the veth to the lb node; [1]: gen0, back into the loop. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
	__uint(max_entries, 2);
} gen_out SEC(".maps");

SEC("xdp")
int bench_gen_loop(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;

	/* only the generator's own frames go round (anything else that reaches gen1 is dropped) */
	if (bpf_xdp_get_buff_len(ctx) != GEN_FRAME_LEN || data + GEN_FRAME_LEN > data_end)
		return XDP_DROP;
	struct gen_ctl *c = bpf_map_lookup_elem(&gen_ctl, &zero);
	if (!c || !c->run || (c->limit && c->sent >= c->limit))
		return XDP_DROP;
	gen_stamp(data, c->seq++);
	c->sent++;
	return bpf_redirect_map(&gen_out, 0, BPF_F_BROADCAST);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
