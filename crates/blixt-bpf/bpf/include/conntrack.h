// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Conntrack: one blixt_conntrack entry per direction of a flow, keyed by the 5-tuple as the
 * packet arrives (client -> VIP for the forward direction, backend -> node for the reply), each
 * holding what to rewrite its packets into. Here: the entries' construction, their state
 * machine and refresh, and their timeouts. The agent's sweeper expires entries by the same
 * timeouts; LRU eviction makes room when the table is full.
 */
#ifndef BLIXT_CONNTRACK_H
#define BLIXT_CONNTRACK_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "blixt_shared.h"
#include "maps.h"
#include "parse.h"

#define NSEC_PER_SEC 1000000000ull

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

/* The conntrack entry's cached next hop, as a struct blixt_hop (same layout, see the header). */
static __always_inline struct blixt_hop *ct_hop(struct blixt_ct_entry *ct)
{
	return (struct blixt_hop *)&ct->fib_ifindex;
}

static __always_inline int same_addr(const __u8 *a, const __u8 *b)
{
	const __u32 *x = (const __u32 *)a;
	const __u32 *y = (const __u32 *)b;
	return !((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]));
}

/*
 * Fills one direction's entry of a new flow: its packets become nsrc:nsport -> ndst:ndport.
 * Both directions of a flow carry the same backend, frontend, state and times. The caller
 * zeroed the entry (flags and the cached next hop start empty).
 */
static __always_inline void ct_entry_init(struct blixt_ct_entry *e, __u8 dir, const __u8 *nsrc,
					  __u16 nsport, const __u8 *ndst, __u16 ndport,
					  __u32 backend_id, __u32 backend_gen, __u32 frontend_id,
					  __u8 state, __u64 now)
{
	__builtin_memcpy(e->nsrc, nsrc, 16);
	__builtin_memcpy(e->ndst, ndst, 16);
	e->nsport = nsport;
	e->ndport = ndport;
	e->backend_id = backend_id;
	e->backend_gen = backend_gen;
	e->frontend_id = frontend_id;
	e->dir = dir;
	e->state = state;
	e->last_seen_ns = now;
	e->created_ns = now;
}

/*
 * The key of the other direction of the flow of entry `e`: the 5-tuple of a packet that `e`'s
 * rewrite produced, seen coming back (a forward entry gives the reply key, a reply entry the
 * client-side key).
 */
static __always_inline void ct_peer_key(struct blixt_flow_key *k, const struct blixt_ct_entry *e,
					__u8 proto, __u8 family)
{
	__builtin_memcpy(k->src, e->ndst, 16);
	__builtin_memcpy(k->dst, e->nsrc, 16);
	k->sport = e->ndport;
	k->dport = e->nsport;
	k->proto = proto;
	k->family = family;
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
 * Is this packet, matching the forward entry `ct`, a fresh SYN on an old tuple: a new
 * connection, once the old one closed or expired?
 */
static __always_inline int ct_reopened(const struct blixt_ct_entry *ct, const struct pkt *p,
				       __u64 now)
{
	if (p->key.proto != IPPROTO_TCP || ct->dir != BLIXT_CT_DIR_FORWARD ||
	    (p->tcp_flags & (TCPF_SYN | TCPF_ACK)) != TCPF_SYN || ct->state == BLIXT_CT_NEW)
		return 0;
	__u32 zero = 0;
	struct blixt_config *cfg = bpf_map_lookup_elem(&blixt_config, &zero);
	return ct->state == BLIXT_CT_CLOSING ||
	       (cfg && now - ct->last_seen_ns > state_timeout_ns(cfg, IPPROTO_TCP, ct->state));
}

/*
 * The backend answered the flow of reply entry `rev`: marks its forward entry, once, so that
 * the client's ACK may establish it (one lookup per flow, on the backend's first packet).
 */
static __always_inline void ct_mark_answered(struct blixt_ct_entry *rev, struct pkt *p)
{
	if (rev->flags & BLIXT_CT_F_SEEN_REPLY)
		return;
	rev->flags |= BLIXT_CT_F_SEEN_REPLY;
	struct blixt_flow_key k = {};
	ct_peer_key(&k, rev, p->key.proto, p->family);
	struct blixt_ct_entry *fwd = bpf_map_lookup_elem(&blixt_conntrack, &k);
	if (fwd && !(fwd->flags & BLIXT_CT_F_SEEN_REPLY))
		fwd->flags |= BLIXT_CT_F_SEEN_REPLY;
}

/*
 * Moves the entry's state on for this packet, never back, following the TCP handshake: a flow
 * is ESTABLISHED (hours of idle timeout) only once both sides took part, so neither a SYN flood
 * whose SYN-ACKs are never acknowledged nor a flood of bare ACKs holds entries past the short
 * NEW timeout.
 *   reply entry, TCP:   the SYN-ACK (or any first answer) marks the flow answered; a segment
 *                       with ACK and without SYN (the backend past its handshake) establishes;
 *   forward entry, TCP: the client's ACK establishes once the flow was answered;
 *   either, TCP:        FIN or RST: CLOSING;
 *   UDP:                any reply establishes.
 * Refreshes the entry at most once a second, when its cached next hop is due for a new FIB
 * lookup too (routes and neighbours may have changed).
 */
static __always_inline void ct_refresh(struct blixt_ct_entry *ct, struct pkt *p, __u64 now)
{
	__u8 flags = p->tcp_flags;
	__u8 state = ct->state;
	int ack_only = (flags & (TCPF_SYN | TCPF_ACK)) == TCPF_ACK;

	if (p->key.proto == IPPROTO_TCP) {
		if (flags & (TCPF_FIN | TCPF_RST)) {
			state = BLIXT_CT_CLOSING;
		} else if (state == BLIXT_CT_NEW && ct->dir == BLIXT_CT_DIR_REPLY) {
			ct_mark_answered(ct, p);
			if (ack_only)
				state = BLIXT_CT_ESTABLISHED;
		} else if (state == BLIXT_CT_NEW && ack_only && (ct->flags & BLIXT_CT_F_SEEN_REPLY)) {
			state = BLIXT_CT_ESTABLISHED;
		}
	} else if (state == BLIXT_CT_NEW && ct->dir == BLIXT_CT_DIR_REPLY) {
		state = BLIXT_CT_ESTABLISHED;
	}
	/* writes dirty a shared cache line: only when something changed */
	if (state > ct->state)
		ct->state = state;
	if (now - ct->last_seen_ns > NSEC_PER_SEC) {
		ct->last_seen_ns = now;
		p->fib_refresh = 1;
	}
}

#endif
