// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Benchmark floor: parse Ethernet / IP / L4 exactly as the load balancer does (the same
 * parse_packet() from include/parse.h: VLAN, IPv4 options, IPv6 extension headers) and bounce
 * the packet with XDP_TX. Whatever a load balancer costs above this program is its own work
 * (lookups, rewrite, forwarding decision), not the unavoidable cost of reading the headers.
 *
 * bench_wrap.bpf.c includes this file with BENCH_FLOOR_BODY_ONLY defined to wrap the same body.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "include/parse.h"

static __always_inline int bench_floor_body(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct pkt p = {};

	int r = parse_packet(data, data_end, data_end - data, &p);
	/*
	 * The parsed tuple is never read here; without this barrier clang would drop the stores
	 * into `p` (the key copy) and the floor would be cheaper than any real consumer's parse.
	 */
	asm volatile("" : : "r"(&p) : "memory");
	return r == PARSE_OK ? XDP_TX : XDP_PASS;
}

#ifndef BENCH_FLOOR_BODY_ONLY
SEC("xdp")
int bench_floor(struct xdp_md *ctx)
{
	return bench_floor_body(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
#endif
