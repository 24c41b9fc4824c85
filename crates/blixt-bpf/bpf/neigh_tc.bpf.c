// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * TC ingress companion of the XDP program. XDP can forward only to neighbours the kernel already
 * knows (bpf_fib_lookup returns NO_NEIGH otherwise) and has no way to queue a packet behind ARP or
 * NDP. For those packets blixt_lb leaves a blixt_xdp_meta in front of the (already rewritten)
 * frame and passes it up; here, before the IP stack sees it, bpf_redirect_neigh() sends it out of
 * the egress interface and resolves the next hop on the way. Once resolved, later packets of
 * the flow stay on the XDP fast path.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "include/blixt_shared.h"

SEC("classifier")
int blixt_neigh(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *meta = (void *)(long)skb->data_meta;
	struct blixt_xdp_meta *m = meta;

	if ((void *)(m + 1) > data || m->magic != BLIXT_META_MAGIC)
		return TC_ACT_OK;
	return bpf_redirect_neigh(m->ifindex, NULL, 0, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
