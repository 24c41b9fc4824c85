// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Hot-loop benchmark wrappers for BPF_PROG_TEST_RUN with a repeat count, at both hooks.
 *
 * The trap: with repeat = R the kernel runs the program R times on ONE packet and never resets
 * it (net/bpf/test_run.c: the xdp_buff, or the skb, is built once before the loop). After the
 * first full-NAT rewrite every later iteration would see a packet from the node to a backend,
 * i.e. non-VIP traffic, and the figure would measure pass-through.
 *
 * Each wrapper here therefore, on every iteration:
 *   1. restores the original packet: length (undoing a tail cut of a reset) and bytes, from the
 *      copy user space left in bench_state (XDP: bpf_xdp_adjust_tail + bpf_xdp_store_bytes;
 *      TC: bpf_skb_change_tail + bpf_skb_store_bytes);
 *   2. optionally stamps an iteration counter into the source port and the low 16 bits of the
 *      source address, so that every iteration is a flow never seen before (new-flow paths);
 *   3. runs the program under test, inlined: the load balancer (lb.bpf.c compiled into this
 *      object: blixt_lb at XDP, blixt_lb_tc at TC), the floor (bench_floor.bpf.c) or nothing;
 *   4. counts the verdict, so user space can check that every iteration took the path named.
 *
 * Steps 1, 2 and 4 are the same in the wrappers of one hook, so wrapped(X) - wrapped(empty) of
 * that hook is the cost of X alone, measured on the same packets in the same way; the XDP and
 * the TC figures are then comparable with each other.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/*
 * Compile the load balancer into this object as inlined static functions rather than as entry
 * points, without editing lb.bpf.c:
 *  - these declarations make `blixt_lb` and `blixt_lb_tc` internal: their definitions there
 *    carry no storage class, so they keep the linkage of these earlier declarations (C11
 *    6.2.2p5);
 *  - SEC() is redefined without `used` while that file is read, so once inlined the functions
 *    are dropped and nothing named blixt_lb lands in section "xdp" or "classifier" (the maps,
 *    globals and license are ordinary globals and stay).
 * blixt_lb_tc is the whole TC entry point (the pull of the headers into the linear part,
 * lb_main(skb, HOOK_TC), tc_verdict()), exactly as attached.
 */
static __always_inline int blixt_lb(struct xdp_md *ctx);
static __always_inline int blixt_lb_tc(struct __sk_buff *skb);
#pragma push_macro("SEC")
#undef SEC
#define SEC(name) __attribute__((section(name)))
#include "lb.bpf.c"
#pragma pop_macro("SEC")

#define BENCH_FLOOR_BODY_ONLY
#include "bench_floor.bpf.c"

/* Largest packet the wrappers restore; the benchmark's packets are well below it. */
#define BENCH_MAX_PKT 256

/* Mirrored in blixt-bench (src/wrap.rs); one element, written by user space before each run. */
struct bench_state {
	__u32 len;         /* bytes of the original packet in data[] */
	__u16 vary_lo_off; /* 0: run the same packet; else offset of a 16-bit field (source port)
			      that gets the iteration counter's low 16 bits */
	__u16 vary_hi_off; /* offset of a 16-bit field (end of the source address) that gets the
			      counter's high 16 bits; 0 = none */
	__u64 seq;         /* iteration counter, continues across runs */
	__u64 verdicts[8]; /* iterations per verdict & 7: XDP_ABORTED .. XDP_REDIRECT, or
			      TC_ACT_OK (0), TC_ACT_SHOT (2), TC_ACT_REDIRECT (7) */
	__u64 errors;      /* iterations whose packet could not be restored */
	__u8 data[BENCH_MAX_PKT];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct bench_state);
	__uint(max_entries, 1);
} bench_state SEC(".maps");

static __always_inline int put16(struct xdp_md *ctx, __u32 off, __u16 v)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *f = data + (off & 0xff);

	if ((void *)(f + 2) > data_end)
		return -1;
	*(__u16 *)f = bpf_htons(v);
	return 0;
}

/* Steps 1 and 2: the packet as user space gave it, with this iteration's flow stamped in. */
static __always_inline int bench_prepare(struct xdp_md *ctx, struct bench_state *st)
{
	__u32 len = st->len;
	if (len == 0 || len > BENCH_MAX_PKT)
		return -1;
	/* a metadata push (unresolved-neighbour path) is not undone: such a run is invalid */
	if ((void *)(long)ctx->data_meta < (void *)(long)ctx->data)
		return -1;
	int cur = (int)(ctx->data_end - ctx->data);
	if (cur != (int)len && bpf_xdp_adjust_tail(ctx, (int)len - cur))
		return -1;
	if (bpf_xdp_store_bytes(ctx, 0, st->data, len))
		return -1;
	if (st->vary_lo_off) {
		__u64 seq = st->seq++;
		if (put16(ctx, st->vary_lo_off, (__u16)seq))
			return -1;
		if (st->vary_hi_off && put16(ctx, st->vary_hi_off, (__u16)(seq >> 16)))
			return -1;
	}
	return 0;
}

static __always_inline int bench_empty_body(struct xdp_md *ctx)
{
	return XDP_PASS;
}

#define BENCH_WRAPPER(name, body)                                                       \
	SEC("xdp")                                                                      \
	int name(struct xdp_md *ctx)                                                    \
	{                                                                               \
		__u32 zero = 0;                                                         \
		struct bench_state *st = bpf_map_lookup_elem(&bench_state, &zero);     \
		if (!st)                                                                \
			return XDP_ABORTED;                                             \
		if (bench_prepare(ctx, st)) {                                           \
			st->errors += 1;                                                \
			return XDP_ABORTED;                                             \
		}                                                                       \
		int v = body(ctx);                                                      \
		st->verdicts[v & 7] += 1;                                               \
		return v;                                                               \
	}

BENCH_WRAPPER(bench_wrap_lb, blixt_lb)
BENCH_WRAPPER(bench_wrap_floor, bench_floor_body)
BENCH_WRAPPER(bench_wrap_empty, bench_empty_body)

/* TC: the same steps on an skb. */

static __always_inline int put16_tc(struct __sk_buff *skb, __u32 off, __u16 v)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u8 *f = data + (off & 0xff);

	if ((void *)(f + 2) > data_end)
		return -1;
	*(__u16 *)f = bpf_htons(v);
	return 0;
}

/* Steps 1 and 2 on an skb (the test run's skb is linear, so direct access reaches the flow). */
static __always_inline int bench_prepare_tc(struct __sk_buff *skb, struct bench_state *st)
{
	__u32 len = st->len;
	if (len == 0 || len > BENCH_MAX_PKT)
		return -1;
	if (skb->len != len && bpf_skb_change_tail(skb, len, 0))
		return -1;
	if (bpf_skb_store_bytes(skb, 0, st->data, len, 0))
		return -1;
	if (st->vary_lo_off) {
		__u64 seq = st->seq++;
		if (put16_tc(skb, st->vary_lo_off, (__u16)seq))
			return -1;
		if (st->vary_hi_off && put16_tc(skb, st->vary_hi_off, (__u16)(seq >> 16)))
			return -1;
	}
	return 0;
}

static __always_inline int bench_empty_tc_body(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

#define BENCH_WRAPPER_TC(name, body)                                                    \
	SEC("classifier")                                                               \
	int name(struct __sk_buff *skb)                                                 \
	{                                                                               \
		__u32 zero = 0;                                                         \
		struct bench_state *st = bpf_map_lookup_elem(&bench_state, &zero);     \
		if (!st)                                                                \
			return TC_ACT_SHOT;                                             \
		if (bench_prepare_tc(skb, st)) {                                        \
			st->errors += 1;                                                \
			return TC_ACT_SHOT;                                             \
		}                                                                       \
		int v = body(skb);                                                      \
		st->verdicts[v & 7] += 1;                                               \
		return v;                                                               \
	}

BENCH_WRAPPER_TC(bench_wrap_tc_lb, blixt_lb_tc)
BENCH_WRAPPER_TC(bench_wrap_tc_empty, bench_empty_tc_body)
