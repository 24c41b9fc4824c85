//! The user-space side of bench_wrap.bpf.c: the `bench_state` map value, byte for byte.
//!
//! The wrappers restore the original packet on every iteration of a BPF_PROG_TEST_RUN with a
//! repeat count, optionally stamp a fresh flow into it, run the program under test and count
//! its verdict; see the comment at the top of bench_wrap.bpf.c for why.

/// Largest packet the wrappers restore (`BENCH_MAX_PKT`).
pub const MAX_PKT: usize = 256;
/// `sizeof(struct bench_state)`: len, vary_lo_off, vary_hi_off, seq, verdicts[8], errors, data.
pub const STATE_SIZE: usize = 4 + 2 + 2 + 8 + 8 * 8 + 8 + MAX_PKT;

const OFF_SEQ: usize = 8;
const OFF_VERDICTS: usize = 16;
const OFF_ERRORS: usize = OFF_VERDICTS + 64;
const OFF_DATA: usize = OFF_ERRORS + 8;

/// Where the wrapper stamps its iteration counter: the low 16 bits into `lo` (a source port),
/// the high 16 bits into `hi` (the last two bytes of the source address). Offsets from the
/// start of the frame, below 256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vary {
    pub lo: u16,
    pub hi: u16,
}

impl Vary {
    /// Writes iteration `seq`'s flow into `pkt` exactly as the wrapper does, so that user space
    /// can build the same packets for the per-call method and re-check the last iteration.
    pub fn stamp(&self, pkt: &mut [u8], seq: u64) {
        let lo = self.lo as usize;
        let hi = self.hi as usize;
        pkt[lo..lo + 2].copy_from_slice(&(seq as u16).to_be_bytes());
        if self.hi != 0 {
            pkt[hi..hi + 2].copy_from_slice(&((seq >> 16) as u16).to_be_bytes());
        }
    }
}

/// The decoded `struct bench_state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub packet: Vec<u8>,
    pub vary: Option<Vary>,
    /// Next iteration number.
    pub seq: u64,
    /// Iterations per verdict, indexed by XDP action (ABORTED, DROP, PASS, TX, REDIRECT).
    pub verdicts: [u64; 8],
    /// Iterations whose packet the wrapper could not restore.
    pub errors: u64,
}

impl State {
    pub fn new(packet: &[u8], vary: Option<Vary>, seq: u64) -> State {
        assert!(
            !packet.is_empty() && packet.len() <= MAX_PKT,
            "benchmark packet of {} bytes (1..={MAX_PKT})",
            packet.len()
        );
        if let Some(v) = vary {
            assert!(
                v.lo != 0 && (v.lo as usize) + 2 <= packet.len(),
                "vary.lo {} outside the packet",
                v.lo
            );
            assert!((v.hi as usize) + 2 <= packet.len(), "vary.hi outside");
        }
        State {
            packet: packet.to_vec(),
            vary,
            seq,
            verdicts: [0; 8],
            errors: 0,
        }
    }

    pub fn encode(&self) -> [u8; STATE_SIZE] {
        let mut b = [0u8; STATE_SIZE];
        b[0..4].copy_from_slice(&(self.packet.len() as u32).to_ne_bytes());
        let (lo, hi) = self.vary.map_or((0, 0), |v| (v.lo, v.hi));
        b[4..6].copy_from_slice(&lo.to_ne_bytes());
        b[6..8].copy_from_slice(&hi.to_ne_bytes());
        b[OFF_SEQ..OFF_SEQ + 8].copy_from_slice(&self.seq.to_ne_bytes());
        for (i, v) in self.verdicts.iter().enumerate() {
            let o = OFF_VERDICTS + 8 * i;
            b[o..o + 8].copy_from_slice(&v.to_ne_bytes());
        }
        b[OFF_ERRORS..OFF_ERRORS + 8].copy_from_slice(&self.errors.to_ne_bytes());
        b[OFF_DATA..OFF_DATA + self.packet.len()].copy_from_slice(&self.packet);
        b
    }

    pub fn decode(b: &[u8; STATE_SIZE]) -> State {
        let u16_at = |o: usize| u16::from_ne_bytes([b[o], b[o + 1]]);
        let u64_at = |o: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[o..o + 8]);
            u64::from_ne_bytes(w)
        };
        let len = (u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize).min(MAX_PKT);
        let (lo, hi) = (u16_at(4), u16_at(6));
        State {
            packet: b[OFF_DATA..OFF_DATA + len].to_vec(),
            vary: (lo != 0).then_some(Vary { lo, hi }),
            seq: u64_at(OFF_SEQ),
            verdicts: std::array::from_fn(|i| u64_at(OFF_VERDICTS + 8 * i)),
            errors: u64_at(OFF_ERRORS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips() {
        let mut s = State::new(&[1, 2, 3, 4, 5, 6], Some(Vary { lo: 2, hi: 4 }), 77);
        s.verdicts[4] = 9;
        s.errors = 1;
        assert_eq!(State::decode(&s.encode()), s);
        assert_eq!(
            STATE_SIZE % 8,
            0,
            "value size is a multiple of 8 like the C struct"
        );
    }

    #[test]
    fn stamp_writes_big_endian_halves() {
        let mut p = vec![0u8; 8];
        Vary { lo: 2, hi: 6 }.stamp(&mut p, 0x0001_0203);
        assert_eq!(p, [0, 0, 2, 3, 0, 0, 0, 1]);
    }
}
