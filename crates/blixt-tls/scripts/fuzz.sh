#!/usr/bin/env bash
# Bounded cargo-fuzz run of the ClientHello parser: scripts/fuzz.sh [SECONDS] (default 60).
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Exits 0 with a
# message when either is missing, so CI without nightly is not failed by it; the stable
# `cargo test` run has its own bounded property tests of the same invariants.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz.sh: no nightly toolchain; skipped (cargo test runs the bounded property tests)"
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz not installed (cargo install cargo-fuzz); skipped"
    exit 0
fi
mkdir -p fuzz/corpus/client_hello
cargo +nightly fuzz run client_hello -- -max_total_time="$secs" -max_len=8192 -rss_limit_mb=2048
