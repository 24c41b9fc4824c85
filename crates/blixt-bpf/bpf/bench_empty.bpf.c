/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Benchmark baseline: an XDP program that does nothing. BPF_PROG_TEST_RUN of it measures the
 * fixed cost of one run (per-call method: the syscall; hot loop: the kernel's repeat loop).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int bench_empty(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
