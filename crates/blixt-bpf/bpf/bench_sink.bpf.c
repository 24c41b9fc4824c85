// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Sink of benchmark suite 2 (forwarding capacity): attached to a backend's end of its veth,
 * it counts every frame and drops it. Counter 0 counts all frames, counter 1 those that are
 * IPv4 UDP or TCP to sink_port (the backends' port: proof that the load balancer rewrote the
 * destination). Per-CPU, so the sink never contends with itself.
 *
 * Besides counting, having an XDP program is what lets a veth accept XDP_TX/XDP_REDIRECT
 * frames from its peer at all (see crates/blixt-lab/src/topology.rs).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Destination port counted in counter 1. */
volatile const __u32 sink_port = 8080;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} sink_counts SEC(".maps");

static __always_inline void count(__u32 k)
{
	__u64 *c = bpf_map_lookup_elem(&sink_counts, &k);

	if (c)
		*c += 1;
}

SEC("xdp")
int bench_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	__u16 *ports = (void *)(ip + 1);

	count(0);
	if ((void *)(ports + 2) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5)
		return XDP_DROP;
	if ((ip->protocol == IPPROTO_UDP || ip->protocol == IPPROTO_TCP) &&
	    ports[1] == bpf_htons((__u16)sink_port))
		count(1);
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
