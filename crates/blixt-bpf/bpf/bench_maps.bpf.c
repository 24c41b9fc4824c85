// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * What the conntrack map itself costs: the map operations a new flow makes, alone, on maps of
 * the dataplane's own key, value and size (blixt_flow_key -> blixt_ct_entry, max_entries set by
 * the harness to the conntrack's), so suite 1 can say how much of a new flow is the map.
 *
 * Every iteration of a BPF_PROG_TEST_RUN repeat loop makes a key never seen before from a
 * global counter (source port and the end of the source address, like the new-flow wrapper),
 * so a run of R iterations on an empty map measures R misses or R fresh inserts.
 *   bench_maps_empty          the loop alone (counter and key building, no map operation)
 *   bench_maps_lru_miss       one lookup that misses in the LRU hash (the conntrack's type)
 *   bench_maps_lru_insert     one insert of a new key into it (BPF_NOEXIST)
 *   bench_maps_lru_new_flow   what a new flow does: a miss, then two inserts (both directions)
 *   bench_maps_hash_insert    one insert into a preallocated plain hash of the same size, for
 *                             comparison (a design without LRU eviction)
 *   bench_maps_lru_cpu_new_flow  a new flow's map work on an LRU hash with per-CPU LRU lists
 *                             (BPF_F_NO_COMMON_LRU), for comparison
 *   bench_maps_lru_small_new_flow  the same map work on an LRU hash whose value is 16 bytes
 *                             (a backend and a timestamp, Katran's conntrack value) instead of
 *                             the 88 of a full-NAT entry: what smaller entries would save
 * The *_insert programs of the last two maps fill them before a run on a used map.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "include/blixt_shared.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct blixt_flow_key);
	__type(value, struct blixt_ct_entry);
	__uint(max_entries, 262144);
} bench_lru SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct blixt_flow_key);
	__type(value, struct blixt_ct_entry);
	__uint(max_entries, 262144);
} bench_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct blixt_flow_key);
	__type(value, struct blixt_ct_entry);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
} bench_lru_cpu SEC(".maps");

/* Katran's conntrack value: the backend's position and when the flow was last seen. */
struct bench_small_value {
	__u32 backend_id;
	__u32 pad;
	__u64 last_seen_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct blixt_flow_key);
	__type(value, struct bench_small_value);
	__uint(max_entries, 262144);
} bench_lru_small SEC(".maps");

/* The value inserted: a conntrack entry's worth of bytes, from per-CPU scratch like new_flow(). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct blixt_ct_entry);
	__uint(max_entries, 1);
} bench_value SEC(".maps");

__u64 bench_seq;

static __always_inline void next_key(struct blixt_flow_key *k)
{
	__u64 n = bench_seq++;

	__builtin_memset(k, 0, sizeof(*k));
	k->src[0] = 10;
	k->src[14] = n >> 24;
	k->src[15] = n >> 16;
	k->sport = n;
	k->dst[0] = 10;
	k->dst[3] = 100;
	k->dport = 80;
	k->proto = 6;
	k->family = BLIXT_FAMILY_V4;
}

SEC("xdp")
int bench_maps_empty(struct xdp_md *ctx)
{
	struct blixt_flow_key k;

	next_key(&k);
	return k.proto == 6 ? XDP_DROP : XDP_PASS;
}

SEC("xdp")
int bench_maps_lru_miss(struct xdp_md *ctx)
{
	struct blixt_flow_key k;

	next_key(&k);
	return bpf_map_lookup_elem(&bench_lru, &k) ? XDP_PASS : XDP_DROP;
}

static __always_inline int insert(void *map, int pair)
{
	struct blixt_flow_key k;
	__u32 zero = 0;
	/* the small map's value is the first 16 bytes of this one */
	struct blixt_ct_entry *v = bpf_map_lookup_elem(&bench_value, &zero);

	if (!v)
		return XDP_ABORTED;
	next_key(&k);
	if (pair && bpf_map_lookup_elem(map, &k))
		return XDP_PASS;
	if (bpf_map_update_elem(map, &k, v, BPF_NOEXIST))
		return XDP_PASS;
	if (pair) {
		/* the reply direction's key: backend -> node */
		k.dst[0] = 11;
		if (bpf_map_update_elem(map, &k, v, BPF_NOEXIST))
			return XDP_PASS;
	}
	return XDP_DROP;
}

SEC("xdp")
int bench_maps_lru_insert(struct xdp_md *ctx)
{
	return insert(&bench_lru, 0);
}

SEC("xdp")
int bench_maps_lru_new_flow(struct xdp_md *ctx)
{
	return insert(&bench_lru, 1);
}

SEC("xdp")
int bench_maps_hash_insert(struct xdp_md *ctx)
{
	return insert(&bench_hash, 0);
}

SEC("xdp")
int bench_maps_lru_cpu_new_flow(struct xdp_md *ctx)
{
	return insert(&bench_lru_cpu, 1);
}

SEC("xdp")
int bench_maps_lru_cpu_insert(struct xdp_md *ctx)
{
	return insert(&bench_lru_cpu, 0);
}

SEC("xdp")
int bench_maps_lru_small_new_flow(struct xdp_md *ctx)
{
	return insert(&bench_lru_small, 1);
}

SEC("xdp")
int bench_maps_lru_small_insert(struct xdp_md *ctx)
{
	return insert(&bench_lru_small, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
