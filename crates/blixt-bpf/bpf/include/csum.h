// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * One's-complement checksum helpers (RFC 1071, incremental per RFC 1624). Values are summed in
 * host order as read from the packet: the one's-complement sum is byte-order independent as long
 * as words are read and the result stored the same way.
 */
#ifndef BLIXT_CSUM_H
#define BLIXT_CSUM_H

#include <linux/types.h>

static __always_inline __u32 csum_add(__u32 csum, __u32 addend)
{
	csum += addend;
	return csum + (csum < addend);
}

static __always_inline __u16 csum_fold(__u32 csum)
{
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	return (__u16)~csum;
}

/* Accumulates the change from replacing the 32-bit word `from` with `to`. */
static __always_inline __u32 csum_diff32(__u32 acc, __u32 from, __u32 to)
{
	return csum_add(csum_add(acc, ~from), to);
}

static __always_inline __u32 csum_diff16(__u32 acc, __u16 from, __u16 to)
{
	return csum_add(csum_add(acc, (__u16)~from), to);
}

/* Accumulates the change of a 16-byte address (only 4 bytes for IPv4). */
static __always_inline __u32 csum_diff_addr(__u32 acc, const __u8 *from, const __u8 *to, int v6)
{
	const __u32 *f = (const __u32 *)from;
	const __u32 *t = (const __u32 *)to;

	acc = csum_diff32(acc, f[0], t[0]);
	if (v6) {
		acc = csum_diff32(acc, f[1], t[1]);
		acc = csum_diff32(acc, f[2], t[2]);
		acc = csum_diff32(acc, f[3], t[3]);
	}
	return acc;
}

/* Applies an accumulated change to a stored checksum field. */
static __always_inline __u16 csum_apply(__u16 old, __u32 diff)
{
	return csum_fold(csum_add((__u16)~old, diff));
}

#endif
