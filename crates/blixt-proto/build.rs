//! Generates the prost messages and tonic service from `proto/`. protoc comes from the
//! `protoc-bin-vendored` crate, so building needs no protobuf compiler installed; `PROTOC` in
//! the environment still wins, for platforms that crate does not ship.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // prost-build finds protoc through PROTOC; a build script runs single-threaded.
        std::env::set_var("PROTOC", protoc);
    }
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&["proto/blixt/v1/snapshot.proto"], &["proto"])?;
    Ok(())
}
