// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Full NAT's source side: a new flow leaves the node from the node's own address (per family,
 * from blixt_config) and a source port of its own in [port_min, port_max], so that the
 * backend's replies come back here and their 5-tuple names the flow. A port is free when no
 * reply-direction entry holds backend:port -> node:port; claiming it is inserting the flow's
 * reply entry under that key (see docs/dataplane.md, "Full-NAT and source ports").
 */
#ifndef BLIXT_SNAT_H
#define BLIXT_SNAT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "blixt_shared.h"
#include "maps.h"
#include "conntrack.h"

/* Source ports probed for a free one before a new flow falls back to stateless forwarding. */
volatile const __u32 snat_tries = 16;

static __always_inline int addr_is_zero(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;
	return !(w[0] | w[1] | w[2] | w[3]);
}

/* The node's source address for this family; 0 (counted) when the agent has configured none. */
static __always_inline const __u8 *snat_addr(const struct blixt_config *cfg, __u8 family)
{
	const __u8 *snat = family == BLIXT_FAMILY_V6 ? cfg->snat_v6 : cfg->snat_v4;
	if (addr_is_zero(snat)) {
		stat_inc(BLIXT_STAT_NO_SNAT_ADDR);
		return 0;
	}
	return snat;
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
	ct_peer_key(okey, old, proto, family);
	if (entry_over(cfg, old, proto, now))
		return 1;
	struct blixt_ct_entry *fwd = bpf_map_lookup_elem(&blixt_conntrack, okey);
	if (fwd)
		return entry_over(cfg, fwd, proto, now);
	return old->last_seen_ns <= now && now - old->last_seen_ns > 2 * NSEC_PER_SEC;
}

/*
 * Allocates the source port of a new flow and tracks its reply direction: `rev` is inserted
 * into conntrack under `rkey` (the reply key, complete but for its destination port) with the
 * port chosen. Probing starts at a port derived from the flow's hash and backend, so that
 * the first try usually succeeds and is predictable (the fixtures recompute it). Returns 1 with
 * the port (network order) in `*port` when the reply entry is in, else 0: no port could be
 * had, and the flow is refused. `okey` is scratch (port_reusable()).
 */
static __always_inline int snat_port(const struct blixt_config *cfg, __u32 hash, __u32 be_id,
				     __u64 now, const struct blixt_ct_entry *rev,
				     struct blixt_flow_key *rkey, struct blixt_flow_key *okey,
				     __u16 *port)
{
	__u32 pmin = cfg->port_min;
	__u32 range = cfg->port_max >= cfg->port_min ? cfg->port_max - cfg->port_min + 1 : 1;
	__u32 start = ((hash * 0x9e3779b1u) ^ be_id) % range;
	__u32 spare = 0; /* 1 + offset of the first port whose flow is over (port_reusable) */

	for (__u32 i = 0; i < snat_tries && i < 64; i++) {
		__u32 off = start + i;
		if (off >= range)
			off %= range;
		*port = bpf_htons(pmin + off);
		rkey->dport = *port;
		/*
		 * The first port is tried by inserting at once (usually it is free: one map operation).
		 * Later ones are looked up first: an LRU insert takes a free element before it checks
		 * the key, so on a full table every failed insert would evict some other flow.
		 */
		struct blixt_ct_entry *old = 0;
		if (i > 0)
			old = bpf_map_lookup_elem(&blixt_conntrack, rkey);
		if (!old && bpf_map_update_elem(&blixt_conntrack, rkey, rev, BPF_NOEXIST) == 0)
			return 1;
		/* taken; by this very flow (state lost on our side, e.g. LRU eviction)? reuse it */
		if (!old)
			old = bpf_map_lookup_elem(&blixt_conntrack, rkey);
		if (old && old->nsport == rev->nsport && old->ndport == rev->ndport &&
		    same_addr(old->ndst, rev->ndst) && same_addr(old->nsrc, rev->nsrc)) {
			if (bpf_map_update_elem(&blixt_conntrack, rkey, rev, BPF_ANY) == 0)
				return 1;
			break;
		}
		if (!spare && old && port_reusable(cfg, old, rkey->proto, rkey->family, now, okey))
			spare = off + 1;
	}
	if (spare) {
		/*
		 * Every probed port is in use, some by a flow that is over (closed flows keep their
		 * entries until the sweeper or LRU eviction removes them, so a high rate of short
		 * connections would otherwise run out of ports): take that one over, and drop the old
		 * flow's client-side entry so that nothing of it is left pointing at this port.
		 */
		*port = bpf_htons(pmin + spare - 1);
		rkey->dport = *port;
		/* the old flow's client-side key: okey as port_reusable() left it for this port */
		struct blixt_ct_entry *old = bpf_map_lookup_elem(&blixt_conntrack, rkey);
		if (old && port_reusable(cfg, old, rkey->proto, rkey->family, now, okey) &&
		    bpf_map_update_elem(&blixt_conntrack, rkey, rev, BPF_ANY) == 0) {
			bpf_map_delete_elem(&blixt_conntrack, okey);
			stat_inc(BLIXT_STAT_SNAT_PORT_REUSED);
			return 1;
		}
	}
	*port = bpf_htons(pmin + start);
	return 0;
}

#endif
