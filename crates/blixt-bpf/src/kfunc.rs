//! Kernel functions (kfuncs) the programs call, linked by Blixt itself: aya 0.14 does not
//! resolve kfunc calls, so the C code calls a placeholder helper number and [`link`] rewrites
//! each such call before the object is loaded, into a call of the kfunc by its BTF id in the
//! running kernel's BTF (`BPF_PSEUDO_KFUNC_CALL`), or, where the plan does not use it, into
//! `r0 = 0` (the code behind it is then pruned by a `.rodata` switch).
//!
//! The one kfunc today is `bpf_cast_to_kern_ctx` (6.3+), through which blixt_lb_tc reads
//! `skb->ip_summed` (bpf/include/skb_csum.h).

use std::sync::OnceLock;

use aya_obj::btf::{Btf, BtfKind};

use crate::plan::Plan;

/// The placeholder helper number of `bpf_cast_to_kern_ctx` (`BLIXT_CAST_TO_KERN_CTX_PLACEHOLDER`
/// in bpf/include/skb_csum.h).
pub const CAST_TO_KERN_CTX_PLACEHOLDER: i32 = 0x7b1c_0001;

/// `src_reg` of a call instruction that calls a kfunc by BTF id (include/uapi/linux/bpf.h).
const BPF_PSEUDO_KFUNC_CALL: u8 = 2;
/// `call imm` (BPF_JMP | BPF_CALL).
const CALL: u8 = 0x85;
/// `dst = imm` (BPF_ALU64 | BPF_MOV | BPF_K).
const MOV64_IMM: u8 = 0xb7;

/// The BTF id of `bpf_cast_to_kern_ctx` in the running kernel (looked up once).
pub fn cast_to_kern_ctx_id() -> Result<u32, String> {
    static ID: OnceLock<Result<u32, String>> = OnceLock::new();
    ID.get_or_init(|| kfunc_id("bpf_cast_to_kern_ctx")).clone()
}

fn kfunc_id(name: &str) -> Result<u32, String> {
    let btf = Btf::from_sys_fs().map_err(|e| format!("reading kernel BTF: {e}"))?;
    btf.id_by_type_name_kind(name, BtfKind::Func)
        .map_err(|_| format!("kfunc {name} is not in the kernel's BTF"))
}

/// An object file with its kfunc calls linked, 8-byte aligned as the ELF parser wants it.
#[derive(Debug, Clone)]
pub struct LinkedObject {
    words: Vec<u64>,
    len: usize,
}

impl std::ops::Deref for LinkedObject {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes (see `link`), u8 has no
        // alignment or validity requirement, and the slice borrows `self`.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
}

/// The 8 bytes of `call <placeholder>` as clang emits them (little-endian).
fn placeholder_call(placeholder: i32) -> [u8; 8] {
    let mut insn = [CALL, 0, 0, 0, 0, 0, 0, 0];
    insn[4..].copy_from_slice(&placeholder.to_le_bytes());
    insn
}

/// `obj` with every call of the `bpf_cast_to_kern_ctx` placeholder rewritten: into the kfunc
/// call with BTF id `cast_to_kern_ctx` when given, else into `r0 = 0`. Returns the object and
/// how many calls were rewritten.
pub fn link(obj: &[u8], cast_to_kern_ctx: Option<u32>) -> (LinkedObject, usize) {
    let mut bytes = obj.to_vec();
    let from = placeholder_call(CAST_TO_KERN_CTX_PLACEHOLDER);
    let to: [u8; 8] = match cast_to_kern_ctx {
        Some(id) => {
            let mut insn = [CALL, BPF_PSEUDO_KFUNC_CALL << 4, 0, 0, 0, 0, 0, 0];
            insn[4..].copy_from_slice(&id.to_le_bytes());
            insn
        }
        None => [MOV64_IMM, 0, 0, 0, 0, 0, 0, 0],
    };
    let mut rewritten = 0;
    // instructions sit at multiples of 8 from their section's start, and sections holding code
    // are 8-aligned in the file
    for insn in bytes.chunks_exact_mut(8) {
        if *insn == from {
            insn.copy_from_slice(&to);
            rewritten += 1;
        }
    }
    let len = bytes.len();
    let mut words = vec![0u64; len.div_ceil(8)];
    for (word, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        *word = u64::from_ne_bytes(b);
    }
    (LinkedObject { words, len }, rewritten)
}

/// A load balancer object (lb.o, or an object that compiles lb.bpf.c in) linked for `plan`,
/// with the value of its `have_kern_ctx` constant (to set with `override_global`).
pub fn link_for_plan(obj: &[u8], plan: &Plan) -> Result<(LinkedObject, u8), String> {
    let id = if plan.kern_ctx {
        Some(cast_to_kern_ctx_id()?)
    } else {
        None
    };
    let (linked, _) = link(obj, id);
    Ok((linked, u8::from(plan.kern_ctx)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object_with(insns: &[[u8; 8]]) -> Vec<u8> {
        let mut obj = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
        for i in insns {
            obj.extend_from_slice(i);
        }
        obj
    }

    #[test]
    fn placeholder_calls_become_kfunc_calls() {
        let exit = [0x95, 0, 0, 0, 0, 0, 0, 0];
        let obj = object_with(&[placeholder_call(CAST_TO_KERN_CTX_PLACEHOLDER), exit]);
        let (linked, n) = link(&obj, Some(0x1234));
        assert_eq!(n, 1);
        assert_eq!(&linked[8..16], &[0x85, 0x20, 0, 0, 0x34, 0x12, 0, 0]);
        assert_eq!(&linked[16..], &exit);
        assert_eq!(linked.len(), obj.len());
        assert_eq!(linked.as_ptr() as usize % 8, 0);
    }

    #[test]
    fn without_the_kfunc_the_call_becomes_a_zero_move() {
        let obj = object_with(&[placeholder_call(CAST_TO_KERN_CTX_PLACEHOLDER)]);
        let (linked, n) = link(&obj, None);
        assert_eq!(n, 1);
        assert_eq!(&linked[8..16], &[0xb7, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn other_calls_and_unaligned_lookalikes_are_left_alone() {
        let mut obj = object_with(&[[0x85, 0, 0, 0, 12, 0, 0, 0]]);
        obj.push(0);
        obj.extend_from_slice(&placeholder_call(CAST_TO_KERN_CTX_PLACEHOLDER));
        let (linked, n) = link(&obj, Some(7));
        assert_eq!(n, 0);
        assert_eq!(&*linked, &obj[..]);
    }
}
