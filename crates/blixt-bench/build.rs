//! Compiles the benchmark's BPF programs (`../blixt-bpf/bpf/bench_*.bpf.c`) into OUT_DIR with
//! the same clang flags as blixt-bpf's build.rs. They live beside the dataplane's sources
//! because bench_wrap.bpf.c compiles lb.bpf.c into itself (see the comment there).
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let clang = env::var("BLIXT_CLANG").unwrap_or_else(|_| "clang".into());
    let dir = Path::new("../blixt-bpf/bpf");
    println!("cargo:rerun-if-changed=../blixt-bpf/bpf");
    println!("cargo:rerun-if-env-changed=BLIXT_CLANG");
    let multiarch = format!("/usr/include/{}-linux-gnu", env::consts::ARCH);
    for prog in [
        "bench_empty",
        "bench_floor",
        "bench_wrap",
        "bench_maps",
        "bench_gen_loop",
    ] {
        let src = dir.join(format!("{prog}.bpf.c"));
        let obj = out.join(format!("{prog}.o"));
        let status = Command::new(&clang)
            .args(["-g", "-O2", "-target", "bpf", "-Wall", "-Werror"])
            .args(["-Wno-unused-function", "-mcpu=v3"])
            .arg(format!("-I{multiarch}"))
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {clang} to build {}: {e}; install clang, llvm and libbpf-dev",
                    src.display()
                )
            });
        assert!(status.success(), "{clang} failed on {}", src.display());
    }
}
