// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * TCP reset synthesis: how the load balancer refuses a TCP flow it cannot serve (a frontend
 * without valid backends, the invalid-backend share of a Gateway API route, a flow whose
 * backend left the snapshot). The client's own segment is turned around in place and sent
 * back out of the interface it came in on (XDP_TX; at TC, a redirect to the same device).
 */
#ifndef BLIXT_RST_H
#define BLIXT_RST_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "blixt_shared.h"
#include "maps.h"
#include "csum.h"
#include "parse.h"
#include "hook.h"

/* Hop limit / TTL of the resets the program sends. */
volatile const __u8 rst_ttl = 64;

/*
 * Turns a TCP segment from the client into a reset back to it (RFC 9293 3.10.7.1: seq = SEG.ACK
 * if ACK was set, else seq 0 and ack = SEG.SEQ + SEG.LEN) and sends it out the way it came.
 * IP options and extension headers are kept; TCP options and payload are cut.
 */
static __always_inline int send_rst(void *ctx, const int hook, struct pkt *p)
{
	void *data = ctx_data(ctx, hook);
	void *data_end = ctx_data_end(ctx, hook);
	__u32 l3_off = p->l3_off & 0x1f;
	__u32 l4_off = p->l4_off & 0x3ff;
	struct tcphdr *th = data + l4_off;
	__u32 seg_len;

	if ((void *)(th + 1) > data_end)
		return XDP_DROP;
	__u32 in_seq = bpf_ntohl(th->seq);
	__u32 in_ack = th->ack_seq;
	__u32 doff = th->doff * 4;
	__u8 flags = p->tcp_flags;

	/* parse.h checked that the header with its options lies within the IP packet */
	if (l4_off + doff > p->l3_end)
		return XDP_DROP;
	seg_len = p->l3_end - l4_off - doff;
	if (flags & TCPF_SYN)
		seg_len += 1;
	if (flags & TCPF_FIN)
		seg_len += 1;

	__u32 ifindex = ctx_ifindex(ctx, hook);
	struct blixt_iface *ifc = bpf_map_lookup_elem(&blixt_ifaces, &ifindex);

	__u32 want = l4_off + sizeof(struct tcphdr);
	__u32 have = ctx_len(ctx, hook);
	if (want > have)
		return XDP_DROP;
	if (want < have && ctx_set_len(ctx, hook, want)) {
		stat_inc(BLIXT_STAT_TX_ERROR);
		return XDP_DROP;
	}
	data = ctx_data(ctx, hook);
	data_end = ctx_data_end(ctx, hook);

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	/* sent from the interface's own address (the segment may have come to a group address):
	 * the agent's entry for it, else the unicast address the segment came to */
	__u8 mac[ETH_ALEN];
	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	if (ifc)
		__builtin_memcpy(eth->h_source, ifc->mac, ETH_ALEN);
	else if (eth->h_dest[0] & 1)
		return XDP_DROP;
	else
		__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);

	__u16 tcp_len = bpf_htons(sizeof(struct tcphdr));
	__u32 sum = 0;
	if (p->family == BLIXT_FAMILY_V6) {
		struct ipv6hdr *ip6 = data + l3_off;
		if ((void *)(ip6 + 1) > data_end)
			return XDP_DROP;
		struct in6_addr a = ip6->saddr;
		ip6->saddr = ip6->daddr;
		ip6->daddr = a;
		ip6->payload_len = bpf_htons(l4_off - l3_off - sizeof(*ip6) + sizeof(struct tcphdr));
		ip6->hop_limit = rst_ttl;
		const __u32 *w = (const __u32 *)&ip6->saddr;
#pragma unroll
		for (int i = 0; i < 8; i++)
			sum = csum_add(sum, w[i]);
	} else {
		struct iphdr *iph = data + l3_off;
		if ((void *)(iph + 1) > data_end)
			return XDP_DROP;
		__u32 a = iph->saddr;
		__u16 old_len = iph->tot_len;
		__u16 old_ttl_proto = *(__u16 *)&iph->ttl;
		iph->saddr = iph->daddr;
		iph->daddr = a;
		iph->tot_len = bpf_htons(l4_off - l3_off + sizeof(struct tcphdr));
		iph->ttl = rst_ttl;
		__u32 d = csum_diff16(0, old_len, iph->tot_len);
		d = csum_diff16(d, old_ttl_proto, *(__u16 *)&iph->ttl);
		iph->check = csum_apply(iph->check, d);
		sum = csum_add(sum, iph->saddr);
		sum = csum_add(sum, iph->daddr);
	}
	sum = csum_add(sum, bpf_htons(IPPROTO_TCP));
	sum = csum_add(sum, tcp_len);

	th = data + l4_off;
	if ((void *)(th + 1) > data_end)
		return XDP_DROP;
	__u16 port = th->source;
	th->source = th->dest;
	th->dest = port;
	if (flags & TCPF_ACK) {
		th->seq = in_ack;
		th->ack_seq = 0;
		((__u8 *)th)[13] = TCPF_RST;
	} else {
		th->seq = 0;
		th->ack_seq = bpf_htonl(in_seq + seg_len);
		((__u8 *)th)[13] = TCPF_RST | TCPF_ACK;
	}
	((__u8 *)th)[12] = 5 << 4; /* data offset 5 words, reserved bits clear */
	th->window = 0;
	th->check = 0;
	th->urg_ptr = 0;
	const __u32 *tw = (const __u32 *)th;
#pragma unroll
	for (int i = 0; i < 5; i++)
		sum = csum_add(sum, tw[i]);
	th->check = csum_fold(sum);
	return XDP_TX;
}

#endif
