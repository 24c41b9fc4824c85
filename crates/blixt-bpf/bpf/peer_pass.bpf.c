// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * An XDP program that passes everything, for the far end of a veth pair. The kernel's veth
 * driver only kicks the receive side after an XDP_TX from its peer when the receiving veth has
 * an XDP program of its own (veth_xdp_flush() checks rq->xdp_prog); without one, frames that
 * blixt_lb bounces back with XDP_TX (ARP/NDP answers, TCP resets) wait in the ring until some
 * other traffic flushes it. Real NICs have no such rule; the lab attaches this to its clients'
 * and backends' veths.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int blixt_peer_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
