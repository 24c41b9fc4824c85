#!/usr/bin/env bash
# Builds the test control plane from the Go module proxy and caches it:
#
#   ${BLIXT_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/blixt/k8s}/<kubernetes version>/
#     kube-apiserver  kube-controller-manager  kube-scheduler  kube-proxy  etcd
#     gateway-api-<version>/*.yaml      (Gateway API standard-channel CRDs)
#     echo-basic                        (the conformance suite's backend, for pods that run)
#     BUILD-INFO                        (what was built, from what, when)
#
# Idempotent: an artifact already in the cache is not built again, so only the first run pays.
# Safe to run concurrently (a lock serialises runs). Needs Go (>= the go line of go.mod) and the
# module proxy; nothing else. Binaries are static (CGO_ENABLED=0) and carry the version in the
# same ldflags Kubernetes' own build sets, so /version reports the release.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${BLIXT_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/blixt/k8s}"
out="$cache_root/$KUBERNETES_VERSION"
crd_dir="$out/gateway-api-$GATEWAY_API_VERSION"

log() { printf '[k8s-build %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v go >/dev/null || die "Go is not installed (need go >= $(sed -n 's/^go //p' "$here/go.mod"))"

mkdir -p "$out"
exec 9>"$out/.lock"
if ! flock -n 9; then
    log "another build holds $out/.lock; waiting"
    flock 9
fi

# The image the Gateway API conformance manifests run as backends
# (registry.k8s.io/gateway-api/conformance/echo-basic:v0.1.0 in v1.7.0) is built from this
# module; blixt-k8s-harness maps the image to the binary when pods really run.
ECHO_BASIC_MODULE=sigs.k8s.io/gateway-api-conformance-images@v0.1.0

binaries=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy etcd)
missing=()
for b in "${binaries[@]}"; do
    [[ -x "$out/$b" ]] || missing+=("$b")
done
crds_present=false
if [[ -f "$crd_dir/.complete" ]]; then
    crds_present=true
fi
# echo-basic.source names the module version the binary was built from; another version rebuilds.
echo_present=false
if [[ -x "$out/echo-basic" && "$(cat "$out/echo-basic.source" 2>/dev/null)" == "$ECHO_BASIC_MODULE" ]]; then
    echo_present=true
fi
if [[ ${#missing[@]} -eq 0 && $crds_present == true && $echo_present == true ]]; then
    log "cached: $out (kubernetes $KUBERNETES_VERSION, gateway-api $GATEWAY_API_VERSION)"
    exit 0
fi

cd "$here"
export GOFLAGS="${GOFLAGS:-} -mod=readonly -buildvcs=false"
# echo-basic's module may name a newer Go than the local one: unless told otherwise, let go
# fetch that toolchain (the module proxy serves it) for that build only.
echo_toolchain="${GOTOOLCHAIN:-auto}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

mod_version() { go list -m -f '{{.Version}}' "$1"; }
mod_time() { go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' "$1"; }

pinned="$(mod_version k8s.io/kubernetes)"
[[ "$pinned" == "$KUBERNETES_VERSION" ]] ||
    die "go.mod pins k8s.io/kubernetes $pinned but versions.env says $KUBERNETES_VERSION (run ./pin.sh)"
etcd_version="$(mod_version go.etcd.io/etcd/server/v3)"

if [[ ${#missing[@]} -gt 0 ]]; then
    # go build downloads only the modules the binaries need (a `go mod download` would
    # fetch the whole graph, test-only modules included).
    log "building from kubernetes $KUBERNETES_VERSION and etcd $etcd_version (modules download on first use)"

    # The same variables hack/lib/version.sh sets. The module proxy does not carry the git commit,
    # so gitCommit stays empty; buildDate is the release's module time, which keeps the build
    # reproducible.
    major="${KUBERNETES_VERSION#v}"; major="${major%%.*}"
    minor="${KUBERNETES_VERSION#v*.}"; minor="${minor%%.*}"
    build_date="$(mod_time k8s.io/kubernetes)"
    kube_ldflags="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        kube_ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION"
        kube_ldflags+=" -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
        kube_ldflags+=" -X $pkg.gitCommit= -X $pkg.gitTreeState=clean"
        kube_ldflags+=" -X $pkg.buildDate=$build_date"
    done
    etcd_ldflags="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$etcd_version"

    for b in "${missing[@]}"; do
        case "$b" in
            etcd) pkg=go.etcd.io/etcd/server/v3 ldflags="$etcd_ldflags" ;;
            *) pkg="k8s.io/kubernetes/cmd/$b" ldflags="$kube_ldflags" ;;
        esac
        log "building $b from $pkg (first run only; several minutes on 2 cores)"
        start=$SECONDS
        CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/.$b.tmp" "$pkg"
        mv -f "$out/.$b.tmp" "$out/$b"
        log "built $b in $((SECONDS - start))s ($(du -h "$out/$b" | cut -f1))"
    done
fi

if [[ $crds_present != true ]]; then
    log "fetching Gateway API $GATEWAY_API_VERSION CRDs from sigs.k8s.io/gateway-api"
    # Downloaded by version only, not required in go.mod: its requirements must not move the
    # versions Kubernetes is built with.
    # Its go.mod may need a newer Go than the one building Kubernetes: GATEWAY_API_GOTOOLCHAIN
    # (versions.env) applies to this download only.
    gw_dir="$(GOTOOLCHAIN="$GATEWAY_API_GOTOOLCHAIN" go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    [[ -d "$gw_dir/config/crd/standard" ]] || die "no config/crd/standard in sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION ($gw_dir)"
    rm -rf "$crd_dir.tmp"
    mkdir -p "$crd_dir.tmp"
    cp "$gw_dir"/config/crd/standard/*.yaml "$crd_dir.tmp/"
    chmod u+w "$crd_dir.tmp"/*.yaml
    touch "$crd_dir.tmp/.complete"
    rm -rf "$crd_dir"
    mv "$crd_dir.tmp" "$crd_dir"
    log "installed $(find "$crd_dir" -name '*.yaml' | wc -l) manifests into $crd_dir"
fi

if [[ $echo_present != true ]]; then
    log "building echo-basic from $ECHO_BASIC_MODULE"
    # Built inside the downloaded module with its own go.mod/go.sum: `go install module@version`
    # would also ask the proxy for the module's version list, which it does not serve.
    echo_dir="$(GOTOOLCHAIN="$echo_toolchain" go mod download -json "$ECHO_BASIC_MODULE" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    [[ -d "$echo_dir/echo-basic" ]] || die "no echo-basic package in $ECHO_BASIC_MODULE ($echo_dir)"
    start=$SECONDS
    (cd "$echo_dir" && GOTOOLCHAIN="$echo_toolchain" CGO_ENABLED=0 \
        go build -trimpath -ldflags "-s -w" -o "$out/.echo-basic.tmp" ./echo-basic)
    mv -f "$out/.echo-basic.tmp" "$out/echo-basic"
    echo "$ECHO_BASIC_MODULE" >"$out/echo-basic.source"
    log "built echo-basic in $((SECONDS - start))s"
fi

{
    echo "kubernetes $KUBERNETES_VERSION"
    echo "etcd $(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
    echo "gateway-api $GATEWAY_API_VERSION"
    echo "echo-basic $ECHO_BASIC_MODULE"
    echo "go $(go env GOVERSION)"
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$out/BUILD-INFO"
log "done: $out"
