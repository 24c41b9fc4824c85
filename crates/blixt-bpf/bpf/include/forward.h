// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The last two steps of the pipeline: rewriting a packet per its conntrack entry (full NAT:
 * addresses, ports, checksums) and sending it to its next hop, found by FIB lookup or cached.
 * A next hop the kernel has not resolved yet leaves by bpf_redirect_neigh(): directly at TC,
 * through the neigh_tc.bpf.c companion (blixt_neigh) from XDP, or, where XDP cannot hand the
 * packet over in metadata, by passing it up to blixt_lb_tc on TC ingress.
 */
#ifndef BLIXT_FORWARD_H
#define BLIXT_FORWARD_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "blixt_shared.h"
#include "maps.h"
#include "csum.h"
#include "parse.h"
#include "hook.h"
#include "skb_csum.h"

#define AF_INET 2
#define AF_INET6 10

/*
 * May XDP use bpf_xdp_adjust_meta to hand a packet with an unresolved next hop to neigh_tc.bpf.c?
 * Set by the loader from the kernel's capabilities. When 0 the verifier prunes that branch (a
 * frozen .rodata constant), so the program loads on kernels without the helper; such packets
 * then go up untouched and blixt_lb_tc, attached on TC ingress, forwards them.
 */
volatile const __u8 neigh_via_meta = 1;

/*
 * Sets an IP header's addresses to nsrc -> ndst (16 bytes each for IPv6, 4 for IPv4) and returns
 * the change to the checksums that cover them, for csum_apply(). The pointers are 32-bit words
 * so that the copies are word moves, as the checksum reads already are.
 */
static __always_inline __u32 set_addrs(__u32 *saddr, __u32 *daddr, const __u32 *nsrc,
				       const __u32 *ndst, int v6)
{
	__u32 diff = csum_diff_addr(0, (__u8 *)saddr, (const __u8 *)nsrc, v6);
	diff = csum_diff_addr(diff, (__u8 *)daddr, (const __u8 *)ndst, v6);
	if (v6) {
		__builtin_memcpy(saddr, nsrc, 16);
		__builtin_memcpy(daddr, ndst, 16);
	} else {
		__builtin_memcpy(saddr, nsrc, 4);
		__builtin_memcpy(daddr, ndst, 4);
	}
	return diff;
}

/*
 * Rewrites addresses and ports of the packet's IP and TCP/UDP headers to nsrc:sport -> ndst:dport
 * (`nports` holds both ports as they sit in the header), updating checksums incrementally, in
 * place. At TC, a packet whose L4 checksum field does not hold the full checksum (see
 * skb_csum.h) is updated through bpf_l4_csum_replace() instead, which knows a checksum the
 * sender left for offload (CHECKSUM_PARTIAL: the field holds only the pseudo-header sum, so it
 * follows the addresses but not the ports) and keeps skb->csum in step (CHECKSUM_COMPLETE).
 * The packet pointers must be re-read afterwards.
 */
static __always_inline int rewrite(void *ctx, const int hook, struct pkt *p, const __u8 *nsrc,
				   const __u8 *ndst, __u32 nports)
{
	void *data = ctx_data(ctx, hook);
	void *data_end = ctx_data_end(ctx, hook);
	__u32 l4_off = p->l4_off & 0x3ff;
	void *l4 = data + l4_off;
	int v6 = p->family == BLIXT_FAMILY_V6;
	int tcp = p->key.proto == IPPROTO_TCP;
	__u32 addrs;

	if (v6) {
		struct ipv6hdr *ip6 = data + (p->l3_off & 0x1f);
		if ((void *)(ip6 + 1) > data_end)
			return -1;
		addrs = set_addrs((__u32 *)&ip6->saddr, (__u32 *)&ip6->daddr,
				  (const __u32 *)nsrc, (const __u32 *)ndst, 1);
	} else {
		struct iphdr *iph = data + (p->l3_off & 0x1f);
		if ((void *)(iph + 1) > data_end)
			return -1;
		addrs = set_addrs((__u32 *)&iph->saddr, (__u32 *)&iph->daddr,
				  (const __u32 *)nsrc, (const __u32 *)ndst, 0);
		iph->check = csum_apply(iph->check, addrs);
	}

	if (l4 + 8 > data_end)
		return -1;
	__u32 *ports = l4;
	__u32 port_diff = csum_diff32(0, *ports, nports);
	*ports = nports;

	if (hook == HOOK_TC && !skb_csum_in_place(ctx)) {
		__u32 off = l4_off + (tcp ? 16 : 6);
		/* IPv4 UDP without checksum stays without one (RFC 768); a result of 0 is sent as
		 * 0xffff */
		__u64 flags = tcp ? 0 : (BPF_F_MARK_MANGLED_0 | (v6 ? BPF_F_MARK_ENFORCE : 0));
		if (bpf_l4_csum_replace(ctx, off, 0, addrs, flags | BPF_F_PSEUDO_HDR) ||
		    bpf_l4_csum_replace(ctx, off, 0, port_diff, flags))
			return -1;
		return 0;
	}
	__u32 diff = csum_add(addrs, port_diff);
	if (tcp) {
		struct tcphdr *th = l4;
		if ((void *)(th + 1) > data_end)
			return -1;
		th->check = csum_apply(th->check, diff);
	} else {
		struct udphdr *uh = l4;
		/* IPv4 UDP without checksum stays without one (RFC 768) */
		if (uh->check || v6) {
			__u16 c = csum_apply(uh->check, diff);
			uh->check = c ? c : 0xffff;
		}
	}
	return 0;
}

/* Sends the (rewritten) packet to a resolved next hop. */
static __always_inline int send_via(void *ctx, const int hook, const struct blixt_hop *hop)
{
	void *data = ctx_data(ctx, hook);
	void *data_end = ctx_data_end(ctx, hook);
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(eth->h_dest, hop->fib_dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, hop->fib_smac, ETH_ALEN);
	return ctx_redirect(ctx, hook, hop->fib_ifindex);
}

/* What fib_hop() found. */
#define HOP_OK 0       /* resolved: `hop` holds interface and MACs */
#define HOP_NO_NEIGH 1 /* routed, neighbour unresolved: `hop` holds the egress interface only */
#define HOP_DROP 2     /* no route */

/*
 * The next hop of a packet once rewritten to src -> dst, by FIB lookup (before the rewrite, so
 * that a packet XDP cannot send can still go up unchanged). With `cache`, a successful lookup is
 * remembered there (a conntrack entry's hop, or the backend's in blixt_nexthops), so later
 * packets skip the FIB (about half the cost of an established packet) until the next
 * once-a-second refresh. The rewrite changes neither length nor TOS, read here from the packet.
 */
static __always_inline int fib_hop(void *ctx, const int hook, struct pkt *p, const __u8 *src,
				   const __u8 *dst, struct blixt_hop *hop, struct blixt_hop *cache)
{
	void *data = ctx_data(ctx, hook);
	void *data_end = ctx_data_end(ctx, hook);
	struct bpf_fib_lookup fib = {};

	fib.ifindex = ctx_ifindex(ctx, hook);
	fib.l4_protocol = p->key.proto;
	if (p->family == BLIXT_FAMILY_V6) {
		struct ipv6hdr *ip6 = data + (p->l3_off & 0x1f);
		if ((void *)(ip6 + 1) > data_end)
			return HOP_DROP;
		fib.family = AF_INET6;
		fib.tot_len = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
		__builtin_memcpy(fib.ipv6_src, src, 16);
		__builtin_memcpy(fib.ipv6_dst, dst, 16);
	} else {
		struct iphdr *iph = data + (p->l3_off & 0x1f);
		if ((void *)(iph + 1) > data_end)
			return HOP_DROP;
		fib.family = AF_INET;
		fib.tos = iph->tos;
		fib.tot_len = bpf_ntohs(iph->tot_len);
		__builtin_memcpy(&fib.ipv4_src, src, 4);
		__builtin_memcpy(&fib.ipv4_dst, dst, 4);
	}

	long rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	hop->fib_ifindex = fib.ifindex;
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		__builtin_memcpy(hop->fib_dmac, fib.dmac, ETH_ALEN);
		__builtin_memcpy(hop->fib_smac, fib.smac, ETH_ALEN);
		if (cache)
			__builtin_memcpy(cache, hop, sizeof(*hop));
		return HOP_OK;
	}
	if (cache)
		cache->fib_ifindex = 0;
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		stat_inc(BLIXT_STAT_FIB_NO_NEIGH);
		return HOP_NO_NEIGH;
	}
	stat_inc(BLIXT_STAT_FIB_DROP);
	return HOP_DROP;
}

/* Can this program send a packet whose next hop is unresolved (send_unresolved())? */
static __always_inline int sends_unresolved(const int hook)
{
	return hook == HOOK_TC || neigh_via_meta;
}

/*
 * Sends a rewritten packet whose next hop the kernel has not resolved yet. XDP cannot resolve a
 * neighbour or queue a packet behind ARP/NDP; TC can, with bpf_redirect_neigh(). From XDP the
 * egress ifindex goes in metadata to the TC companion (neigh_tc.bpf.c), which redirects; the
 * packet never reaches the IP stack, which would drop it as a martian (its source is the node's
 * own address).
 */
static __always_inline int send_unresolved(void *ctx, const int hook, __u32 ifindex)
{
	if (hook == HOOK_TC)
		return bpf_redirect_neigh(ifindex, 0, 0, 0);
	/* the callers pass such packets up instead; this test lets the verifier see that the
	 * helper below is never called when the kernel lacks it */
	if (!neigh_via_meta)
		return XDP_PASS;
	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct blixt_xdp_meta)) == 0) {
		void *meta = (void *)(long)((struct xdp_md *)ctx)->data_meta;
		void *data = ctx_data(ctx, hook);
		struct blixt_xdp_meta *m = meta;
		if ((void *)(m + 1) <= data) {
			m->magic = BLIXT_META_MAGIC;
			m->ifindex = ifindex;
			return XDP_PASS;
		}
	}
	stat_inc(BLIXT_STAT_TX_ERROR);
	return XDP_DROP;
}

#endif
