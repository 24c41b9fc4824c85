// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Structs and constants shared by the BPF programs and the Rust loader (blixt-bpf/src/shared.rs).
 * This header is the single source of truth: the Rust mirror is #[repr(C)] with explicit padding,
 * and a test compares both layouts against the object's BTF.
 *
 * Addresses are 16 bytes for both families; an IPv4 address sits in the first 4 bytes and the
 * other 12 are zero. Ports are in network byte order everywhere.
 */
#ifndef BLIXT_SHARED_H
#define BLIXT_SHARED_H

#include <linux/types.h>

#define BLIXT_FAMILY_V4 4
#define BLIXT_FAMILY_V6 6

/* Slot value in a Maglev ring that rejects the flow (Gateway API invalid-backend share). */
#define BLIXT_SLOT_REJECT 0xffffffffu

/* blixt_frontend.flags */
#define BLIXT_FE_F_ALL_REJECT (1u << 0) /* no valid backend: reject every new flow */

/* blixt_backend.flags */
#define BLIXT_BE_F_ACTIVE (1u << 0)      /* the id is in use by the current snapshot */
#define BLIXT_BE_F_TERMINATING (1u << 1) /* keeps flows, gets none new (not in the ring) */

/* TCP-ish state of one direction of a tracked flow (blixt_ct_entry.state). */
#define BLIXT_CT_NEW 0
#define BLIXT_CT_ESTABLISHED 1
#define BLIXT_CT_CLOSING 2

/* blixt_ct_entry.dir */
#define BLIXT_CT_DIR_FORWARD 0 /* client -> VIP, rewritten to node -> backend */
#define BLIXT_CT_DIR_REPLY 1   /* backend -> node, rewritten to VIP -> client */

/* blixt_ct_entry.flags */
#define BLIXT_CT_F_SEEN_REPLY (1u << 0)

/* Indexes of the per-CPU global counters (blixt_stats map). */
enum blixt_stat {
	BLIXT_STAT_REJECT_NO_BACKEND = 0, /* frontend has no valid backend: RST / drop */
	BLIXT_STAT_REJECT_SHARE,          /* the invalid-backend share picked the flow */
	BLIXT_STAT_CT_INSERT_FAILED,      /* no conntrack entry could be made: stateless forward */
	BLIXT_STAT_CT_MISS_MIDSTREAM,     /* TCP non-SYN without state: state re-created */
	BLIXT_STAT_BACKEND_GONE,          /* the flow's backend was removed: RST / drop */
	BLIXT_STAT_FRAGMENT_DROP,         /* IP fragment addressed to a VIP */
	BLIXT_STAT_FIB_NO_NEIGH,          /* next hop unresolved: handed to TC redirect_neigh */
	BLIXT_STAT_FIB_DROP,              /* no route for the rewritten packet */
	BLIXT_STAT_ICMP_TRANSLATED,       /* ICMP error for a tracked flow, translated */
	BLIXT_STAT_ICMP_UNKNOWN,          /* ICMP error quoting no tracked flow: passed */
	BLIXT_STAT_NO_SNAT_ADDR,          /* no node address configured for the family */
	BLIXT_STAT_TX_ERROR,              /* adjust_tail / redirect failures */
	BLIXT_STAT_ARP_REPLY,             /* ARP requests for a VIP answered */
	BLIXT_STAT_NDP_REPLY,             /* neighbour solicitations for a VIP answered */
	BLIXT_STAT_SNAT_PORT_REUSED,      /* every probed source port taken: a closed or expired
					     flow's port was taken over */
	BLIXT_STAT_MALFORMED,             /* lengths that contradict each other, to a VIP: dropped */
	BLIXT_STAT_ICMP_MISDIRECTED,      /* ICMP error about a tracked flow not sent to the quoted
					     packet's source: passed untranslated */
	BLIXT_STAT_STRAY_RST,             /* TCP reset to a VIP without a flow: dropped */
	BLIXT_STAT_SNAT_EXHAUSTED,        /* no free source port towards the backend: refused */
	BLIXT_STAT_MAX,
};

struct blixt_frontend_key {
	__u8 addr[16];
	__u16 port; /* network order */
	__u8 proto; /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 family;
};

struct blixt_frontend {
	__u32 id;    /* index into blixt_frontend_stats */
	__u32 ring;  /* which ring of blixt_rings holds this frontend's Maglev table */
	__u32 flags; /* BLIXT_FE_F_* */
	__u32 pad;
};

struct blixt_backend {
	__u8 addr[16];
	__u16 port; /* network order */
	__u8 family;
	__u8 flags; /* BLIXT_BE_F_* */
	__u32 gen;  /* bumped whenever the id is released; flows remember it */
	__u32 frontend_id;
};

/* Conntrack key: the packet's 5-tuple as it arrives (both directions are keys). */
struct blixt_flow_key {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 family;
	__u8 pad[2];
};

/* What to rewrite a packet matching the key into, plus flow bookkeeping. */
struct blixt_ct_entry {
	__u8 nsrc[16];
	__u8 ndst[16];
	__u16 nsport; /* nsport and ndport adjacent, in header order */
	__u16 ndport;
	__u32 backend_id;
	__u32 backend_gen;
	__u32 frontend_id;
	__u8 state; /* BLIXT_CT_* */
	__u8 dir;   /* BLIXT_CT_DIR_* */
	__u8 flags; /* BLIXT_CT_F_* */
	__u8 pad0;
	__u32 pad1;
	__u64 last_seen_ns; /* bpf_ktime_get_coarse_ns(), refreshed at most once a second */
	__u64 created_ns;
	/* next hop cached from bpf_fib_lookup(), refreshed with last_seen; 0: look it up */
	__u32 fib_ifindex;
	__u8 fib_smac[6];
	__u8 fib_dmac[6];
};

/*
 * A next hop as bpf_fib_lookup() returned it. The same three fields end struct blixt_ct_entry
 * (fib_ifindex, fib_smac, fib_dmac, at an offset checked below), so either can be handed to
 * the code that fills or uses a cached hop.
 */
struct blixt_hop {
	__u32 fib_ifindex; /* 0: none cached */
	__u8 fib_smac[6];
	__u8 fib_dmac[6];
};
_Static_assert(__builtin_offsetof(struct blixt_ct_entry, fib_smac) ==
		       __builtin_offsetof(struct blixt_ct_entry, fib_ifindex) + 4 &&
		       __builtin_offsetof(struct blixt_ct_entry, fib_dmac) ==
		       __builtin_offsetof(struct blixt_ct_entry, fib_ifindex) + 10,
	       "the cached hop of a conntrack entry has struct blixt_hop's layout");


/* Global configuration, one entry, written by the agent. */
struct blixt_config {
	__u8 snat_v4[16]; /* node address used as source towards backends (IPv4) */
	__u8 snat_v6[16];
	__u16 port_min; /* SNAT source port range, host order, inclusive */
	__u16 port_max;
	__u32 flags;
	__u32 tcp_syn_timeout_s;
	__u32 tcp_established_timeout_s;
	__u32 tcp_closing_timeout_s;
	__u32 udp_timeout_s;
	__u32 ring_size; /* informational (the program uses its load-time constant): for readers */
};

/* Per-CPU counters, per frontend and per backend. */
struct blixt_counters {
	__u64 packets;
	__u64 bytes;
	__u64 new_flows;
	__u64 rejects;
};

/* Key of blixt_vips: a frontend address, any port. */
struct blixt_vip_key {
	__u8 addr[16];
	__u8 family;
	__u8 pad[3];
};

/* blixt_vips value flags */
#define BLIXT_VIP_F_ANNOUNCE (1u << 0) /* answer ARP / NDP for this address */

/* Per attached interface (blixt_ifaces, keyed by ifindex): what ARP/NDP answers carry. */
struct blixt_iface {
	__u8 mac[6];
	__u8 flags; /* BLIXT_IFACE_F_* */
	__u8 pad;
};

#define BLIXT_IFACE_F_ANNOUNCE (1u << 0) /* answer ARP / NDP for VIPs on this interface */

/* Metadata XDP leaves in front of a packet it passes up for TC to redirect (unresolved neighbour). */
#define BLIXT_META_MAGIC 0xb1c7a11du
struct blixt_xdp_meta {
	__u32 magic;
	__u32 ifindex;
};

#endif
