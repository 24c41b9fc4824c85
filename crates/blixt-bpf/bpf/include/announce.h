// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Announcing VIPs on the link: ARP replies (RFC 826) and neighbour advertisements (RFC 4861
 * 4.4) for addresses in blixt_vips, answered from XDP (or TC) on interfaces the agent marked in
 * blixt_ifaces, with that interface's MAC. VIPs are never configured on the node, so without
 * this a client on the same segment could not resolve them.
 */
#ifndef BLIXT_ANNOUNCE_H
#define BLIXT_ANNOUNCE_H

#include "blixt_shared.h"
#include "maps.h"
#include "csum.h"
#include "parse.h"
#include "hook.h"

struct arp_eth_ipv4 {
	__be16 hrd;
	__be16 pro;
	__u8 hln;
	__u8 pln;
	__be16 op;
	__u8 sha[6];
	__u8 spa[4];
	__u8 tha[6];
	__u8 tpa[4];
} __attribute__((packed));

#define ARPOP_REQUEST 1
#define ARPOP_REPLY 2

static __always_inline struct blixt_iface *announcing_iface(void *ctx, const int hook)
{
	__u32 ifindex = ctx_ifindex(ctx, hook);
	struct blixt_iface *ifc = bpf_map_lookup_elem(&blixt_ifaces, &ifindex);
	if (!ifc || !(ifc->flags & BLIXT_IFACE_F_ANNOUNCE))
		return 0;
	return ifc;
}

static __always_inline int is_announced_vip(const __u8 *addr, __u8 family)
{
	struct blixt_vip_key vk = {};
	__builtin_memcpy(vk.addr, addr, family == BLIXT_FAMILY_V4 ? 4 : 16);
	vk.family = family;
	__u32 *flags = bpf_map_lookup_elem(&blixt_vips, &vk);
	return flags && (*flags & BLIXT_VIP_F_ANNOUNCE);
}

static __always_inline int answer_arp(void *ctx, const int hook, struct pkt *p)
{
	void *data = ctx_data(ctx, hook);
	void *data_end = ctx_data_end(ctx, hook);
	struct ethhdr *eth = data;
	struct arp_eth_ipv4 *arp = data + (p->l3_off & 0x1f);

	if ((void *)(eth + 1) > data_end || (void *)(arp + 1) > data_end)
		return XDP_PASS;
	if (arp->hrd != bpf_htons(1) || arp->pro != bpf_htons(ETH_P_IP) || arp->hln != 6 ||
	    arp->pln != 4 || arp->op != bpf_htons(ARPOP_REQUEST))
		return XDP_PASS;
	if (!is_announced_vip(arp->tpa, BLIXT_FAMILY_V4))
		return XDP_PASS;
	struct blixt_iface *ifc = announcing_iface(ctx, hook);
	if (!ifc)
		return XDP_PASS;

	__u8 vip[4];
	__builtin_memcpy(vip, arp->tpa, 4);
	arp->op = bpf_htons(ARPOP_REPLY);
	__builtin_memcpy(arp->tha, arp->sha, 6);
	__builtin_memcpy(arp->tpa, arp->spa, 4);
	__builtin_memcpy(arp->sha, ifc->mac, 6);
	__builtin_memcpy(arp->spa, vip, 4);
	__builtin_memcpy(eth->h_dest, arp->tha, 6);
	__builtin_memcpy(eth->h_source, ifc->mac, 6);
	stat_inc(BLIXT_STAT_ARP_REPLY);
	return XDP_TX;
}

/* Neighbour advertisement: ICMPv6 header, flags, target, target link-layer address option. */
struct ndp_na {
	__u8 type;
	__u8 code;
	__u16 csum;
	__u32 flags;
	__u8 target[16];
	__u8 opt_type;
	__u8 opt_len;
	__u8 mac[6];
};

#define NA_FLAG_SOLICITED 0x40
#define NA_FLAG_OVERRIDE 0x20

/* The longest solicitation checked and answered (the message and its options). */
#define NS_MAX_LEN 128

/* Whether the ICMPv6 message `msg` of `len` bytes (a multiple of 4, at most NS_MAX_LEN) after
 * header `ip6` carries a valid checksum. */
static __always_inline int icmp6_checksum_ok(struct ipv6hdr *ip6, __u8 *msg, __u32 len,
					     void *data_end)
{
	__u32 sum = 0;
	const __u32 *a = (const __u32 *)&ip6->saddr;
#pragma unroll
	for (int i = 0; i < 8; i++)
		sum = csum_add(sum, a[i]);
	sum = csum_add(sum, bpf_htonl(len));
	sum = csum_add(sum, bpf_htonl(IPPROTO_ICMPV6));
	for (int i = 0; i < NS_MAX_LEN / 4; i++) {
		if ((__u32)i * 4 >= len)
			break;
		__u32 *w = (__u32 *)(msg + i * 4);
		if ((void *)(w + 1) > data_end)
			return 0;
		sum = csum_add(sum, *w);
	}
	return csum_fold(sum) == 0;
}

/* ff02::1:ffXX:XXXX */
static __always_inline int is_solicited_node(const __u32 *a)
{
	return a[0] == bpf_htonl(0xff020000) && a[1] == 0 && a[2] == bpf_htonl(1) &&
	       (a[3] & bpf_htonl(0xff000000)) == bpf_htonl(0xff000000);
}

/* RFC 4861 7.1.1 on the options of a solicitation of `len` bytes (a multiple of 8): every
 * option longer than zero, and none giving a source link-layer address when from ::. */
static __always_inline int ns_options_ok(__u8 *ns, __u32 len, int unspecified, void *data_end)
{
	__u32 off = 24;
	for (int i = 0; i < (NS_MAX_LEN - 24) / 8; i++) {
		if (off >= len)
			return 1;
		__u8 *opt = ns + (off & 0x7f);
		if ((void *)(opt + 2) > data_end)
			return 0;
		if (!opt[1] || (unspecified && opt[0] == 1))
			return 0;
		off += opt[1] * 8;
	}
	return off >= len;
}

static __always_inline int answer_ns(void *ctx, const int hook, struct pkt *p)
{
	void *data = ctx_data(ctx, hook);
	void *data_end = ctx_data_end(ctx, hook);
	__u32 l3_off = p->l3_off & 0x1f;
	__u32 l4_off = p->l4_off & 0x3ff;

	/* only plain solicitations (no extension headers): the answer is built in place */
	if (l4_off != l3_off + sizeof(struct ipv6hdr))
		return XDP_PASS;
	struct ipv6hdr *ip6 = data + l3_off;
	__u8 *ns = data + l4_off;
	if ((void *)(ip6 + 1) > data_end || (void *)(ns + 24) > data_end)
		return XDP_PASS;
	/* RFC 4861 7.1.1: hop limit 255, code 0, at least 24 bytes, options in 8-byte units, a
	 * valid checksum, and from :: only to a solicited-node address; anything else is left to
	 * the stack, which discards it */
	if (ip6->hop_limit != 255 || ns[1] != 0)
		return XDP_PASS;
	__u32 ns_len = p->l3_end - l4_off;
	if (ns_len < 24 || ns_len > NS_MAX_LEN || ns_len % 8)
		return XDP_PASS;
	const __u32 *src = (const __u32 *)&ip6->saddr;
	int unspecified = !(src[0] | src[1] | src[2] | src[3]);
	if (unspecified && !is_solicited_node((const __u32 *)&ip6->daddr))
		return XDP_PASS;
	if (!icmp6_checksum_ok(ip6, ns, ns_len, data_end))
		return XDP_PASS;
	if (!ns_options_ok(ns, ns_len, unspecified, data_end))
		return XDP_PASS;
	__u8 target[16];
	__builtin_memcpy(target, ns + 8, 16);
	if (!is_announced_vip(target, BLIXT_FAMILY_V6))
		return XDP_PASS;
	struct blixt_iface *ifc = announcing_iface(ctx, hook);
	if (!ifc)
		return XDP_PASS;
	__u8 mac[6];
	__builtin_memcpy(mac, ifc->mac, 6);

	__u32 want = l4_off + sizeof(struct ndp_na);
	if (want != ctx_len(ctx, hook) && ctx_set_len(ctx, hook, want)) {
		stat_inc(BLIXT_STAT_TX_ERROR);
		return XDP_PASS;
	}
	data = ctx_data(ctx, hook);
	data_end = ctx_data_end(ctx, hook);
	struct ethhdr *eth = data;
	ip6 = data + l3_off;
	struct ndp_na *na = data + l4_off;
	if ((void *)(eth + 1) > data_end || (void *)(ip6 + 1) > data_end ||
	    (void *)(na + 1) > data_end)
		return XDP_DROP;

	/* to the solicitor; a solicitation from :: (DAD) is answered to all nodes */
	src = (const __u32 *)&ip6->saddr;
	if (!(src[0] | src[1] | src[2] | src[3])) {
		__u8 all_nodes[16] = {0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
		__builtin_memcpy(&ip6->daddr, all_nodes, 16);
		__u8 mcast_mac[6] = {0x33, 0x33, 0, 0, 0, 1};
		__builtin_memcpy(eth->h_dest, mcast_mac, 6);
		na->flags = bpf_htonl(NA_FLAG_OVERRIDE << 24);
	} else {
		ip6->daddr = ip6->saddr;
		__builtin_memcpy(eth->h_dest, eth->h_source, 6);
		na->flags = bpf_htonl((NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE) << 24);
	}
	__builtin_memcpy(eth->h_source, mac, 6);
	__builtin_memcpy(&ip6->saddr, target, 16);
	ip6->payload_len = bpf_htons(sizeof(struct ndp_na));
	ip6->hop_limit = 255;
	na->type = NDISC_NEIGHBOUR_ADVERTISEMENT;
	na->code = 0;
	na->csum = 0;
	__builtin_memcpy(na->target, target, 16);
	na->opt_type = 2; /* target link-layer address */
	na->opt_len = 1;  /* in units of 8 bytes */
	__builtin_memcpy(na->mac, mac, 6);

	__u32 sum = 0;
	const __u32 *a = (const __u32 *)&ip6->saddr;
#pragma unroll
	for (int i = 0; i < 8; i++)
		sum = csum_add(sum, a[i]);
	sum = csum_add(sum, bpf_htons(sizeof(struct ndp_na)));
	sum = csum_add(sum, bpf_htons(IPPROTO_ICMPV6));
	const __u32 *w = (const __u32 *)na;
#pragma unroll
	for (int i = 0; i < (int)(sizeof(struct ndp_na) / 4); i++)
		sum = csum_add(sum, w[i]);
	na->csum = csum_fold(sum);
	stat_inc(BLIXT_STAT_NDP_REPLY);
	return XDP_TX;
}

#endif
