// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Benchmark baseline: programs that do nothing, one per hook (XDP, TC classifier).
 * BPF_PROG_TEST_RUN of one measures the fixed cost of one run at that hook (per-call method:
 * the syscall and, at TC, building the skb; hot loop: the kernel's repeat loop).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int bench_empty(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("classifier")
int bench_empty_tc(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
