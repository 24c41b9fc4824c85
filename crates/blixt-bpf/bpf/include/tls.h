// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * TLS passthrough steering: shared between tls_sk_lookup.bpf.c and its Rust loader
 * (blixt-tls/src/steer.rs, which builds keys as [u32; 6] in the same order).
 */
#ifndef BLIXT_TLS_H
#define BLIXT_TLS_H

#include <linux/types.h>

/* Most TLS frontends (VIP:port pairs) one node serves; override with -DTLS_MAX_LISTENERS=N. */
#ifndef TLS_MAX_LISTENERS
#define TLS_MAX_LISTENERS 4096
#endif

/* Address families as in struct bpf_sk_lookup.family (the kernel's AF_*). */
#define TLS_AF_INET 2
#define TLS_AF_INET6 10

/*
 * Key of tls_listeners: which proxy socket serves packets to addr:port. Six u32, no padding.
 * port is in host byte order, as bpf_sk_lookup.local_port is; addr holds the address bytes in
 * network order (IPv4 in addr[0], the rest zero), as bpf_sk_lookup.local_ip4/local_ip6 are.
 */
struct tls_listener_key {
	__u32 family;
	__u32 port;
	__u32 addr[4];
};

/*
 * Key of tls_vips: an address delivered locally for TLS passthrough (family, address words as
 * in tls_listener_key). Five u32, no padding.
 */
struct tls_vip_key {
	__u32 family;
	__u32 addr[4];
};

/* Slots of the per-CPU tls_steer_stats array. */
enum tls_steer_stat {
	TLS_STAT_STEERED = 0,       /* connection assigned to a proxy socket */
	TLS_STAT_ASSIGN_FAILED = 1, /* socket found but bpf_sk_assign refused it */
	TLS_STAT_REFUSED = 2,       /* to a TLS VIP but no listener of it: refused */
	TLS_STAT_MAX = 3,
};

#endif /* BLIXT_TLS_H */
