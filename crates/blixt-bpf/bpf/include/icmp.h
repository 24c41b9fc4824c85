// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * ICMP and ICMPv6 errors (destination unreachable, packet too big, time exceeded, parameter
 * problem) about packets of a tracked flow: a router between the node and a backend reports on
 * a rewritten packet, so the error names the node's address and port, not the client's. The
 * error is translated like a packet of the flow, outer header and quoted header both, so that
 * the client (or backend) sees an error about the packet it sent; path MTU discovery depends on
 * it. parse.h finds the quoted tuple (PARSE_ICMP_ERR); errors about unknown flows go up
 * untouched.
 */
#ifndef BLIXT_ICMP_H
#define BLIXT_ICMP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "blixt_shared.h"
#include "maps.h"
#include "csum.h"
#include "parse.h"
#include "hook.h"
#include "forward.h"

/*
 * An ICMP error quoting a packet of a tracked flow. The quoted packet travelled the opposite way
 * of the error, so the error belongs to the entry keyed by the quoted tuple reversed. The outer
 * header is rewritten like a packet of that entry, the quoted one like a packet of the other
 * direction; the IPv4 header, inner L4 (when quoted whole) and ICMP checksums follow.
 */
static __always_inline int icmp_error(void *ctx, const int hook, struct pkt *p)
{
	struct blixt_flow_key k = {};
	__builtin_memcpy(k.src, p->key.dst, 16);
	__builtin_memcpy(k.dst, p->key.src, 16);
	k.sport = p->key.dport;
	k.dport = p->key.sport;
	k.proto = p->key.proto;
	k.family = p->family;
	struct blixt_ct_entry *ct = bpf_map_lookup_elem(&blixt_conntrack, &k);
	if (!ct) {
		stat_inc(BLIXT_STAT_ICMP_UNKNOWN);
		return XDP_PASS;
	}
	/*
	 * An error goes back to the source of the packet it quotes. Found by the quoted tuple, the
	 * entry makes that source a VIP (an error about a reply to a client) or the node's SNAT
	 * address (about a packet to a backend); an error to any other address, or to the VIP
	 * quoting the backend side of a flow, is not about a packet Blixt sent there.
	 */
	const __u32 *od = (const __u32 *)p->outer_dst, *qs = (const __u32 *)p->key.src;
	if ((od[0] ^ qs[0]) | (od[1] ^ qs[1]) | (od[2] ^ qs[2]) | (od[3] ^ qs[3])) {
		stat_inc(BLIXT_STAT_ICMP_MISDIRECTED);
		return XDP_PASS;
	}
	/* routed like a packet of the entry's direction, before anything is rewritten */
	struct blixt_hop hop;
	int route = fib_hop(ctx, hook, p, ct->nsrc, ct->ndst, &hop, 0);
	if (route == HOP_DROP)
		return XDP_DROP;
	if (route == HOP_NO_NEIGH && !sends_unresolved(hook))
		return XDP_PASS; /* blixt_lb_tc translates it (see lb_main()) */

	void *data = ctx_data(ctx, hook);
	void *data_end = ctx_data_end(ctx, hook);
	int v6 = p->family == BLIXT_FAMILY_V6;
	__u32 outer;    /* change to the outer addresses (IPv4 header / ICMPv6 pseudo-header) */
	__u32 icmp = 0; /* change to the bytes the ICMP checksum covers */
	__u32 inner_l4; /* change to the quoted L4 checksum (its pseudo-header, then its ports) */

	/* outer header: like a packet of the entry's direction */
	if (v6) {
		struct ipv6hdr *ip6 = data + (p->l3_off & 0x1f);
		if ((void *)(ip6 + 1) > data_end)
			return XDP_PASS;
		outer = set_addrs((__u32 *)&ip6->saddr, (__u32 *)&ip6->daddr,
				  (const __u32 *)ct->nsrc, (const __u32 *)ct->ndst, 1);
		icmp = outer;
	} else {
		struct iphdr *iph = data + (p->l3_off & 0x1f);
		if ((void *)(iph + 1) > data_end)
			return XDP_PASS;
		outer = set_addrs((__u32 *)&iph->saddr, (__u32 *)&iph->daddr,
				  (const __u32 *)ct->nsrc, (const __u32 *)ct->ndst, 0);
		iph->check = csum_apply(iph->check, outer);
	}

	/* quoted header: the reverse direction, src <- ndst:ndport, dst <- nsrc:nsport */
	__u32 il3 = p->inner_l3_off & 0x3ff;
	__u32 il4 = p->inner_l4_off & 0x3ff;
	if (v6) {
		struct ipv6hdr *ip6 = data + il3;
		if ((void *)(ip6 + 1) > data_end)
			return XDP_PASS;
		inner_l4 = set_addrs((__u32 *)&ip6->saddr, (__u32 *)&ip6->daddr,
				     (const __u32 *)ct->ndst, (const __u32 *)ct->nsrc, 1);
		icmp = csum_add(icmp, inner_l4);
	} else {
		struct iphdr *ih = data + il3;
		if ((void *)(ih + 1) > data_end)
			return XDP_PASS;
		inner_l4 = set_addrs((__u32 *)&ih->saddr, (__u32 *)&ih->daddr,
				     (const __u32 *)ct->ndst, (const __u32 *)ct->nsrc, 0);
		__u16 old_check = ih->check;
		ih->check = csum_apply(ih->check, inner_l4);
		icmp = csum_add(icmp, inner_l4);
		icmp = csum_diff16(icmp, old_check, ih->check);
	}
	__u32 *ports = data + il4;
	if ((void *)(ports + 1) > data_end)
		return XDP_PASS;
	__u32 nports;
	__builtin_memcpy(&nports, &ct->ndport, 2);
	__builtin_memcpy((__u8 *)&nports + 2, &ct->nsport, 2);
	inner_l4 = csum_diff32(inner_l4, *ports, nports);
	icmp = csum_diff32(icmp, *ports, nports);
	*ports = nports;

	/* the quoted L4 checksum, when the quote reaches it: within the IP packet, which the ICMP
	 * checksum covers, not merely within the frame */
	__u16 *l4sum = 0;
	__u32 sum_off = il4 + (p->key.proto == IPPROTO_TCP ? 16 : 6);
	if (sum_off + 2 <= p->l3_end && data + sum_off + 2 <= data_end)
		l4sum = data + (sum_off & 0x7ff);
	if (l4sum && (void *)(l4sum + 1) <= data_end && (*l4sum || v6 || p->key.proto == IPPROTO_TCP)) {
		__u16 old = *l4sum;
		__u16 c = csum_apply(old, inner_l4);
		if (!c && p->key.proto == IPPROTO_UDP)
			c = 0xffff;
		*l4sum = c;
		icmp = csum_diff16(icmp, old, c);
	}

	void *ic = data + (p->l4_off & 0x3ff);
	if (ic + 4 > data_end)
		return XDP_PASS;
	__u16 *icsum = ic + 2;
	*icsum = csum_apply(*icsum, icmp);

	stat_inc(BLIXT_STAT_ICMP_TRANSLATED);
	if (route == HOP_NO_NEIGH)
		return send_unresolved(ctx, hook, hop.fib_ifindex);
	return send_via(ctx, hook, &hop);
}

#endif
