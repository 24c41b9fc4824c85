// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The frame stamping both packet generators of benchmark suite 2 share (bench_gen.bpf.c with
 * live frames, bench_gen_loop.bpf.c with a veth loop): the template and its checksums as
 * constants user space sets at load (crates/blixt-bench/src/forwarding/gen.rs), and
 * gen_stamp(), which copies the template whole into the frame and writes flow n into it.
 *
 * The template frame (Ethernet, IPv4 without options, UDP or TCP, 64 bytes) comes with source
 * port 0 and the low 16 bits of the source address 0; its checksums are computed for exactly
 * that. Flow i (see gen_flows) gets source port gen_port_base + i % gen_port_span and source
 * address low half i / gen_port_span + 1, so "every packet a new flow" runs through 60,000
 * ports of one address, then the next address, without repeating a tuple for billions of
 * packets.
 */
#ifndef BLIXT_BENCH_GEN_H
#define BLIXT_BENCH_GEN_H

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

#define GEN_FRAME_LEN 64
#define GEN_L4_OFF (sizeof(struct ethhdr) + sizeof(struct iphdr))

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

/* Writes the template and flow `n` into the frame at `data`, which the caller has checked to
 * hold GEN_FRAME_LEN bytes. */
static __always_inline void gen_stamp(void *data, __u64 n)
{
	struct iphdr *ip = data + sizeof(struct ethhdr);
	__u8 *l4 = data + GEN_L4_OFF;

#pragma unroll
	for (int i = 0; i < 8; i++)
		((__u64 *)data)[i] = gen_frame[i];

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
}

#endif
