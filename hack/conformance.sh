#!/usr/bin/env bash
# Runs the upstream Gateway API conformance suite (sigs.k8s.io/gateway-api/conformance v1.7.0,
# profiles GATEWAY-TCP, GATEWAY-UDP, GATEWAY-TLS) against Blixt on an existing cluster.
#
#   KUBECONFIG=/path/to/kubeconfig hack/conformance.sh [runner flags...]
#   hack/conformance.sh --build     build (or find cached) the runner and echo-basic, run nothing
#   hack/conformance.sh --plan      print what would run and what is skipped; needs no cluster
#
# Builds, once, into ${BLIXT_CONFORMANCE_CACHE:-${XDG_CACHE_HOME:-~/.cache}/blixt/conformance}/v1.7.0/:
#   blixt-conformance.test   the runner (tests/conformance, `go test -c`); rebuilt when the
#                            sources in tests/conformance change (runner.source holds their hash)
#   echo-basic               the backend the suite's Deployments run (image echo-basic:v0.1.0)
#   BUILD-INFO
# then runs the runner against $KUBECONFIG and writes target/conformance/report.yaml (upstream's
# ConformanceReport) and target/conformance/summary.md. Extra arguments go to the runner: any
# upstream flag (-debug, -run-test NAME, -timeout-config-overrides 'NamespacesMustBeReady:60',
# -allow-crds-mismatch, -cleanup-base-resources=false, ...). See docs/conformance.md.
#
# Environment: KUBECONFIG (required to run), BLIXT_GATEWAY_CLASS (default blixt),
# BLIXT_CONFORMANCE_OUT (default target/conformance), BLIXT_CONFORMANCE_TIMEOUT (go test
# -test.timeout, default 90m), BLIXT_CONFORMANCE_URL / BLIXT_CONFORMANCE_CONTACT (report's
# implementation url and contact), GOTOOLCHAIN (default: go1.27.3 when the local Go is older
# than the module's go line).
set -euo pipefail

SUITE_VERSION=v1.7.0

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$repo/tests/conformance"
cache="${BLIXT_CONFORMANCE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/blixt/conformance}/$SUITE_VERSION"
out="${BLIXT_CONFORMANCE_OUT:-$repo/target/conformance}"
runner="$cache/blixt-conformance.test"
echo_basic="$cache/echo-basic"
# The echo-basic module: conformance v1.7.0 requires v0.2.0, which the module proxy refuses;
# tests/conformance/go.mod replaces it with v0.1.0 (see the comment there).
ECHO_BASIC_PKG=sigs.k8s.io/gateway-api-conformance-images/echo-basic

log() { printf '[conformance %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

mode=run
case "${1:-}" in
    --build) mode=build; shift ;;
    --plan) mode=plan; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
esac

need_cluster() {
    cat >&2 <<EOF
hack/conformance.sh needs a cluster: set KUBECONFIG to the kubeconfig of one where

  - Blixt is installed from its Helm chart (deploy/helm/blixt) and its GatewayClass
    (default "blixt", or BLIXT_GATEWAY_CLASS) is Accepted;
  - the Gateway API $SUITE_VERSION standard-channel CRDs are installed (the suite refuses other
    versions unless -allow-crds-mismatch is passed, and then reports the version as UNDEFINED);
  - Pods really run: the Deployment and ReplicaSet controllers, a scheduler and a kubelet (or
    the blixt-k8s-harness node agent) start the echo-basic backends
    (registry.k8s.io/gateway-api/conformance/echo-basic:v0.1.0; the binary is built here as
    $echo_basic) with secret volumes, downward-API env and a network
    namespace each (fixed ports 3000, 8443, 8080/UDP), and report them Ready with an IP;
  - the EndpointSlice and namespace controllers run (Blixt balances to EndpointSlice
    addresses; the suite deletes its namespaces at the end);
  - the addresses Blixt writes to Gateway status are reachable from this machine on the
    listener ports (TCP, UDP and TLS): the suite dials them directly.

The admin kubeconfig is enough. No DNS and no kube-proxy are needed.
'hack/conformance.sh --plan' lists the tests without a cluster; docs/conformance.md has more.
EOF
    exit 2
}

if [[ $mode == run && -z "${KUBECONFIG:-}" ]]; then
    need_cluster
fi

command -v go >/dev/null || die "Go is not installed (need go >= $(sed -n 's/^go //p' "$src/go.mod"))"
if [[ -z "${GOTOOLCHAIN:-}" ]]; then
    want="go$(sed -n 's/^go //p' "$src/go.mod")"
    have="$(go env GOVERSION)"
    if [[ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -1)" != "$want" ]]; then
        GOTOOLCHAIN="$(sed -n 's/^toolchain //p' "$src/go.mod")"
        log "local $have is older than $want: using GOTOOLCHAIN=$GOTOOLCHAIN (from the module proxy)"
    else
        GOTOOLCHAIN=local
    fi
fi
export GOTOOLCHAIN
export GOFLAGS="${GOFLAGS:-} -mod=readonly -buildvcs=false"

mkdir -p "$cache"
exec 9>"$cache/.lock"
if ! flock -n 9; then
    log "another build holds $cache/.lock; waiting"
    flock 9
fi

# The runner is keyed by a hash of its sources (the skip list and base manifest are compiled in).
source_hash="$(cd "$src" && find . -type f \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' \
    -o -name '*.yaml' -o -name '*.txt' \) -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"
if [[ -x "$runner" && "$(cat "$cache/runner.source" 2>/dev/null)" == "$source_hash" ]]; then
    log "cached: $runner"
else
    log "building the runner from tests/conformance (modules download on first use)"
    start=$SECONDS
    (cd "$src" && go test -c -trimpath -o "$runner.tmp" .)
    mv -f "$runner.tmp" "$runner"
    echo "$source_hash" >"$cache/runner.source"
    log "built $runner in $((SECONDS - start))s"
fi
if [[ -x "$echo_basic" ]]; then
    log "cached: $echo_basic"
else
    log "building echo-basic ($ECHO_BASIC_PKG)"
    start=$SECONDS
    (cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$echo_basic.tmp" "$ECHO_BASIC_PKG")
    mv -f "$echo_basic.tmp" "$echo_basic"
    log "built $echo_basic in $((SECONDS - start))s"
fi
{
    echo "suite sigs.k8s.io/gateway-api/conformance $SUITE_VERSION"
    echo "runner sources $source_hash"
    echo "echo-basic $(cd "$src" && go list -m -f '{{.Path}} {{.Version}}{{with .Replace}} (replaced by {{.Version}}){{end}}' sigs.k8s.io/gateway-api-conformance-images)"
    echo "go $(cd "$src" && go env GOVERSION)"
} >"$cache/BUILD-INFO"
exec 9>&-

case $mode in
    build) log "done: $cache"; exit 0 ;;
    plan) exec "$runner" -test.run '^TestPlan$' -test.v ;;
esac

# The implementation version: the workspace version, plus the commit when there is one.
version="v$(sed -n '/^\[workspace.package\]/,/^\[/ s/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml")"
if commit="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null)"; then
    version+="+$commit"
    if ! git -C "$repo" diff --quiet HEAD -- 2>/dev/null; then
        version+=".dirty"
    fi
fi

mkdir -p "$out"
rm -f "$out/report.yaml" "$out/summary.md"
log "running against $KUBECONFIG (GatewayClass ${BLIXT_GATEWAY_CLASS:-blixt}, Blixt $version); log: $out/conformance.log"
set +e
"$runner" -test.run '^TestConformance$' -test.v -test.timeout "${BLIXT_CONFORMANCE_TIMEOUT:-90m}" \
    -kubeconfig "$KUBECONFIG" \
    -gateway-class "${BLIXT_GATEWAY_CLASS:-blixt}" \
    -organization blixt -project blixt \
    -url "${BLIXT_CONFORMANCE_URL:-https://github.com/kubernetes-sigs/blixt}" \
    -contact "${BLIXT_CONFORMANCE_CONTACT:-https://github.com/kubernetes-sigs/blixt/issues/new}" \
    -version "$version" \
    -report-output "$out/report.yaml" -summary-output "$out/summary.md" \
    "$@" 2>&1 | tee "$out/conformance.log"
status=${PIPESTATUS[0]}
set -e
if grep -q -- '^--- SKIP: TestConformance (' "$out/conformance.log"; then
    die "the runner skipped: it saw no cluster"
fi
[[ -f "$out/summary.md" ]] || die "the runner wrote no summary (exit $status); see $out/conformance.log"
log "report: $out/report.yaml; summary: $out/summary.md (exit $status)"
exit "$status"
