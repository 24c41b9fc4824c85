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
 * computed for exactly that and passed in as constants below (the same contract as
 * bench_gen.bpf.c).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* The template frame (64 bytes) as native u64 words. */
volatile const __u64 gen_frame[8] = {};
/* Flows cycled through; 0: every packet is a new flow. */
volatile const __u32 gen_flows = 1;
/* First source port. */
volatile const __u32 gen_port_base = 1024;
/* Source ports used per source address. */
volatile const __u32 gen_port_span = 60000;
/* IPv4 header checksum of the template, as stored in the frame. */
volatile const __u32 gen_ip_csum = 0;
/* L4 checksum of the template, as stored in the frame. */
volatile const __u32 gen_l4_csum = 0;
/* Byte offset of the L4 checksum from the start of the L4 header: 6 for UDP, 16 for TCP. */
volatile const __u32 gen_l4_csum_off = 6;
/* 1 for UDP: a computed checksum of 0 is sent as 0xffff (RFC 768). */
volatile const __u32 gen_udp = 1;

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

#define L4_OFF (sizeof(struct ethhdr) + sizeof(struct iphdr))
#define FRAME_LEN 64

/* One's complement: `base` (a stored checksum) with the 16-bit words `a` and `b` added where
 * the template had zeros. */
static __always_inline __u16 csum_with(__u32 base, __u16 a, __u16 b)
{
	__u32 s = (__u16)~base;
	s += a;
	s += b;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

SEC("xdp")
int bench_gen_loop(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	__u8 *l4 = data + L4_OFF;
	__u32 zero = 0;

	/* only the generator's own frames go round (anything else that reaches gen1 is dropped) */
	if (bpf_xdp_get_buff_len(ctx) != FRAME_LEN || data + FRAME_LEN > data_end)
		return XDP_DROP;
	struct gen_ctl *c = bpf_map_lookup_elem(&gen_ctl, &zero);
	if (!c || !c->run || (c->limit && c->sent >= c->limit))
		return XDP_DROP;
#pragma unroll
	for (int i = 0; i < 8; i++)
		((__u64 *)data)[i] = gen_frame[i];

	__u64 n = c->seq++;
	c->sent++;
	__u64 idx = gen_flows ? n % gen_flows : n;
	__u16 port = bpf_htons((__u16)(gen_port_base + idx % gen_port_span));
	__u16 host = bpf_htons((__u16)(idx / gen_port_span + 1));

	((__u16 *)&ip->saddr)[1] = host;
	ip->check = csum_with(gen_ip_csum, host, 0);
	*(__u16 *)l4 = port;
	/* the pseudo-header covers the source address, so both words enter the L4 sum */
	__u16 l4sum = csum_with(gen_l4_csum, host, port);
	if (gen_udp && l4sum == 0)
		l4sum = 0xffff;
	if (gen_l4_csum_off == 16)
		*(__u16 *)(l4 + 16) = l4sum;
	else
		*(__u16 *)(l4 + 6) = l4sum;
	return bpf_redirect_map(&gen_out, 0, BPF_F_BROADCAST);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
