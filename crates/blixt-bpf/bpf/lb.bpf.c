// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Blixt's load balancer: one program, two entry points sharing every map. blixt_lb runs at XDP;
 * blixt_lb_tc runs the same logic as a TC ingress classifier, for interfaces or kernels where XDP
 * cannot do the job, and behind blixt_lb for packets whose next hop the kernel has not resolved
 * when XDP cannot hand them over in metadata (see fib_hop() in include/forward.h and
 * docs/dataplane.md, "Kernel support"). include/hook.h is the context shim.
 *
 * This file is the pipeline, lb_main():
 *   parse      include/parse.h; ARP/NDP for VIPs are answered (include/announce.h), ICMP errors
 *              about tracked flows translated (include/icmp.h), fragments to VIPs dropped;
 *   conntrack  the 5-tuple looked up in blixt_conntrack (both directions of a flow are keys, so
 *              an established packet costs exactly one hash lookup whichever way it goes) and
 *              its entry refreshed (include/conntrack.h);
 *   frontend   on a miss, the destination looked up in the frontends;
 *   backend    a new flow picks its backend from the frontend's weighted Maglev ring, allocates
 *              a source port on the node (full NAT, include/snat.h) and records both directions;
 *              a flow that cannot be served is refused with a TCP reset (include/rst.h);
 *   rewrite    and forward by FIB lookup or the cached next hop (include/forward.h).
 * Everything else passes untouched.
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
#include "include/forward.h"
#include "include/conntrack.h"
#include "include/snat.h"
#include "include/rst.h"
#include "include/icmp.h"

/* Internal results besides XDP verdicts, so that each big step is inlined once. */
#define ACT_NEW_FLOW (-1) /* start a new flow for this packet */
#define ACT_RST (-2)      /* answer the client with a TCP reset */
#define ACT_FORWARD (-3)  /* rewrite per the chosen entry and forward */

/* Slots per Maglev ring, a prime; must match the agent's table size. */
volatile const __u32 ring_size = BLIXT_DEFAULT_RING_SIZE;

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

/* A new flow to frontend `fe`: pick a backend, allocate a source port, track both directions. */
static __always_inline int new_flow(void *ctx, const int hook, struct pkt *p, struct blixt_frontend *fe,
				    struct blixt_ct_entry **out)
{
	if (p->key.proto == IPPROTO_TCP && (p->tcp_flags & TCPF_RST)) {
		stat_inc(BLIXT_STAT_STRAY_RST); /* nothing to reset */
		return XDP_DROP;
	}
	if (fe->flags & BLIXT_FE_F_ALL_REJECT)
		return reject(ctx, hook, p, fe, BLIXT_STAT_REJECT_NO_BACKEND);

	/* the backend: the frontend's Maglev ring slot for the flow's hash */
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
	const __u8 *snat = snat_addr(cfg, p->family);
	if (!snat)
		return XDP_DROP;
	__u64 now = bpf_ktime_get_coarse_ns();
	/* a TCP segment without SYN and without state (lost on this node, or a flow another
	 * node served): tracked as NEW, established once the backend answers (conntrack.h) */
	int midstream = p->key.proto == IPPROTO_TCP && !(p->tcp_flags & TCPF_SYN);
	__u8 state = BLIXT_CT_NEW;

	struct new_flow_scratch *sc = bpf_map_lookup_elem(&blixt_scratch, &zero);
	if (!sc)
		return XDP_DROP;
	struct blixt_ct_entry *fwd = &sc->fwd;
	__builtin_memset(sc, 0, sizeof(*sc));

	/* the two directions: client -> VIP becomes node:port -> backend, backend -> node:port
	 * becomes VIP -> client (the port is the source port allocated below) */
	ct_entry_init(&sc->rev, BLIXT_CT_DIR_REPLY, p->key.dst, p->key.dport, p->key.src,
		      p->key.sport, be_id, be->gen, fe->id, state, now);
	ct_entry_init(fwd, BLIXT_CT_DIR_FORWARD, snat, 0, be->addr, be->port, be_id, be->gen,
		      fe->id, state, now);
	ct_peer_key(&sc->rkey, fwd, p->key.proto, p->family);
	/* the source port; the reply direction is tracked once it is found */
	__u16 port;
	int tracked = snat_port(cfg, hash, be_id, now, &sc->rev, &sc->rkey, &sc->okey, &port);
	/* no free source port towards this backend: refused, never forwarded on a port another
	 * live flow owns (its backend would take this client's packets for that flow's) */
	if (!tracked)
		return reject(ctx, hook, p, fe, BLIXT_STAT_SNAT_EXHAUSTED);
	fwd->nsport = port;

	/* the backend's next hop, when this CPU looked it up for this generation within a second */
	struct blixt_nexthop *nh = bpf_map_lookup_elem(&blixt_nexthops, &be_id);
	if (nh && nh->hop.fib_ifindex && nh->backend_gen == be->gen &&
	    now - nh->looked_up_ns <= NSEC_PER_SEC)
		__builtin_memcpy(ct_hop(fwd), &nh->hop, sizeof(struct blixt_hop));
	if (tracked && bpf_map_update_elem(&blixt_conntrack, &p->key, fwd, BPF_ANY)) {
		bpf_map_delete_elem(&blixt_conntrack, &sc->rkey);
		tracked = 0;
	}
	if (!tracked)
		stat_inc(BLIXT_STAT_CT_INSERT_FAILED);
	else if (midstream)
		stat_inc(BLIXT_STAT_CT_MISS_MIDSTREAM);

	count(&blixt_frontend_stats, fe->id, p->len, 1, 0);
	count(&blixt_backend_stats, be_id, p->len, 1, 0);
	*out = fwd;
	return ACT_FORWARD;
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
	__u64 now = bpf_ktime_get_coarse_ns();

	if (ct_reopened(ct, p, now))
		return ACT_NEW_FLOW;

	struct blixt_backend *be = bpf_map_lookup_elem(&blixt_backends, &ct->backend_id);
	if (!be || be->gen != ct->backend_gen || !(be->flags & BLIXT_BE_F_ACTIVE)) {
		/* the backend left the snapshot: its flows end */
		stat_inc(BLIXT_STAT_BACKEND_GONE);
		int fwd = ct->dir == BLIXT_CT_DIR_FORWARD;
		bpf_map_delete_elem(&blixt_conntrack, &p->key);
		if (!fwd)
			return XDP_DROP;
		if (p->key.proto == IPPROTO_TCP)
			return (p->tcp_flags & TCPF_RST) ? XDP_DROP : ACT_RST;
		return ACT_NEW_FLOW; /* UDP: re-balance */
	}

	ct_refresh(ct, p, now);
	count(&blixt_backend_stats, ct->backend_id, p->len, 0, 0);
	return ACT_FORWARD;
}

/*
 * A packet the load balancer cannot steer: dropped, counted under `reason`, when addressed to a
 * VIP (nothing else on the node would take it); passed otherwise, to a stack that validates it.
 * Fragments carry no ports (later ones not even an L4 header): steering them would need
 * reassembly state. Malformed packets (parse.h) must never reach a backend or create state.
 */
static __always_inline int unsteerable(struct pkt *p, __u32 reason)
{
	struct blixt_vip_key vk = {};
	__builtin_memcpy(vk.addr, p->key.dst, 16);
	vk.family = p->family;
	if (!bpf_map_lookup_elem(&blixt_vips, &vk))
		return XDP_PASS;
	stat_inc(reason);
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
		return unsteerable(&p, BLIXT_STAT_FRAGMENT_DROP);
	case PARSE_MALFORMED:
		return unsteerable(&p, BLIXT_STAT_MALFORMED);
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
