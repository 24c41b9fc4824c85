#!/usr/bin/env bash
# Body of `make bench` (QUICK=1 for the short run), which runs `make deps` and `make k8s-bins`
# (suite 4's kube-apiserver, etcd and CRDs) first: installs what the benchmarks need beyond
# those, builds blixt-bench in release mode and runs it as root from the repository root.
# It writes target/bench/results.json and regenerates docs/benchmarks.md and docs/bench/*.png.
# Extra arguments go to blixt-bench (see `blixt-bench --help`), e.g. --suites 5.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/require-root.sh "make bench"
# the plots' font (plotters draws text with ab_glyph from a TrueType file)
bash hack/deps.sh fonts-dejavu-core
# perf is optional: it profiles where the time goes; the report says so when it is missing
bash hack/deps.sh linux-perf || echo "bench: linux-perf not installed; the report will have no profile" >&2
args=()
if [ -n "${QUICK:-}" ] && [ "${QUICK}" != 0 ]; then
  args+=(--quick)
fi
# blixt too: suite 4 runs the real `blixt run`; BLIXT_BIN points it at this build (on its own
# it would build blixt again mid-run, with other features unified than here)
cargo build --release -p blixt-bench -p blixt
export BLIXT_BIN="${CARGO_TARGET_DIR:-target}/release/blixt"
exec "${CARGO_TARGET_DIR:-target}/release/blixt-bench" "${args[@]}" "$@"
