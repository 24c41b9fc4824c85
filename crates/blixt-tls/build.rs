//! Compiles the sk_lookup steering program into OUT_DIR/tls_sk_lookup.o.
//!
//! The source lives with the other BPF programs in blixt-bpf/bpf/ (whose build.rs compiles it
//! too, with the same flags); it is built here as well because blixt-bpf does not export its
//! objects to other crates.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let clang = env::var("BLIXT_CLANG").unwrap_or_else(|_| "clang".into());
    let src = "../blixt-bpf/bpf/tls_sk_lookup.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-changed=../blixt-bpf/bpf/include/tls.h");
    println!("cargo:rerun-if-env-changed=BLIXT_CLANG");
    let multiarch = format!("/usr/include/{}-linux-gnu", env::consts::ARCH);
    let obj = out.join("tls_sk_lookup.o");
    let status = Command::new(&clang)
        .args(["-g", "-O2", "-target", "bpf", "-Wall", "-Werror"])
        .args(["-Wno-unused-function", "-mcpu=v3"])
        .arg(format!("-I{multiarch}"))
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(&obj)
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run {clang} to build {src}: {e}; install clang, llvm and libbpf-dev (make deps does)")
        });
    assert!(status.success(), "{clang} failed on {src}");
}
