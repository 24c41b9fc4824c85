// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Maps of the load-balancer program. Sizes are defaults; the loader overrides max_entries. */
#ifndef BLIXT_MAPS_H
#define BLIXT_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "blixt_shared.h"

#define BLIXT_DEFAULT_MAX_FRONTENDS 256
#define BLIXT_DEFAULT_MAX_BACKENDS 16384
#define BLIXT_DEFAULT_RING_SIZE 16381
/* Two rings per frontend: the new table is written beside the live one, then flipped. */
#define BLIXT_DEFAULT_RINGS (2 * BLIXT_DEFAULT_MAX_FRONTENDS)
#define BLIXT_DEFAULT_CT_ENTRIES 262144

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct blixt_frontend_key);
	__type(value, struct blixt_frontend);
	__uint(max_entries, BLIXT_DEFAULT_MAX_FRONTENDS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} blixt_frontends SEC(".maps");

/*
 * rings * ring_size slots of 32 bits (backend id or BLIXT_SLOT_REJECT), two per element: the
 * kernel rounds array elements up to 8 bytes, and the agent writes the array through mmap as a
 * flat u32 array, so slot n is 32-bit word n&1 of element n/2 (in memory order).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, BLIXT_DEFAULT_RINGS * BLIXT_DEFAULT_RING_SIZE / 2 + 1);
	__uint(map_flags, BPF_F_MMAPABLE); /* the agent writes whole rings through mmap */
} blixt_rings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct blixt_backend);
	__uint(max_entries, BLIXT_DEFAULT_MAX_BACKENDS);
} blixt_backends SEC(".maps");

/*
 * The next hop towards each backend, per CPU: a new flow takes it from here instead of calling
 * bpf_fib_lookup() (about a tenth of a new flow's cost). Refreshed like a conntrack entry's
 * cached hop, at most a second old, and only for the backend generation it was looked up for.
 * Per CPU so that the refreshes of busy backends never bounce a cache line between CPUs. Not
 * pinned: a restart starts with an empty cache.
 */
struct blixt_nexthop {
	struct blixt_hop hop;
	__u32 backend_gen;
	__u32 pad;
	__u64 looked_up_ns; /* bpf_ktime_get_coarse_ns() of the lookup */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct blixt_nexthop);
	__uint(max_entries, BLIXT_DEFAULT_MAX_BACKENDS);
} blixt_nexthops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct blixt_flow_key);
	__type(value, struct blixt_ct_entry);
	__uint(max_entries, BLIXT_DEFAULT_CT_ENTRIES);
} blixt_conntrack SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct blixt_config);
	__uint(max_entries, 1);
} blixt_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct blixt_counters);
	__uint(max_entries, BLIXT_DEFAULT_MAX_FRONTENDS);
} blixt_frontend_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct blixt_counters);
	__uint(max_entries, BLIXT_DEFAULT_MAX_BACKENDS);
} blixt_backend_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, BLIXT_STAT_MAX);
} blixt_stats SEC(".maps");

/* Addresses of frontends (any port): fragment policy and ARP/NDP answers. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct blixt_vip_key);
	__type(value, __u32); /* BLIXT_VIP_F_* */
	__uint(max_entries, BLIXT_DEFAULT_MAX_FRONTENDS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} blixt_vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* ifindex */
	__type(value, struct blixt_iface);
	__uint(max_entries, 64);
} blixt_ifaces SEC(".maps");

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&blixt_stats, &idx);
	if (v)
		*v += 1;
}

/* Counts a packet of `bytes` in entry `id` of a per-frontend or per-backend counters map. */
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

#endif
