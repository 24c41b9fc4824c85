//! Compiles the C programs under bpf/ with clang (`-g -O2 -target bpf`) into OUT_DIR.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let clang = env::var("BLIXT_CLANG").unwrap_or_else(|_| "clang".into());
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-env-changed=BLIXT_CLANG");
    // Debian keeps asm/ headers under the multiarch directory.
    let multiarch = format!("/usr/include/{}-linux-gnu", env::consts::ARCH);
    // every bpf/<name>.bpf.c becomes OUT_DIR/<name>.o
    let mut programs: Vec<String> = std::fs::read_dir("bpf")
        .expect("bpf/ directory")
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter_map(|n| n.strip_suffix(".bpf.c").map(str::to_owned))
        .collect();
    programs.sort();
    for prog in &programs {
        let src = format!("bpf/{prog}.bpf.c");
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
                panic!("cannot run {clang} to build {src}: {e}; install clang, llvm and libbpf-dev (make deps does)")
            });
        assert!(status.success(), "{clang} failed on {src}");
    }
}
