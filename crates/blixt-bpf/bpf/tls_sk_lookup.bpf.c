// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * TLS passthrough steering: an sk_lookup program (kernel 5.9+) attached to the node's network
 * namespace. When the stack looks up the socket for a TCP packet to a local destination, this
 * program runs first; if the destination is a TLS frontend (VIP:port in tls_listeners) it
 * assigns the proxy's listening socket for that frontend, which then accepts the connection
 * with the VIP:port as its local address. The proxy never binds the VIP, and one socket can
 * serve an address:port no bind() could express (see docs/tls-passthrough.md).
 *
 * sk_lookup only runs for packets routed as local, so the VIP needs a route of type local
 * (`ip route add local VIP/32 dev lo`); the loader installs it. That route would also deliver
 * the VIP to every socket of the node bound to a wildcard address (sshd, the metrics port, a
 * DNS server): so a packet to a TLS VIP (tls_vips) that is not for one of its listeners is
 * refused here, whatever the protocol (TCP gets a reset, UDP a port unreachable), and counted.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#include "include/tls.h"

/* VIP:port -> the proxy's listening socket for that frontend. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, TLS_MAX_LISTENERS);
	__type(key, struct tls_listener_key);
	__type(value, __u32); /* a socket fd on update; 4 bytes, as aya's SockHash expects */
} tls_listeners SEC(".maps");

/* Addresses delivered locally for TLS passthrough: nothing but their listeners answers. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TLS_MAX_LISTENERS);
	__type(key, struct tls_vip_key);
	__type(value, __u32);
} tls_vips SEC(".maps");

/* Per-CPU counters, indexed by enum tls_steer_stat. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TLS_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} tls_steer_stats SEC(".maps");

static __always_inline void count(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&tls_steer_stats, &slot);

	if (v)
		*v += 1;
}

SEC("sk_lookup")
int tls_sk_lookup(struct bpf_sk_lookup *ctx)
{
	struct tls_listener_key key = {};
	struct bpf_sock *sk;
	long err;

	key.family = ctx->family;
	key.port = ctx->local_port;
	if (ctx->family == TLS_AF_INET) {
		key.addr[0] = ctx->local_ip4;
	} else if (ctx->family == TLS_AF_INET6) {
		key.addr[0] = ctx->local_ip6[0];
		key.addr[1] = ctx->local_ip6[1];
		key.addr[2] = ctx->local_ip6[2];
		key.addr[3] = ctx->local_ip6[3];
	} else {
		return SK_PASS;
	}

	sk = ctx->protocol == IPPROTO_TCP ? bpf_map_lookup_elem(&tls_listeners, &key) : 0;
	if (!sk) {
		struct tls_vip_key vk = {};
		vk.family = key.family;
		__builtin_memcpy(vk.addr, key.addr, sizeof(vk.addr));
		if (!bpf_map_lookup_elem(&tls_vips, &vk))
			return SK_PASS; /* not a TLS VIP: the regular lookup decides */
		/* a TLS VIP, but not one of its listeners: no socket of the node answers */
		count(TLS_STAT_REFUSED);
		return SK_DROP;
	}

	/*
	 * Flags 0: do not replace a socket an earlier program assigned. A failure (socket not
	 * listening any more, family mismatch) falls back to the regular lookup, which finds
	 * no socket for a VIP and answers with a reset.
	 */
	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	count(err ? TLS_STAT_ASSIGN_FAILED : TLS_STAT_STEERED);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
