// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The checksum state of a packet at TC (skb->ip_summed), so that the TC path can update the L4
 * checksum in place as XDP does whenever the field holds the whole checksum, and keep the
 * kernel's bpf_l4_csum_replace() for the states whose bookkeeping only it knows:
 *   CHECKSUM_NONE, CHECKSUM_UNNECESSARY  the field holds the full checksum (packets from most
 *                                        NICs, from a sender without offload, from the test
 *                                        runner): updated in place, no helper call;
 *   CHECKSUM_PARTIAL                     the field holds only the pseudo-header sum (a local
 *                                        sender with TX offload, e.g. over veth);
 *   CHECKSUM_COMPLETE                    skb->csum, the NIC's sum of the packet, must follow.
 *
 * __sk_buff has no ip_summed; the kernel's struct sk_buff has, reached through the kfunc
 * bpf_cast_to_kern_ctx() (6.3+; the verifier inlines it to a register move) and read as a
 * CO-RE bitfield, so its place in the running kernel's layout is found at load.
 *
 * aya 0.14 does not link kfunc calls, so the call is written to a placeholder helper number the
 * loader rewrites before loading (blixt_bpf::kfunc): into the kfunc call where the kernel has
 * it; else into `r0 = 0` with have_kern_ctx cleared, and the verifier prunes the branch (a
 * frozen .rodata constant) so the helper path serves every packet.
 */
#ifndef BLIXT_SKB_CSUM_H
#define BLIXT_SKB_CSUM_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

/* Keep in step with blixt_bpf::kfunc::CAST_TO_KERN_CTX_PLACEHOLDER. */
#define BLIXT_CAST_TO_KERN_CTX_PLACEHOLDER 0x7b1c0001

struct sk_buff___blixt {
	__u8 ip_summed : 2;
} __attribute__((preserve_access_index));

static struct sk_buff___blixt *(*const blixt_cast_to_kern_ctx)(void *ctx) =
	(void *)BLIXT_CAST_TO_KERN_CTX_PLACEHOLDER;

/* May the TC path read skb->ip_summed? Set by the loader from the kernel's capabilities. */
volatile const __u8 have_kern_ctx = 0;

/* include/linux/skbuff.h */
#define SKB_CSUM_NONE 0
#define SKB_CSUM_UNNECESSARY 1
#define SKB_CSUM_COMPLETE 2
#define SKB_CSUM_PARTIAL 3
/* the state could not be read (kernel without bpf_cast_to_kern_ctx) */
#define SKB_CSUM_UNKNOWN 4

static __always_inline __u32 skb_csum_state(struct __sk_buff *skb)
{
	if (!have_kern_ctx)
		return SKB_CSUM_UNKNOWN;
	struct sk_buff___blixt *k = blixt_cast_to_kern_ctx(skb);
	return BPF_CORE_READ_BITFIELD(k, ip_summed);
}

/* Does the L4 checksum field hold the packet's full checksum, to be updated in place? */
static __always_inline int skb_csum_in_place(struct __sk_buff *skb)
{
	return skb_csum_state(skb) <= SKB_CSUM_UNNECESSARY;
}

#endif
