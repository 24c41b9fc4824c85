// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Blixt's load balancer: one program, two entry points sharing every map. blixt_lb runs at XDP;
 * blixt_lb_tc runs the same logic as a TC ingress classifier, for interfaces or kernels where XDP
 * cannot do the job, and behind blixt_lb for packets whose next hop the kernel has not resolved
 * when XDP cannot hand them over in metadata (see fib_hop() and docs/dataplane.md, "Kernel
 * support"). include/hook.h is the context shim.
 *
 * Per packet: parse; look the 5-tuple up in conntrack (both directions of a flow are keys, so an
 * established packet costs exactly one hash lookup whichever way it goes); on a miss look the
 * destination up in the frontends; a new flow picks its backend from the frontend's weighted
 * Maglev ring, allocates a source port on the node (full-NAT), records both directions, rewrites
 * and forwards by FIB lookup. Everything else passes untouched.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "include/blixt_shared.h"
#include "include/maps.h"
#include "include/csum.h"
#include "include/parse.h"
#include "include/announce.h"
#include "include/hook.h"

#define AF_INET 2
#define AF_INET6 10
#define NSEC_PER_SEC 1000000000ull

/* Internal results besides XDP verdicts, so that each big step is inlined once. */
#define ACT_NEW_FLOW (-1) /* start a new flow for this packet */
#define ACT_RST (-2)      /* answer the client with a TCP reset */
#define ACT_FORWARD (-3)  /* rewrite per the chosen entry and forward */

/* Per-CPU scratch for building conntrack entries of a new flow: too big for the BPF stack. */
struct new_flow_scratch {
	struct blixt_ct_entry fwd;
	struct blixt_ct_entry rev;
	struct blixt_flow_key rkey;
	struct blixt_flow_key okey; /* the client-side key of a flow whose port is taken over */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct new_flow_scratch);
	__uint(max_entries, 1);
} blixt_scratch SEC(".maps");

/* Slots per Maglev ring, a prime; must match the agent's table size. */
volatile const __u32 ring_size = BLIXT_DEFAULT_RING_SIZE;
/* Source ports probed for a free one before a new flow falls back to stateless forwarding. */
volatile const __u32 snat_tries = 16;
/* Hop limit / TTL of the resets the program sends. */
volatile const __u8 rst_ttl = 64;
/*
 * May XDP use bpf_xdp_adjust_meta to hand a packet with an unresolved next hop to neigh_tc.bpf.c?
 * Set by the loader from the kernel's capabilities. When 0 the verifier prunes that branch (a
 * frozen .rodata constant), so the program loads on kernels without the helper; such packets
 * then go up untouched and blixt_lb_tc, attached on TC ingress, forwards them.
 */
volatile const __u8 neigh_via_meta = 1;


static __always_inline __u32 rotl32(__u32 x, int r)
{
	return (x << r) | (x >> (32 - r));
}

/*
 * MurmurHash3 (x86_32) over the 40-byte flow key. Mirrored in Rust (blixt-bpf::hash) so tests can
 * predict ring slots; it only has to be deterministic, not identical to any other implementation.
 */
static __always_inline __u32 flow_hash(const struct blixt_flow_key *k)
{
	const __u32 *w = (const __u32 *)k;
	__u32 h = 0x3b1a7e11;

#pragma unroll
	for (int i = 0; i < 10; i++) {
		__u32 c = w[i] * 0xcc9e2d51;
		c = rotl32(c, 15) * 0x1b873593;
		h ^= c;
		h = rotl32(h, 13) * 5 + 0xe6546b64;
	}
	h ^= 40;
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

static __always_inline void count(void *map, __u32 id, __u64 bytes, int new_flow, int reject)
{
	struct blixt_counters *c = bpf_map_lookup_elem(map, &id);
	if (!c)
		return;
	c->packets += 1;
	c->bytes += bytes;
	c->new_flows += new_flow;
	c->rejects += reject;
}

/*
 * Rewrites addresses and ports of the packet's IP and TCP/UDP headers to nsrc:sport -> ndst:dport
 * (`nports` holds both ports as they sit in the header), updating checksums incrementally. TC
 * updates the L4 checksum through bpf_l4_csum_replace(), which also knows a checksum the sender
 * left for offload (CHECKSUM_PARTIAL: the field holds only the pseudo-header sum, so it follows
 * the addresses but not the ports). The packet pointers must be re-read afterwards.
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
	__u32 addrs = 0;
	__u8 *saddr, *daddr;

	if (v6) {
		struct ipv6hdr *ip6 = data + (p->l3_off & 0x1f);
		if ((void *)(ip6 + 1) > data_end)
			return -1;
		saddr = (__u8 *)&ip6->saddr;
		daddr = (__u8 *)&ip6->daddr;
		addrs = csum_diff_addr(addrs, saddr, nsrc, 1);
		addrs = csum_diff_addr(addrs, daddr, ndst, 1);
		__builtin_memcpy(saddr, nsrc, 16);
		__builtin_memcpy(daddr, ndst, 16);
	} else {
		struct iphdr *iph = data + (p->l3_off & 0x1f);
		if ((void *)(iph + 1) > data_end)
			return -1;
		saddr = (__u8 *)&iph->saddr;
		daddr = (__u8 *)&iph->daddr;
		addrs = csum_diff_addr(addrs, saddr, nsrc, 0);
		addrs = csum_diff_addr(addrs, daddr, ndst, 0);
		iph->check = csum_apply(iph->check, addrs);
		__builtin_memcpy(saddr, nsrc, 4);
		__builtin_memcpy(daddr, ndst, 4);
	}

	if (l4 + 8 > data_end)
		return -1;
	__u32 *ports = l4;
	__u32 port_diff = csum_diff32(0, *ports, nports);
	*ports = nports;

	if (hook == HOOK_TC) {
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

/* The conntrack entry's cached next hop, as a struct blixt_hop (same layout, see the header). */
static __always_inline struct blixt_hop *ct_hop(struct blixt_ct_entry *ct)
{
	return (struct blixt_hop *)&ct->fib_ifindex;
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

	if (p->family == BLIXT_FAMILY_V6) {
		struct ipv6hdr *ip6 = data + l3_off;
		if ((void *)(ip6 + 1) > data_end)
			return XDP_DROP;
		seg_len = bpf_ntohs(ip6->payload_len) - (l4_off - l3_off - sizeof(*ip6)) - doff;
	} else {
		struct iphdr *iph = data + l3_off;
		if ((void *)(iph + 1) > data_end)
			return XDP_DROP;
		seg_len = bpf_ntohs(iph->tot_len) - iph->ihl * 4 - doff;
	}
	if (flags & TCPF_SYN)
		seg_len += 1;
	if (flags & TCPF_FIN)
		seg_len += 1;

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
	__u8 mac[ETH_ALEN];
	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
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

/* Rejects a new flow: TCP with a reset, anything else by drop. */
static __always_inline int reject(void *ctx, const int hook, struct pkt *p, struct blixt_frontend *fe,
				  __u32 reason)
{
	stat_inc(reason);
	count(&blixt_frontend_stats, fe->id, p->len, 0, 1);
	if (p->key.proto == IPPROTO_TCP && !(p->tcp_flags & TCPF_RST))
		return ACT_RST;
	return XDP_DROP;
}

static __always_inline int addr_is_zero(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;
	return !(w[0] | w[1] | w[2] | w[3]);
}

static __always_inline int same_addr(const __u8 *a, const __u8 *b)
{
	const __u32 *x = (const __u32 *)a;
	const __u32 *y = (const __u32 *)b;
	return !((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]));
}

static __always_inline __u64 state_timeout_ns(const struct blixt_config *cfg, __u8 proto,
						 __u8 state)
{
	__u32 s;
	if (proto != IPPROTO_TCP)
		s = cfg->udp_timeout_s;
	else if (state == BLIXT_CT_CLOSING)
		s = cfg->tcp_closing_timeout_s;
	else if (state == BLIXT_CT_ESTABLISHED)
		s = cfg->tcp_established_timeout_s;
	else
		s = cfg->tcp_syn_timeout_s;
	return (__u64)s * NSEC_PER_SEC;
}

/* Is the flow of this entry over: closing (FIN or RST seen) or idle past its state's timeout? */
static __always_inline int entry_over(const struct blixt_config *cfg,
				      const struct blixt_ct_entry *e, __u8 proto, __u64 now)
{
	if (e->last_seen_ns > now)
		return 0; /* refreshed by another CPU since this packet read the clock */
	__u64 idle = now - e->last_seen_ns;
	/* last_seen has one-second resolution: more than 2 s is at least a second of quiet */
	if (e->state == BLIXT_CT_CLOSING && idle > 2 * NSEC_PER_SEC)
		return 1;
	return idle > state_timeout_ns(cfg, proto, e->state);
}

/*
 * May a new flow take over the source port of `old`, a reply-direction entry? Only when its
 * flow is over, as either direction saw it (a client's RST marks only the client's side), or
 * when the client's side is gone (evicted) and the port has been quiet for 2 s. Leaves the old
 * flow's client-side key in `okey`. The backend may still hold the 4-tuple in TIME_WAIT; Linux
 * accepts a new SYN there when its timestamp is newer, as it is for a client whose flows share
 * a timestamp offset (one per address pair).
 */
static __always_inline int port_reusable(const struct blixt_config *cfg,
					 const struct blixt_ct_entry *old, __u8 proto, __u8 family,
					 __u64 now, struct blixt_flow_key *okey)
{
	__builtin_memcpy(okey->src, old->ndst, 16);
	__builtin_memcpy(okey->dst, old->nsrc, 16);
	okey->sport = old->ndport;
	okey->dport = old->nsport;
	okey->proto = proto;
	okey->family = family;
	if (entry_over(cfg, old, proto, now))
		return 1;
	struct blixt_ct_entry *fwd = bpf_map_lookup_elem(&blixt_conntrack, okey);
	if (fwd)
		return entry_over(cfg, fwd, proto, now);
	return old->last_seen_ns <= now && now - old->last_seen_ns > 2 * NSEC_PER_SEC;
}

/* A new flow to frontend `fe`: pick, track, rewrite, forward. */
static __always_inline int new_flow(void *ctx, const int hook, struct pkt *p, struct blixt_frontend *fe,
				    struct blixt_ct_entry **out)
{
	if (p->key.proto == IPPROTO_TCP && (p->tcp_flags & TCPF_RST))
		return XDP_DROP; /* nothing to reset */
	if (fe->flags & BLIXT_FE_F_ALL_REJECT)
		return reject(ctx, hook, p, fe, BLIXT_STAT_REJECT_NO_BACKEND);

	__u32 hash = flow_hash(&p->key);
	__u32 rs = ring_size;
	if (rs == 0)
		return XDP_DROP;
	__u32 idx = fe->ring * rs + hash % rs;
	__u32 pair = idx / 2;
	__u64 *slots = bpf_map_lookup_elem(&blixt_rings, &pair);
	if (!slots)
		return XDP_DROP;
	__u32 be_id = ((__u32 *)slots)[idx & 1];
	if (be_id == BLIXT_SLOT_REJECT)
		return reject(ctx, hook, p, fe, BLIXT_STAT_REJECT_SHARE);
	struct blixt_backend *be = bpf_map_lookup_elem(&blixt_backends, &be_id);
	if (!be || !(be->flags & BLIXT_BE_F_ACTIVE))
		return reject(ctx, hook, p, fe, BLIXT_STAT_REJECT_NO_BACKEND);

	__u32 zero = 0;
	struct blixt_config *cfg = bpf_map_lookup_elem(&blixt_config, &zero);
	if (!cfg)
		return XDP_DROP;
	const __u8 *snat = p->family == BLIXT_FAMILY_V6 ? cfg->snat_v6 : cfg->snat_v4;
	if (addr_is_zero(snat)) {
		stat_inc(BLIXT_STAT_NO_SNAT_ADDR);
		return XDP_DROP;
	}
	__u32 pmin = cfg->port_min;
	__u32 range = cfg->port_max >= cfg->port_min ? cfg->port_max - cfg->port_min + 1 : 1;
	__u32 start = ((hash * 0x9e3779b1u) ^ be_id) % range;
	__u64 now = bpf_ktime_get_coarse_ns();
	int midstream = p->key.proto == IPPROTO_TCP && !(p->tcp_flags & TCPF_SYN);

	struct new_flow_scratch *sc = bpf_map_lookup_elem(&blixt_scratch, &zero);
	if (!sc)
		return XDP_DROP;
	struct blixt_ct_entry *revp = &sc->rev;
	struct blixt_ct_entry *fwdp = &sc->fwd;
	struct blixt_flow_key *rkeyp = &sc->rkey;
	__builtin_memset(sc, 0, sizeof(*sc));
#define rev (*revp)
#define fwd (*fwdp)
#define rkey (*rkeyp)

	__builtin_memcpy(rev.nsrc, p->key.dst, 16);
	__builtin_memcpy(rev.ndst, p->key.src, 16);
	rev.nsport = p->key.dport;
	rev.ndport = p->key.sport;
	rev.backend_id = be_id;
	rev.backend_gen = be->gen;
	rev.frontend_id = fe->id;
	rev.dir = BLIXT_CT_DIR_REPLY;
	rev.state = midstream ? BLIXT_CT_ESTABLISHED : BLIXT_CT_NEW;
	rev.last_seen_ns = now;
	rev.created_ns = now;

	__builtin_memcpy(rkey.src, be->addr, 16);
	__builtin_memcpy(rkey.dst, snat, 16);
	rkey.sport = be->port;
	rkey.proto = p->key.proto;
	rkey.family = p->family;

	int tracked = 0;
	__u16 port = bpf_htons(pmin + start);
	__u32 spare = 0; /* 1 + offset of the first port whose flow is over (port_reusable) */
	for (__u32 i = 0; i < snat_tries && i < 64; i++) {
		__u32 off = start + i;
		if (off >= range)
			off %= range;
		port = bpf_htons(pmin + off);
		rkey.dport = port;
		/*
		 * The first port is tried by inserting at once (usually it is free: one map operation).
		 * Later ones are looked up first: an LRU insert takes a free element before it checks
		 * the key, so on a full table every failed insert would evict some other flow.
		 */
		struct blixt_ct_entry *old = 0;
		if (i > 0)
			old = bpf_map_lookup_elem(&blixt_conntrack, &rkey);
		if (!old && bpf_map_update_elem(&blixt_conntrack, &rkey, &rev, BPF_NOEXIST) == 0) {
			tracked = 1;
			break;
		}
		/* taken; by this very flow (state lost on our side, e.g. LRU eviction)? reuse it */
		if (!old)
			old = bpf_map_lookup_elem(&blixt_conntrack, &rkey);
		if (old && old->nsport == rev.nsport && old->ndport == rev.ndport &&
		    same_addr(old->ndst, rev.ndst) && same_addr(old->nsrc, rev.nsrc)) {
			if (bpf_map_update_elem(&blixt_conntrack, &rkey, &rev, BPF_ANY) == 0)
				tracked = 1;
			break;
		}
		if (!spare && old && port_reusable(cfg, old, rkey.proto, rkey.family, now, &sc->okey))
			spare = off + 1;
	}
	if (!tracked && spare) {
		/*
		 * Every probed port is in use, some by a flow that is over (closed flows keep their
		 * entries until the sweeper or LRU eviction removes them, so a high rate of short
		 * connections would otherwise run out of ports): take that one over, and drop the old
		 * flow's client-side entry so that nothing of it is left pointing at this port.
		 */
		port = bpf_htons(pmin + spare - 1);
		rkey.dport = port;
		/* the old flow's client-side key: okey as port_reusable() left it for this port */
		struct blixt_ct_entry *old = bpf_map_lookup_elem(&blixt_conntrack, &rkey);
		if (old && port_reusable(cfg, old, rkey.proto, rkey.family, now, &sc->okey) &&
		    bpf_map_update_elem(&blixt_conntrack, &rkey, &rev, BPF_ANY) == 0) {
			bpf_map_delete_elem(&blixt_conntrack, &sc->okey);
			stat_inc(BLIXT_STAT_SNAT_PORT_REUSED);
			tracked = 1;
		}
	}
	if (!tracked)
		port = bpf_htons(pmin + start);

	__builtin_memcpy(fwd.nsrc, snat, 16);
	__builtin_memcpy(fwd.ndst, be->addr, 16);
	fwd.nsport = port;
	fwd.ndport = be->port;
	fwd.backend_id = be_id;
	fwd.backend_gen = be->gen;
	fwd.frontend_id = fe->id;
	fwd.dir = BLIXT_CT_DIR_FORWARD;
	fwd.state = midstream ? BLIXT_CT_ESTABLISHED : BLIXT_CT_NEW;
	fwd.last_seen_ns = now;
	fwd.created_ns = now;
	/* the backend's next hop, when this CPU looked it up for this generation within a second */
	struct blixt_nexthop *nh = bpf_map_lookup_elem(&blixt_nexthops, &be_id);
	if (nh && nh->hop.fib_ifindex && nh->backend_gen == be->gen &&
	    now - nh->looked_up_ns <= NSEC_PER_SEC)
		__builtin_memcpy(ct_hop(fwdp), &nh->hop, sizeof(struct blixt_hop));
	if (tracked && bpf_map_update_elem(&blixt_conntrack, &p->key, &fwd, BPF_ANY)) {
		bpf_map_delete_elem(&blixt_conntrack, &rkey);
		tracked = 0;
	}
	if (!tracked)
		stat_inc(BLIXT_STAT_CT_INSERT_FAILED);
	else if (midstream)
		stat_inc(BLIXT_STAT_CT_MISS_MIDSTREAM);

	count(&blixt_frontend_stats, fe->id, p->len, 1, 0);
	count(&blixt_backend_stats, be_id, p->len, 1, 0);
	*out = fwdp;
	return ACT_FORWARD;
#undef rev
#undef fwd
#undef rkey
}

static __always_inline int lookup_frontend_and_start(void *ctx, const int hook, struct pkt *p,
						     struct blixt_ct_entry **out)
{
	struct blixt_frontend_key fk = {};
	__builtin_memcpy(fk.addr, p->key.dst, 16);
	fk.port = p->key.dport;
	fk.proto = p->key.proto;
	fk.family = p->family;
	struct blixt_frontend *fe = bpf_map_lookup_elem(&blixt_frontends, &fk);
	if (!fe)
		return XDP_PASS;
	return new_flow(ctx, hook, p, fe, out);
}


/* A packet of a tracked flow, either direction. */
static __always_inline int tracked_flow(void *ctx, const int hook, struct pkt *p, struct blixt_ct_entry *ct)
{
	int tcp = p->key.proto == IPPROTO_TCP;
	__u8 flags = p->tcp_flags;
	__u64 now = bpf_ktime_get_coarse_ns();

	if (tcp && ct->dir == BLIXT_CT_DIR_FORWARD && (flags & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN &&
	    ct->state != BLIXT_CT_NEW) {
		/* a fresh SYN on an old tuple: a new connection once the old one closed or expired */
		__u32 zero = 0;
		struct blixt_config *cfg = bpf_map_lookup_elem(&blixt_config, &zero);
		if (ct->state == BLIXT_CT_CLOSING ||
		    (cfg && now - ct->last_seen_ns > state_timeout_ns(cfg, IPPROTO_TCP, ct->state)))
			return ACT_NEW_FLOW;
	}

	struct blixt_backend *be = bpf_map_lookup_elem(&blixt_backends, &ct->backend_id);
	if (!be || be->gen != ct->backend_gen || !(be->flags & BLIXT_BE_F_ACTIVE)) {
		/* the backend left the snapshot: its flows end */
		stat_inc(BLIXT_STAT_BACKEND_GONE);
		int fwd = ct->dir == BLIXT_CT_DIR_FORWARD;
		bpf_map_delete_elem(&blixt_conntrack, &p->key);
		if (!fwd)
			return XDP_DROP;
		if (tcp)
			return (flags & TCPF_RST) ? XDP_DROP : ACT_RST;
		return ACT_NEW_FLOW; /* UDP: re-balance */
	}

	__u8 state = ct->state;
	if (tcp) {
		if (flags & (TCPF_FIN | TCPF_RST))
			state = BLIXT_CT_CLOSING;
		else if (state == BLIXT_CT_NEW &&
			 (ct->dir == BLIXT_CT_DIR_REPLY || (flags & (TCPF_SYN | TCPF_ACK)) == TCPF_ACK))
			state = BLIXT_CT_ESTABLISHED;
	} else if (state == BLIXT_CT_NEW && ct->dir == BLIXT_CT_DIR_REPLY) {
		state = BLIXT_CT_ESTABLISHED;
	}
	/* writes dirty a shared cache line: only when something changed */
	if (state > ct->state)
		ct->state = state;
	if (now - ct->last_seen_ns > NSEC_PER_SEC) {
		ct->last_seen_ns = now;
		p->fib_refresh = 1; /* routes and neighbours may have changed */
	}

	count(&blixt_backend_stats, ct->backend_id, p->len, 0, 0);
	return ACT_FORWARD;
}

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
	__u32 outer = 0; /* change to the outer addresses (IPv4 header / ICMPv6 pseudo-header) */
	__u32 icmp = 0;  /* change to the bytes the ICMP checksum covers */
	__u32 inner_l4 = 0;

	/* outer header: like a packet of the entry's direction */
	if (v6) {
		struct ipv6hdr *ip6 = data + (p->l3_off & 0x1f);
		if ((void *)(ip6 + 1) > data_end)
			return XDP_PASS;
		outer = csum_diff_addr(outer, (__u8 *)&ip6->saddr, ct->nsrc, 1);
		outer = csum_diff_addr(outer, (__u8 *)&ip6->daddr, ct->ndst, 1);
		__builtin_memcpy(&ip6->saddr, ct->nsrc, 16);
		__builtin_memcpy(&ip6->daddr, ct->ndst, 16);
		icmp = outer;
	} else {
		struct iphdr *iph = data + (p->l3_off & 0x1f);
		if ((void *)(iph + 1) > data_end)
			return XDP_PASS;
		outer = csum_diff_addr(outer, (__u8 *)&iph->saddr, ct->nsrc, 0);
		outer = csum_diff_addr(outer, (__u8 *)&iph->daddr, ct->ndst, 0);
		iph->check = csum_apply(iph->check, outer);
		__builtin_memcpy(&iph->saddr, ct->nsrc, 4);
		__builtin_memcpy(&iph->daddr, ct->ndst, 4);
	}

	/* quoted header: the reverse direction, src <- ndst:ndport, dst <- nsrc:nsport */
	__u32 il3 = p->inner_l3_off & 0x3ff;
	__u32 il4 = p->inner_l4_off & 0x3ff;
	if (v6) {
		struct ipv6hdr *ip6 = data + il3;
		if ((void *)(ip6 + 1) > data_end)
			return XDP_PASS;
		inner_l4 = csum_diff_addr(inner_l4, (__u8 *)&ip6->saddr, ct->ndst, 1);
		inner_l4 = csum_diff_addr(inner_l4, (__u8 *)&ip6->daddr, ct->nsrc, 1);
		__builtin_memcpy(&ip6->saddr, ct->ndst, 16);
		__builtin_memcpy(&ip6->daddr, ct->nsrc, 16);
		icmp = csum_add(icmp, inner_l4);
	} else {
		struct iphdr *ih = data + il3;
		if ((void *)(ih + 1) > data_end)
			return XDP_PASS;
		inner_l4 = csum_diff_addr(inner_l4, (__u8 *)&ih->saddr, ct->ndst, 0);
		inner_l4 = csum_diff_addr(inner_l4, (__u8 *)&ih->daddr, ct->nsrc, 0);
		__u16 old_check = ih->check;
		ih->check = csum_apply(ih->check, inner_l4);
		__builtin_memcpy(&ih->saddr, ct->ndst, 4);
		__builtin_memcpy(&ih->daddr, ct->nsrc, 4);
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

	/* the quoted L4 checksum, when the quote reaches it */
	__u16 *l4sum = 0;
	if (p->key.proto == IPPROTO_TCP) {
		if (data + il4 + 18 <= data_end)
			l4sum = data + il4 + 16;
	} else if (data + il4 + 8 <= data_end) {
		l4sum = data + il4 + 6;
	}
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

static __always_inline int fragment(struct pkt *p)
{
	struct blixt_vip_key vk = {};
	__builtin_memcpy(vk.addr, p->key.dst, 16);
	vk.family = p->family;
	if (!bpf_map_lookup_elem(&blixt_vips, &vk))
		return XDP_PASS;
	/* Fragments carry no ports (later ones not even an L4 header): steering them would need
	 * reassembly state. Policy: drop fragments addressed to a VIP, counted. */
	stat_inc(BLIXT_STAT_FRAGMENT_DROP);
	return XDP_DROP;
}

/* The load balancer, for either hook (include/hook.h). */
static __always_inline int lb_main(void *ctx, const int hook)
{
	void *data = ctx_data(ctx, hook);
	void *data_end = ctx_data_end(ctx, hook);
	struct pkt p = {};

	struct blixt_ct_entry *ct;
	int act;

	switch (parse_packet(data, data_end, ctx_len(ctx, hook), &p)) {
	case PARSE_OK:
		break;
	case PARSE_ICMP_ERR:
		return icmp_error(ctx, hook, &p);
	case PARSE_FRAGMENT:
		return fragment(&p);
	case PARSE_ARP:
		return answer_arp(ctx, hook, &p);
	case PARSE_NDP_NS:
		return answer_ns(ctx, hook, &p);
	default:
		return XDP_PASS;
	}

	act = ACT_NEW_FLOW;
	int tracked = 0;
	ct = bpf_map_lookup_elem(&blixt_conntrack, &p.key);
	if (ct) {
		act = tracked_flow(ctx, hook, &p, ct);
		tracked = act == ACT_FORWARD;
	}
	if (act == ACT_NEW_FLOW)
		act = lookup_frontend_and_start(ctx, hook, &p, &ct);
	if (act == ACT_RST)
		return send_rst(ctx, hook, &p);
	if (act != ACT_FORWARD || !ct)
		return act;

	/* the next hop: cached in the entry (a new flow's entry holds its backend's when this CPU
	 * looked it up within a second), else by FIB lookup, remembered where it can be */
	struct blixt_hop found;
	const struct blixt_hop *hop = ct_hop(ct);
	int route = HOP_OK;
	if (!ct->fib_ifindex || (tracked && p.fib_refresh)) {
		struct blixt_hop *cache = 0;
		if (tracked) {
			cache = ct_hop(ct);
		} else {
			__u32 be_id = ct->backend_id;
			struct blixt_nexthop *nh = bpf_map_lookup_elem(&blixt_nexthops, &be_id);
			if (nh) {
				nh->backend_gen = ct->backend_gen;
				nh->looked_up_ns = bpf_ktime_get_coarse_ns();
				cache = &nh->hop;
			}
		}
		route = fib_hop(ctx, hook, &p, ct->nsrc, ct->ndst, &found, cache);
		hop = &found;
	}
	if (route == HOP_DROP)
		return XDP_DROP;
	/*
	 * XDP without metadata: the packet goes up as it came. blixt_lb_tc, on TC ingress of the same
	 * interface, finds the flow (a new one is tracked by now), rewrites and sends it with
	 * bpf_redirect_neigh(). Nothing is lost; the packet only pays for a second pass.
	 */
	if (route == HOP_NO_NEIGH && !sends_unresolved(hook))
		return XDP_PASS;

	__u32 nports;
	__builtin_memcpy(&nports, &ct->nsport, 4);
	__u32 ifindex = hop->fib_ifindex;
	if (rewrite(ctx, hook, &p, ct->nsrc, ct->ndst, nports))
		return XDP_DROP;
	if (route == HOP_NO_NEIGH)
		return send_unresolved(ctx, hook, ifindex);
	return send_via(ctx, hook, hop);
}

SEC("xdp")
int blixt_lb(struct xdp_md *ctx)
{
	return lb_main(ctx, HOOK_XDP);
}

SEC("classifier")
int blixt_lb_tc(struct __sk_buff *skb)
{
	__u32 linear = skb->len < TC_LINEAR_BYTES ? skb->len : TC_LINEAR_BYTES;
	if ((long)skb->data_end - (long)skb->data < (long)linear)
		bpf_skb_pull_data(skb, linear);
	return tc_verdict(skb, lb_main(skb, HOOK_TC));
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
