//! Weighted Maglev lookup tables.
//!
//! The XDP program picks a backend for a new flow as `table[flow_hash % table.len()]`; every
//! node must hold the identical table for a frontend, so that a flow lands on the same backend
//! whichever node it reaches. This module builds that table from a [`Frontend`].
//!
//! # Algorithm
//!
//! Maglev (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load Balancer",
//! NSDI 2016, §3.4). Each participant `i` has a permutation of the `M` slots (`M` prime):
//! `perm_i(j) = (offset_i + j * skip_i) mod M` with `offset_i in [0, M)` and
//! `skip_i in [1, M)`. Participants take turns; on its turn a participant claims the next slot
//! of its permutation that is still free (a per-participant cursor, so the whole build is
//! `O(M log N)` plus the usual `O(M log M)` expected cursor steps, never `O(M * N)` rescans).
//!
//! The participants are the eligible backends ([`Frontend::eligible_backends`]) plus, when
//! `reject_weight > 0`, a pseudo-backend "reject" with that weight: the weight share of invalid
//! backendRefs must be rejected (Gateway API), and letting "reject" compete for slots like a
//! backend gives it exactly its share and the same minimal-disruption behaviour as a backend
//! when invalid refs come and go.
//!
//! # Weights
//!
//! Turns are handed out by weighted credit, as in Katran's `MaglevHashV2`: in every round each
//! participant gains `weight` credit and takes one turn when its credit reaches the largest
//! weight (`max_w`), paying `max_w`. Participant `i` therefore takes its `k`-th turn in round
//! `ceil(k * max_w / w_i)`, ties broken by canonical order. Rather than looping over rounds
//! (`O(rounds * N)`, and `rounds ~ M` when one weight dwarfs the others) a min-heap keyed by
//! `(round of next turn, canonical index)` replays the same sequence in `O(M log N)`.
//!
//! Why this rather than quota-then-round-robin: credit interleaves turns in proportion to
//! weight throughout the fill, so every participant's slots are the head of its own
//! permutation whatever the others weigh; a weight change or a removal moves only the slots at
//! the tail of the affected prefixes. With equal weights it is exactly classic Maglev, with its
//! published disruption bounds. Each participant ends within about one turn of
//! `M * w_i / sum(w)` slots (a participant whose share is below one slot may get none).
//!
//! # Determinism
//!
//! Participants are sorted by a canonical byte key (address family tag, 16 address bytes, port,
//! reject last) and each one's offset and skip come from SipHash-2-4, implemented here with fixed
//! keys over that same 19-byte encoding. Neither the caller's order nor the machine, the Rust
//! version or a process seed changes the table (std's `DefaultHasher` promises none of this).
//! A golden test pins the output.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::IpAddr;

use crate::snapshot::{BackendAddr, BackendState, Frontend, FrontendKey};

/// Default table size: prime, and about 160 slots per backend at 100 backends (the Maglev
/// paper's disruption figures assume `M` well above `100 * N`; use a larger prime such as 65537
/// for frontends with many backends).
pub const DEFAULT_TABLE_SIZE: u32 = 16381;

/// Smallest table size accepted.
pub const MIN_TABLE_SIZE: u32 = 7;

/// What one table slot sends a new flow to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// Index into `frontend.backends`, in the caller's order.
    Backend(u32),
    /// Reject the flow (TCP RST, UDP drop).
    Reject,
}

/// A table that cannot be built, naming the frontend and the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    #[error("frontend {name:?} ({key}): table size {size} is not prime")]
    NotPrime {
        name: String,
        key: FrontendKey,
        size: u32,
    },
    #[error("frontend {name:?} ({key}): table size {size} is below the minimum {MIN_TABLE_SIZE}")]
    TooSmall {
        name: String,
        key: FrontendKey,
        size: u32,
    },
    #[error(
        "frontend {name:?} ({key}): table size {size} must exceed the number of participants \
         ({participants}: eligible backends plus reject)"
    )]
    TooManyParticipants {
        name: String,
        key: FrontendKey,
        size: u32,
        participants: usize,
    },
    #[error("frontend {name:?} ({key}): backends[{index}] {addr} is listed twice")]
    DuplicateBackend {
        name: String,
        key: FrontendKey,
        index: usize,
        addr: BackendAddr,
    },
}

/// Whether `n` is prime (deterministic trial division; at most ~11k steps for any `u32`).
pub fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    let n = u64::from(n);
    let mut i = 5u64;
    while i * i <= n {
        if n.is_multiple_of(i) || n.is_multiple_of(i + 2) {
            return false;
        }
        i += 6;
    }
    true
}

/// Builds the weighted Maglev table of `frontend` with `size` slots.
///
/// `size` must be prime, at least [`MIN_TABLE_SIZE`] and greater than the number of
/// participants (eligible backends, plus reject when `reject_weight > 0`). Weight-0 and
/// terminating backends never appear. With no participant at all every slot is
/// [`Slot::Reject`]: a frontend without a valid backend rejects everything.
pub fn build(frontend: &Frontend, size: u32) -> Result<Vec<Slot>, MaglevError> {
    let name = || frontend.name.clone();
    if size < MIN_TABLE_SIZE {
        return Err(MaglevError::TooSmall {
            name: name(),
            key: frontend.key,
            size,
        });
    }
    if !is_prime(size) {
        return Err(MaglevError::NotPrime {
            name: name(),
            key: frontend.key,
            size,
        });
    }

    let mut parts: Vec<Participant> = frontend
        .backends
        .iter()
        .enumerate()
        .filter(|(_, b)| b.state == BackendState::Active && b.weight > 0)
        .map(|(i, b)| Participant::new(Slot::Backend(i as u32), encode(&b.addr), b.weight, size))
        .collect();
    debug_assert_eq!(parts.len(), frontend.eligible_backends().count());
    if frontend.reject_weight > 0 {
        parts.push(Participant::new(
            Slot::Reject,
            REJECT_KEY,
            frontend.reject_weight,
            size,
        ));
    }
    parts.sort_by_key(|p| p.key);
    if let Some(w) = parts.windows(2).find(|w| w[0].key == w[1].key) {
        let (Slot::Backend(a), Slot::Backend(b)) = (w[0].slot, w[1].slot) else {
            unreachable!("only backends share a key; reject's tag is unique");
        };
        let index = a.max(b) as usize;
        return Err(MaglevError::DuplicateBackend {
            name: name(),
            key: frontend.key,
            index,
            addr: frontend.backends[index].addr,
        });
    }
    if parts.len() >= size as usize {
        return Err(MaglevError::TooManyParticipants {
            name: name(),
            key: frontend.key,
            size,
            participants: parts.len(),
        });
    }
    if parts.is_empty() {
        return Ok(vec![Slot::Reject; size as usize]);
    }

    Ok(populate(&mut parts, size))
}

/// Counts slots per backend index and reject slots, for metrics and `blixt inspect`.
///
/// The vector has `n_backends` entries, more if the table names a higher index.
pub fn shares(table: &[Slot], n_backends: usize) -> (Vec<u32>, u32) {
    let mut per_backend = vec![0u32; n_backends];
    let mut reject = 0u32;
    for slot in table {
        match *slot {
            Slot::Backend(i) => {
                let i = i as usize;
                if i >= per_backend.len() {
                    per_backend.resize(i + 1, 0);
                }
                per_backend[i] += 1;
            }
            Slot::Reject => reject += 1,
        }
    }
    (per_backend, reject)
}

/// Length of the canonical encoding: family tag, 16 address bytes (IPv4 in the first 4, the
/// rest zero), port big-endian.
const KEY_LEN: usize = 19;

/// The reject pseudo-backend: a tag no address family uses, so it sorts last and hashes apart.
const REJECT_KEY: [u8; KEY_LEN] = {
    let mut k = [0u8; KEY_LEN];
    k[0] = 0xff;
    k
};

fn encode(addr: &BackendAddr) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    match addr.addr {
        IpAddr::V4(a) => {
            k[0] = 4;
            k[1..5].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            k[0] = 6;
            k[1..17].copy_from_slice(&a.octets());
        }
    }
    k[17..19].copy_from_slice(&addr.port.to_be_bytes());
    k
}

/// Fixed SipHash keys for the offset and the skip. Changing them reshuffles every table on
/// every node, so they are part of the dataplane's compatibility contract.
const OFFSET_KEY: (u64, u64) = (
    u64::from_le_bytes(*b"blixt/ma"),
    u64::from_le_bytes(*b"glev/off"),
);
const SKIP_KEY: (u64, u64) = (
    u64::from_le_bytes(*b"blixt/ma"),
    u64::from_le_bytes(*b"glev/skp"),
);

#[derive(Debug)]
struct Participant {
    slot: Slot,
    key: [u8; KEY_LEN],
    weight: u64,
    /// Next permutation position to try (starts at the offset).
    cursor: u64,
    skip: u64,
    /// Turns taken so far.
    turns: u64,
}

impl Participant {
    fn new(slot: Slot, key: [u8; KEY_LEN], weight: u32, size: u32) -> Self {
        let m = u64::from(size);
        Participant {
            slot,
            key,
            weight: u64::from(weight),
            cursor: siphash24(OFFSET_KEY, &key) % m,
            skip: siphash24(SKIP_KEY, &key) % (m - 1) + 1,
            turns: 0,
        }
    }

    /// Credit round in which this participant takes its next turn: the smallest `r` with
    /// `r * weight >= (turns + 1) * max_weight`. No overflow: `turns < 2^32`, `max_weight < 2^32`.
    fn next_round(&self, max_weight: u64) -> u64 {
        ((self.turns + 1) * max_weight).div_ceil(self.weight)
    }
}

/// Fills the table; `parts` is non-empty, canonically sorted and shorter than `size`.
fn populate(parts: &mut [Participant], size: u32) -> Vec<Slot> {
    const FREE: u32 = u32::MAX;
    let m = u64::from(size);
    let max_weight = parts.iter().map(|p| p.weight).max().unwrap_or(1);
    let mut owner = vec![FREE; size as usize];
    let mut turns: BinaryHeap<Reverse<(u64, u32)>> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| Reverse((p.next_round(max_weight), i as u32)))
        .collect();

    for _ in 0..size {
        let Some(Reverse((_, i))) = turns.pop() else {
            unreachable!("every participant is pushed back after its turn");
        };
        let p = &mut parts[i as usize];
        // `skip` is in [1, M) and M is prime, so the permutation visits every slot and a free
        // one is found while the table is not full.
        loop {
            let s = p.cursor as usize;
            p.cursor = (p.cursor + p.skip) % m;
            if owner[s] == FREE {
                owner[s] = i;
                break;
            }
        }
        p.turns += 1;
        turns.push(Reverse((p.next_round(max_weight), i)));
    }

    owner.into_iter().map(|i| parts[i as usize].slot).collect()
}

/// SipHash-2-4 (Aumasson & Bernstein, 2012) with a 128-bit key `(k0, k1)`. Written out here
/// because the table must be identical on every node and every build.
fn siphash24((k0, k1): (u64, u64), msg: &[u8]) -> u64 {
    #[inline]
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    fn compress(v: &mut [u64; 4], m: u64) {
        v[3] ^= m;
        round(v);
        round(v);
        v[0] ^= m;
    }
    let mut chunks = msg.chunks_exact(8);
    for c in chunks.by_ref() {
        let m = u64::from_le_bytes(c.try_into().expect("chunk of 8"));
        compress(&mut v, m);
    }
    let mut last = [0u8; 8];
    let tail = chunks.remainder();
    last[..tail.len()].copy_from_slice(tail);
    last[7] = msg.len() as u8;
    compress(&mut v, u64::from_le_bytes(last));
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;
    use crate::snapshot::{Backend, Protocol};

    fn frontend(backends: Vec<Backend>, reject_weight: u32) -> Frontend {
        Frontend {
            name: "default/gw/tcp-80".into(),
            key: FrontendKey {
                vip: "10.0.0.1".parse().unwrap(),
                port: 80,
                protocol: Protocol::Tcp,
            },
            backends,
            reject_weight,
        }
    }

    fn be(addr: &str, port: u16, weight: u32) -> Backend {
        Backend {
            addr: BackendAddr {
                addr: addr.parse().unwrap(),
                port,
            },
            weight,
            state: BackendState::Active,
        }
    }

    /// `n` distinct IPv4 backends of equal weight.
    fn equal_backends(n: usize) -> Vec<Backend> {
        (0..n)
            .map(|i| be(&format!("10.1.{}.{}", i / 250, i % 250 + 1), 8080, 1))
            .collect()
    }

    /// Slot identity independent of the caller's order: the backend's address, or `None` for
    /// reject.
    fn identities(fe: &Frontend, table: &[Slot]) -> Vec<Option<BackendAddr>> {
        table
            .iter()
            .map(|s| match *s {
                Slot::Backend(i) => Some(fe.backends[i as usize].addr),
                Slot::Reject => None,
            })
            .collect()
    }

    /// Largest absolute difference between a participant's share of the table and its weight
    /// share; also checks that ineligible backends own no slot.
    fn max_share_deviation(fe: &Frontend, table: &[Slot]) -> f64 {
        let (per, reject) = shares(table, fe.backends.len());
        let m = table.len() as f64;
        let total: u64 = fe
            .eligible_backends()
            .map(|b| u64::from(b.weight))
            .sum::<u64>()
            + u64::from(fe.reject_weight);
        if fe.eligible_backends().next().is_none() {
            assert_eq!(
                reject as usize,
                table.len(),
                "no eligible backend rejects all"
            );
            return 0.0;
        }
        let mut worst = (f64::from(reject) / m - fe.reject_weight as f64 / total as f64).abs();
        for (i, b) in fe.backends.iter().enumerate() {
            let eligible = b.state == BackendState::Active && b.weight > 0;
            if !eligible {
                assert_eq!(per[i], 0, "ineligible backends[{i}] {b:?} got slots");
                continue;
            }
            let dev = (f64::from(per[i]) / m - f64::from(b.weight) / total as f64).abs();
            worst = worst.max(dev);
        }
        worst
    }

    fn disruption(before: &[Option<BackendAddr>], after: &[Option<BackendAddr>]) -> f64 {
        let changed = before.iter().zip(after).filter(|(a, b)| a != b).count();
        changed as f64 / before.len() as f64
    }

    fn arb_addr() -> impl Strategy<Value = BackendAddr> {
        prop_oneof![
            4 => (any::<u32>(), 1..=u16::MAX).prop_map(|(a, port)| BackendAddr {
                addr: IpAddr::V4(Ipv4Addr::from(a)),
                port,
            }),
            1 => (any::<u128>(), 1..=u16::MAX).prop_map(|(a, port)| BackendAddr {
                addr: IpAddr::V6(Ipv6Addr::from(a)),
                port,
            }),
        ]
    }

    fn arb_addrs(n: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<BackendAddr>> {
        prop::collection::btree_set(arb_addr(), n).prop_map(|s| s.into_iter().collect())
    }

    /// Backends with weights 1..=100, some weight 0, some terminating.
    fn arb_backends() -> impl Strategy<Value = Vec<Backend>> {
        arb_addrs(1..=50).prop_flat_map(|addrs| {
            let n = addrs.len();
            let weight = prop_oneof![8 => 1..=100u32, 1 => Just(0u32)];
            let state = prop_oneof![
                6 => Just(BackendState::Active),
                1 => Just(BackendState::Terminating),
            ];
            prop::collection::vec((weight, state), n).prop_map(move |ws| {
                addrs
                    .iter()
                    .zip(ws)
                    .map(|(&addr, (weight, state))| Backend {
                        addr,
                        weight,
                        state,
                    })
                    .collect()
            })
        })
    }

    fn arb_reject_weight() -> impl Strategy<Value = u32> {
        prop_oneof![2 => Just(0u32), 1 => 1..=200u32]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn shares_follow_weights(backends in arb_backends(), reject in arb_reject_weight()) {
            let fe = frontend(backends, reject);
            let table = build(&fe, DEFAULT_TABLE_SIZE).unwrap();
            prop_assert_eq!(table.len(), DEFAULT_TABLE_SIZE as usize);
            let dev = max_share_deviation(&fe, &table);
            prop_assert!(dev <= 0.01, "share deviation {dev} for {fe:?}");
        }

        #[test]
        fn removing_one_backend_moves_few_slots(
            addrs in arb_addrs(2..=100),
            pick in any::<prop::sample::Index>(),
        ) {
            let n = addrs.len();
            let all: Vec<Backend> = addrs
                .iter()
                .map(|&addr| Backend { addr, weight: 1, state: BackendState::Active })
                .collect();
            let before_fe = frontend(all.clone(), 0);
            let mut rest = all;
            rest.remove(pick.index(n));
            let after_fe = frontend(rest, 0);
            let before = identities(&before_fe, &build(&before_fe, DEFAULT_TABLE_SIZE).unwrap());
            let after = identities(&after_fe, &build(&after_fe, DEFAULT_TABLE_SIZE).unwrap());
            let d = disruption(&before, &after);
            // Maglev bounds no single backend set: a few sets in a thousand move several points
            // more than 1/N (seen: 39% for 1 of 3). The typical set's bound (the goal's 1/N + 2%)
            // is checked on average below and measured by the benchmark's suite 5; this one
            // catches a table that reshuffles wholesale.
            prop_assert!(d <= 1.0 / n as f64 + 0.10, "removing 1 of {n} moved {d} of the slots");
        }

        #[test]
        fn input_order_does_not_matter(
            (backends, shuffled) in arb_backends()
                .prop_flat_map(|b| (Just(b.clone()), Just(b).prop_shuffle())),
            reject in arb_reject_weight(),
        ) {
            let a = frontend(backends, reject);
            let b = frontend(shuffled, reject);
            let ta = identities(&a, &build(&a, DEFAULT_TABLE_SIZE).unwrap());
            let tb = identities(&b, &build(&b, DEFAULT_TABLE_SIZE).unwrap());
            prop_assert!(ta == tb, "tables differ for the same backend set in another order");
        }
    }

    /// Removing one of N backends moves about 1/N of the slots: over a few hundred backend sets
    /// (fixed seed, so the run is repeatable) the mean excess over 1/N is under 2 points and at
    /// most 2% of the sets exceed it by more.
    #[test]
    fn removing_one_backend_moves_about_one_nth_on_average() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        for (n, sets) in [(3usize, 300usize), (10, 200), (50, 60)] {
            let mut excess = Vec::with_capacity(sets);
            for _ in 0..sets {
                let addrs = arb_addrs(n..=n)
                    .new_tree(&mut runner)
                    .expect("a backend set")
                    .current();
                let all: Vec<Backend> = addrs
                    .iter()
                    .map(|&addr| Backend {
                        addr,
                        weight: 1,
                        state: BackendState::Active,
                    })
                    .collect();
                let before_fe = frontend(all.clone(), 0);
                let after_fe = frontend(all[1..].to_vec(), 0);
                let before =
                    identities(&before_fe, &build(&before_fe, DEFAULT_TABLE_SIZE).unwrap());
                let after = identities(&after_fe, &build(&after_fe, DEFAULT_TABLE_SIZE).unwrap());
                excess.push(disruption(&before, &after) - 1.0 / n as f64);
            }
            let mean = excess.iter().sum::<f64>() / sets as f64;
            let over = excess.iter().filter(|e| **e > 0.02).count();
            assert!(mean <= 0.02, "N={n}: mean excess over 1/N {mean:.4}");
            assert!(
                over as f64 <= 0.02 * sets as f64,
                "N={n}: {over} of {sets} sets moved more than 1/N + 2%"
            );
        }
    }

    #[test]
    fn siphash_reference_vectors() {
        // From the SipHash paper (appendix A) and its reference implementation's vectors:
        // key 00..0f, messages of 0 and 15 bytes 00, 01, ...
        let key = (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
        assert_eq!(siphash24(key, &[]), 0x726f_db47_dd0e_0e31);
        let msg: Vec<u8> = (0..15).collect();
        assert_eq!(siphash24(key, &msg), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn golden_table_is_stable() {
        // Pins the whole construction (encoding, hash keys, ordering, turns): if this changes,
        // nodes running different versions would disagree on backends for the same flow.
        let fe = frontend(
            vec![
                be("10.0.1.2", 8080, 2),
                be("fd00::1", 53, 1),
                be("10.0.1.1", 8080, 3),
            ],
            1,
        );
        let table = build(&fe, 31).unwrap();
        let s: String = table
            .iter()
            .map(|s| match s {
                Slot::Backend(i) => char::from(b'0' + *i as u8),
                Slot::Reject => 'R',
            })
            .collect();
        assert_eq!(s, "02222100R2RR220R021220012202021");
    }

    #[test]
    fn is_prime_small_and_large() {
        let small: Vec<u32> = (0..40).filter(|&n| is_prime(n)).collect();
        assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37]);
        assert!(is_prime(DEFAULT_TABLE_SIZE));
        assert!(is_prime(65537));
        assert!(is_prime(4_294_967_291)); // largest u32 prime
        assert!(!is_prime(65535));
        assert!(!is_prime(4_294_967_295));
        assert!(!is_prime(65521 * 65519));
    }

    #[test]
    fn non_prime_size_is_an_error() {
        let fe = frontend(equal_backends(3), 0);
        let err = build(&fe, 1000).unwrap_err();
        assert!(matches!(err, MaglevError::NotPrime { size: 1000, .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("default/gw/tcp-80") && msg.contains("table size 1000 is not prime"),
            "{msg}"
        );
    }

    #[test]
    fn tiny_size_is_an_error() {
        let fe = frontend(equal_backends(1), 0);
        assert!(matches!(
            build(&fe, 5),
            Err(MaglevError::TooSmall { size: 5, .. })
        ));
        assert!(matches!(build(&fe, 0), Err(MaglevError::TooSmall { .. })));
    }

    #[test]
    fn size_must_exceed_participants() {
        let fe = frontend(equal_backends(10), 1);
        let err = build(&fe, 11).unwrap_err();
        assert!(matches!(
            err,
            MaglevError::TooManyParticipants {
                participants: 11,
                ..
            }
        ));
        assert!(build(&fe, 13).is_ok());
    }

    #[test]
    fn duplicate_eligible_backend_is_an_error() {
        let fe = frontend(
            vec![
                be("10.0.1.1", 80, 1),
                be("10.0.1.2", 80, 1),
                be("10.0.1.1", 80, 5),
            ],
            0,
        );
        let err = build(&fe, 31).unwrap_err();
        assert!(matches!(
            err,
            MaglevError::DuplicateBackend { index: 2, .. }
        ));
        assert!(err.to_string().contains("backends[2] 10.0.1.1:80"), "{err}");
    }

    #[test]
    fn all_invalid_rejects_everything() {
        let mut backends = vec![be("10.0.1.1", 80, 0), be("10.0.1.2", 80, 4)];
        backends[1].state = BackendState::Terminating;
        for reject in [0, 1, 100] {
            let table = build(&frontend(backends.clone(), reject), 31).unwrap();
            assert!(table.iter().all(|s| *s == Slot::Reject), "reject={reject}");
        }
        let table = build(&frontend(vec![], 0), 7).unwrap();
        assert_eq!(table, vec![Slot::Reject; 7]);
    }

    #[test]
    fn weight_zero_never_picked() {
        let fe = frontend(
            vec![
                be("10.0.1.1", 80, 1),
                be("10.0.1.2", 80, 0),
                be("10.0.1.3", 80, 1),
            ],
            0,
        );
        let (per, reject) = shares(&build(&fe, DEFAULT_TABLE_SIZE).unwrap(), 3);
        assert_eq!(per[1], 0);
        assert_eq!(reject, 0);
        assert_eq!(per[0] + per[2], DEFAULT_TABLE_SIZE);
    }

    #[test]
    fn terminating_never_picked() {
        let mut backends = equal_backends(4);
        backends[2].state = BackendState::Terminating;
        let (per, reject) = shares(
            &build(&frontend(backends, 0), DEFAULT_TABLE_SIZE).unwrap(),
            4,
        );
        assert_eq!(per[2], 0);
        assert_eq!(reject, 0);
        assert!(
            per.iter().enumerate().all(|(i, &n)| i == 2 || n > 5000),
            "{per:?}"
        );
    }

    #[test]
    fn weighted_and_reject_shares() {
        let m = f64::from(DEFAULT_TABLE_SIZE);
        let fe = frontend(vec![be("10.0.1.1", 80, 70), be("10.0.1.2", 80, 30)], 0);
        let (per, reject) = shares(&build(&fe, DEFAULT_TABLE_SIZE).unwrap(), 2);
        assert_eq!(reject, 0);
        assert!((f64::from(per[0]) / m - 0.7).abs() < 0.001, "{per:?}");
        assert!((f64::from(per[1]) / m - 0.3).abs() < 0.001, "{per:?}");

        // One valid and one invalid backendRef of equal weight: half the flows are rejected.
        let fe = frontend(vec![be("10.0.1.1", 80, 1)], 1);
        let (per, reject) = shares(&build(&fe, DEFAULT_TABLE_SIZE).unwrap(), 1);
        assert!((f64::from(reject) / m - 0.5).abs() < 0.001, "{reject}");
        assert_eq!(per[0] + reject, DEFAULT_TABLE_SIZE);
    }

    #[test]
    fn tiny_weight_beside_huge_weight() {
        // The credit schedule must not loop over ~M rounds of N participants here.
        let fe = frontend(
            vec![
                be("10.0.1.1", 80, crate::snapshot::MAX_WEIGHT),
                be("10.0.1.2", 80, 1),
            ],
            1,
        );
        let table = build(&fe, DEFAULT_TABLE_SIZE).unwrap();
        assert!(max_share_deviation(&fe, &table) < 0.001);
    }

    #[test]
    fn thousand_backends_at_65537() {
        let fe = frontend(equal_backends(1000), 0);
        let table = build(&fe, 65537).unwrap();
        let (per, _) = shares(&table, 1000);
        // 65.5 slots each on average: every backend gets 65 or 66.
        assert!(per.iter().all(|&n| (65..=66).contains(&n)), "{per:?}");
    }

    #[test]
    fn shares_grows_for_unknown_indices() {
        let (per, reject) = shares(&[Slot::Backend(3), Slot::Reject, Slot::Backend(0)], 2);
        assert_eq!(per, [1, 0, 0, 1]);
        assert_eq!(reject, 1);
    }
}
