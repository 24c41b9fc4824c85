// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * One load balancer, two hooks. The logic in lb.bpf.c is written once against `void *ctx` and a
 * `const int hook` that every entry point passes as a literal (HOOK_XDP from the XDP program,
 * HOOK_TC from the TC classifier). Everything is inlined, so clang folds each `hook == ...` test
 * and each program keeps only its own context accesses and helpers: the verifier never sees an
 * XDP helper in the classifier or an skb field in the XDP program.
 *
 * Verdicts inside the logic are XDP's (XDP_PASS, XDP_DROP, XDP_TX, or what bpf_redirect*()
 * returned); the TC entry point translates them (tc_verdict()).
 */
#ifndef BLIXT_HOOK_H
#define BLIXT_HOOK_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#define HOOK_XDP 0
#define HOOK_TC 1

/* How many bytes the TC entry makes linear before parsing: every header the parser reads,
 * ICMP quotes included, lies within them (L2 18 + IPv6 40 + 4 extension headers + ICMP 8 +
 * quoted IPv6 40 + 8). */
#define TC_LINEAR_BYTES 256

static __always_inline void *ctx_data(void *ctx, const int hook)
{
	if (hook == HOOK_TC)
		return (void *)(long)((struct __sk_buff *)ctx)->data;
	return (void *)(long)((struct xdp_md *)ctx)->data;
}

static __always_inline void *ctx_data_end(void *ctx, const int hook)
{
	if (hook == HOOK_TC)
		return (void *)(long)((struct __sk_buff *)ctx)->data_end;
	return (void *)(long)((struct xdp_md *)ctx)->data_end;
}

/* Bytes of the whole frame: for an skb that is more than the linear part data..data_end. */
static __always_inline __u32 ctx_len(void *ctx, const int hook)
{
	if (hook == HOOK_TC)
		return ((struct __sk_buff *)ctx)->len;
	__u64 len = (long)ctx_data_end(ctx, hook) - (long)ctx_data(ctx, hook);
	/* a scalar from here on: else clang may fold `x - (end - data)` into 32-bit arithmetic on
	 * the packet pointers, which the verifier refuses */
	asm volatile("" : "+r"(len));
	return len;
}

/* The interface the frame arrived on (TC ingress: the device the skb is on). */
static __always_inline __u32 ctx_ifindex(void *ctx, const int hook)
{
	if (hook == HOOK_TC)
		return ((struct __sk_buff *)ctx)->ifindex;
	return ((struct xdp_md *)ctx)->ingress_ifindex;
}

/* Cuts (or grows) the frame to `len` bytes; the packet pointers must be re-read after. */
static __always_inline int ctx_set_len(void *ctx, const int hook, __u32 len)
{
	if (hook == HOOK_TC)
		return bpf_skb_change_tail(ctx, len, 0);
	return bpf_xdp_adjust_tail(ctx, (int)len - (int)ctx_len(ctx, hook));
}

/* Sends the frame out of interface `ifindex`. */
static __always_inline int ctx_redirect(void *ctx, const int hook, __u32 ifindex)
{
	if (ifindex == ctx_ifindex(ctx, hook))
		return XDP_TX; /* TC: tc_verdict() redirects to the same device */
	return bpf_redirect(ifindex, 0);
}

/* The TC verdict for what the shared logic returned. */
static __always_inline int tc_verdict(struct __sk_buff *skb, int v)
{
	switch (v) {
	case XDP_PASS:
		return TC_ACT_OK;
	case XDP_TX:
		return bpf_redirect(skb->ifindex, 0);
	case TC_ACT_REDIRECT:
		return TC_ACT_REDIRECT; /* bpf_redirect() / bpf_redirect_neigh() */
	default:
		return TC_ACT_SHOT;
	}
}

#endif
