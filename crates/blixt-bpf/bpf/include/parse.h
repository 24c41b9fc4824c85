// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Packet parsing: Ethernet (one 802.1Q/802.1ad tag), IPv4 (any IHL), IPv6 (up to four hop-by-hop,
 * routing, destination options and fragment headers skipped), TCP, UDP, ICMP, ICMPv6.
 *
 * Every read is bounds-checked against data_end, and every header against the IP packet's own
 * length as well (p->l3_end): a frame shorter than its IP header says is PARSE_PASS (the
 * kernel drops it), anything the parser does not understand is PARSE_PASS, and a packet whose
 * lengths contradict each other is PARSE_MALFORMED: an IHL or a TCP data offset below the
 * minimum or beyond the IP length, an IPv6 payload length of 0 (jumbograms are not supported),
 * extension headers, L4 headers, a UDP length or an ICMP error's quote reaching past the IP
 * length, more than four extension headers. lb_main() drops malformed packets addressed to a
 * VIP (counted, BLIXT_STAT_MALFORMED) and passes the others, whose stack validates them.
 */
#ifndef BLIXT_PARSE_H
#define BLIXT_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_endian.h>
#include "blixt_shared.h"

/* <linux/icmp.h> drags in libc socket headers; the few bits needed are defined here. */
struct icmphdr {
	__u8 type;
	__u8 code;
	__u16 checksum;
	__u32 rest;
};
#define ICMP_DEST_UNREACH 3
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12

#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

#ifndef ETH_P_ARP
#define ETH_P_ARP 0x0806
#endif
#define NDISC_NEIGHBOUR_SOLICITATION 135
#define NDISC_NEIGHBOUR_ADVERTISEMENT 136

#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF
/* Extension headers walked before giving up (RFC 8200 recommends a small chain). */
#define IPV6_MAX_EXT 4

enum parse_result {
	PARSE_OK = 0,
	PARSE_PASS,      /* not ours: hand to the kernel untouched */
	PARSE_FRAGMENT,  /* IP fragment: no L4 ports to look at */
	PARSE_ICMP_ERR,  /* ICMP/ICMPv6 error quoting a packet: inner tuple parsed */
	PARSE_ARP,       /* ARP: l3_off points at the ARP header */
	PARSE_NDP_NS,    /* ICMPv6 neighbour solicitation: l4_off points at it */
	PARSE_MALFORMED, /* lengths that contradict each other; key.dst and family are set */
};

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

struct pkt {
	__u32 l3_off;       /* offset of the IP header from data */
	__u32 l4_off;       /* offset of the TCP/UDP/ICMP header */
	__u32 inner_l3_off; /* ICMP errors: offset of the quoted IP header */
	__u32 inner_l4_off; /* ICMP errors: offset of the quoted L4 header */
	__u32 len;          /* bytes of the frame (XDP: data to data_end; TC: skb->len) */
	__u32 l3_end;       /* offset of the end of the (outer) IP packet, per its length field */
	__u8 family;
	__u8 proto;     /* L4 protocol of the packet (or of the quoted packet for ICMP errors) */
	__u8 tcp_flags; /* byte 13 of the TCP header */
	__u8 icmp_v6;   /* ICMP error is ICMPv6 */
	__u8 fib_refresh; /* the flow's cached next hop is due for a new FIB lookup */
	/* ICMP errors: the outer destination (key holds the quoted tuple) */
	__u8 outer_dst[16] __attribute__((aligned(4)));
	/* 5-tuple as it arrives (ICMP errors: the quoted packet's); hashed as 32-bit words */
	struct blixt_flow_key key __attribute__((aligned(8)));
};

#define TCPF_FIN 0x01
#define TCPF_SYN 0x02
#define TCPF_RST 0x04
#define TCPF_ACK 0x10

static __always_inline int is_ipv6_ext(__u8 nh)
{
	return nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS ||
	       nh == IPPROTO_FRAGMENT;
}

/*
 * Skips up to IPV6_MAX_EXT extension headers from *off, each within the IP packet (`end`):
 * 0 with *off at the upper-layer header, PARSE_PASS when the frame ends first, PARSE_MALFORMED
 * when a header reaches past the IP length or the chain is longer.
 */
static __always_inline int ipv6_skip_ext(void *data, void *data_end, __u32 *off, __u32 end,
					 __u8 *nexthdr, int *is_frag)
{
#pragma unroll
	for (int i = 0; i < IPV6_MAX_EXT; i++) {
		__u8 nh = *nexthdr;
		if (!is_ipv6_ext(nh))
			return 0;
		if (*off > 0x3ff)
			return PARSE_PASS;
		/* every extension header begins with next-header and a length byte */
		__u8 *h = data + (*off & 0x3ff);
		if (*off + 8 > end)
			return PARSE_MALFORMED;
		if ((void *)(h + 8) > data_end)
			return PARSE_PASS;
		if (nh == IPPROTO_FRAGMENT) {
			__u16 frag = bpf_ntohs(*(__u16 *)(h + 2));
			/* offset != 0 or more-fragments: a real fragment (atomic ones are fine) */
			if ((frag & 0xfff8) || (frag & 1))
				*is_frag = 1;
			*nexthdr = h[0];
			*off += 8;
		} else {
			*nexthdr = h[0];
			*off += ((__u32)h[1] + 1) * 8;
		}
		if (*off > end)
			return PARSE_MALFORMED;
	}
	/* a fifth extension header: longer than we walk, so its fragment policy cannot be told */
	return is_ipv6_ext(*nexthdr) ? PARSE_MALFORMED : 0;
}

/*
 * The ports of a TCP or UDP header at `off`, which must lie within the IP packet ending at `end`:
 * the whole header with its options (need_full), or the 8 bytes an ICMP error quotes. 0, or
 * PARSE_PASS (not TCP/UDP, or the frame ends first) or PARSE_MALFORMED (see above).
 */
static __always_inline int parse_l4_ports(void *data, void *data_end, struct pkt *p, __u32 off,
					  __u32 end, __u8 proto, int need_full)
{
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return PARSE_PASS;
	if (off + (need_full && proto == IPPROTO_TCP ? sizeof(struct tcphdr) : 8) > end)
		return PARSE_MALFORMED;
	if (off > 0x3ff)
		return PARSE_PASS;
	void *l4 = data + (off & 0x3ff);
	if (proto == IPPROTO_TCP) {
		if (need_full) {
			struct tcphdr *th = l4;
			if ((void *)(th + 1) > data_end)
				return PARSE_PASS;
			__u32 doff = th->doff * 4;
			if (doff < sizeof(struct tcphdr) || off + doff > end)
				return PARSE_MALFORMED;
			p->tcp_flags = ((__u8 *)th)[13];
		} else if (l4 + 8 > data_end) {
			return PARSE_PASS;
		}
	} else {
		struct udphdr *uh = l4;
		if ((void *)(uh + 1) > data_end)
			return PARSE_PASS;
		__u32 ulen = bpf_ntohs(uh->len);
		/* a quote may be cut short; its length field still may not be below the header */
		if (ulen < sizeof(struct udphdr) || (need_full && off + ulen > end))
			return PARSE_MALFORMED;
	}
	p->key.sport = *(__u16 *)l4;
	p->key.dport = *(__u16 *)(l4 + 2);
	p->key.proto = proto;
	return 0;
}

/*
 * Parses the quoted packet of an ICMP error starting at `off`: an IP header of `family` and at
 * least the first 8 bytes of its TCP/UDP header (all RFC 792 guarantees), within the outer IP
 * packet. 0, PARSE_PASS or PARSE_MALFORMED. The quoted addresses go to p->key, so the outer
 * destination is kept in p->outer_dst first.
 */
static __always_inline int parse_inner(void *data, void *data_end, struct pkt *p, __u32 off)
{
	__u32 end = p->l3_end;
	__builtin_memcpy(p->outer_dst, p->key.dst, 16);
	__u32 hdr = p->family == BLIXT_FAMILY_V4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
	if (off + hdr > end)
		return PARSE_MALFORMED;
	if (off > 0x3ff)
		return PARSE_PASS;
	off &= 0x3ff;
	p->inner_l3_off = off;
	if (p->family == BLIXT_FAMILY_V4) {
		struct iphdr *ih = data + off;
		if ((void *)(ih + 1) > data_end)
			return PARSE_PASS;
		if (ih->ihl < 5 || ih->version != 4)
			return PARSE_MALFORMED;
		__builtin_memcpy(p->key.src, &ih->saddr, 4);
		__builtin_memcpy(p->key.dst, &ih->daddr, 4);
		p->inner_l4_off = off + ih->ihl * 4;
		return parse_l4_ports(data, data_end, p, p->inner_l4_off, end, ih->protocol, 0);
	}
	struct ipv6hdr *ih6 = data + off;
	if ((void *)(ih6 + 1) > data_end)
		return PARSE_PASS;
	if (ih6->version != 6)
		return PARSE_MALFORMED;
	__builtin_memcpy(p->key.src, &ih6->saddr, 16);
	__builtin_memcpy(p->key.dst, &ih6->daddr, 16);
	p->inner_l4_off = off + sizeof(struct ipv6hdr);
	return parse_l4_ports(data, data_end, p, p->inner_l4_off, end, ih6->nexthdr, 0);
}

/*
 * The verdict of an ICMP error from parse_inner()'s: a malformed error is judged by its own
 * destination (is it a VIP?), not by the quoted packet's, so that destination goes back in key.
 */
static __always_inline enum parse_result icmp_error_result(struct pkt *p, int inner)
{
	if (inner == PARSE_MALFORMED)
		__builtin_memcpy(p->key.dst, p->outer_dst, 16);
	return inner ? inner : PARSE_ICMP_ERR;
}

static __always_inline int is_icmp4_error(__u8 type)
{
	return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED || type == ICMP_PARAMETERPROB;
}

static __always_inline int is_icmp6_error(__u8 type)
{
	return type == ICMPV6_DEST_UNREACH || type == ICMPV6_PKT_TOOBIG ||
	       type == ICMPV6_TIME_EXCEED || type == ICMPV6_PARAMPROB;
}

static __always_inline enum parse_result parse_packet(void *data, void *data_end, __u32 len,
						       struct pkt *p)
{
	struct ethhdr *eth = data;
	__u32 off = sizeof(*eth);
	if ((void *)(eth + 1) > data_end)
		return PARSE_PASS;
	__u16 proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vh = data + off;
		if ((void *)(vh + 1) > data_end)
			return PARSE_PASS;
		proto = vh->proto;
		off += sizeof(*vh);
	}
	p->l3_off = off;
	p->len = len;
	if (proto == bpf_htons(ETH_P_ARP))
		return PARSE_ARP;

	__u8 l4proto;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = data + off;
		if ((void *)(iph + 1) > data_end)
			return PARSE_PASS;
		if (iph->version != 4)
			return PARSE_PASS;
		/* shorter than the header says: truncated, not ours to forward */
		__u32 tot = bpf_ntohs(iph->tot_len);
		if (off + tot > p->len)
			return PARSE_PASS;
		p->family = BLIXT_FAMILY_V4;
		p->key.family = BLIXT_FAMILY_V4;
		__builtin_memcpy(p->key.src, &iph->saddr, 4);
		__builtin_memcpy(p->key.dst, &iph->daddr, 4);
		if (iph->ihl < 5 || iph->ihl * 4 > tot)
			return PARSE_MALFORMED;
		p->l3_end = off + tot;
		l4proto = iph->protocol;
		if (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET)) {
			p->key.proto = l4proto;
			return PARSE_FRAGMENT;
		}
		off += iph->ihl * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + off;
		int is_frag = 0;
		if ((void *)(ip6 + 1) > data_end)
			return PARSE_PASS;
		if (ip6->version != 6)
			return PARSE_PASS;
		__u32 payload = bpf_ntohs(ip6->payload_len);
		if (off + sizeof(*ip6) + payload > p->len)
			return PARSE_PASS;
		p->family = BLIXT_FAMILY_V6;
		p->key.family = BLIXT_FAMILY_V6;
		__builtin_memcpy(p->key.src, &ip6->saddr, 16);
		__builtin_memcpy(p->key.dst, &ip6->daddr, 16);
		if (!payload)
			return PARSE_MALFORMED;
		p->l3_end = off + sizeof(*ip6) + payload;
		l4proto = ip6->nexthdr;
		off += sizeof(*ip6);
		int ext = ipv6_skip_ext(data, data_end, &off, p->l3_end, &l4proto, &is_frag);
		if (ext)
			return ext;
		if (is_frag) {
			p->key.proto = l4proto;
			return PARSE_FRAGMENT;
		}
	} else {
		return PARSE_PASS;
	}
	if (off > 0x3ff)
		return PARSE_PASS;
	p->key.family = p->family;
	p->l4_off = off;

	if (l4proto == IPPROTO_ICMP && p->family == BLIXT_FAMILY_V4) {
		struct icmphdr *ic = data + (off & 0x3ff);
		if ((void *)(ic + 1) > data_end || !is_icmp4_error(ic->type))
			return PARSE_PASS;
		p->icmp_v6 = 0;
		return icmp_error_result(p, parse_inner(data, data_end, p, off + sizeof(*ic)));
	}
	if (l4proto == IPPROTO_ICMPV6 && p->family == BLIXT_FAMILY_V6) {
		struct icmp6hdr *ic6 = data + (off & 0x3ff);
		if ((void *)(ic6 + 1) > data_end)
			return PARSE_PASS;
		if (ic6->icmp6_type == NDISC_NEIGHBOUR_SOLICITATION) {
			p->l4_off = off;
			return PARSE_NDP_NS;
		}
		if (!is_icmp6_error(ic6->icmp6_type))
			return PARSE_PASS;
		p->icmp_v6 = 1;
		return icmp_error_result(p, parse_inner(data, data_end, p, off + sizeof(*ic6)));
	}
	int l4 = parse_l4_ports(data, data_end, p, off, p->l3_end, l4proto, 1);
	return l4 ? l4 : PARSE_OK;
}

#endif
