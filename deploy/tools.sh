#!/usr/bin/env bash
# Builds the deploy tools (helm, kustomize) from the Go module proxy and caches them:
#
#   ${BLIXT_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/blixt/tools}/
#     helm-<version>/helm                 (+ BUILD-INFO)
#     kustomize-<version>/kustomize       (+ BUILD-INFO)
#
# Versions are pinned in deploy/tools.env. Idempotent: a cached binary is not built again (the
# cached run takes milliseconds), so `make test` can call it every time. Safe to run
# concurrently (a lock serialises builds). Needs Go and the module proxy, nothing else; no
# release binaries are downloaded. Binaries are static (CGO_ENABLED=0) and carry their version
# (helm: the same ldflags as helm's own Makefile).
#
#   deploy/tools.sh            build what is missing
#   deploy/tools.sh path NAME  print the cached path of helm or kustomize (builds it if missing)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tools.env
source "$here/tools.env"

cache_root="${BLIXT_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/blixt/tools}"

log() { printf '[deploy-tools %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

tool_path() {
    case "$1" in
        helm) echo "$cache_root/helm-$HELM_VERSION/helm" ;;
        kustomize) echo "$cache_root/kustomize-$KUSTOMIZE_VERSION/kustomize" ;;
        *) die "unknown tool '$1' (helm or kustomize)" ;;
    esac
}

# go install into a scratch GOBIN, check the binary runs and reports the pinned version, then
# move it into place (the cache never holds a half-written binary).
build() {
    local name="$1" module="$2" version="$3" ldflags="$4" check="$5"
    local target dir scratch
    target="$(tool_path "$name")"
    dir="$(dirname "$target")"
    if [[ -x "$target" ]]; then
        log "cached: $target"
        return 0
    fi
    command -v go >/dev/null || die "Go is not installed (needed to build $name $version)"
    log "building $name $version from $module (first run only; a few minutes on 2 cores)"
    scratch="$(mktemp -d "$cache_root/.build-$name-XXXXXX")"
    local started=$SECONDS
    GOBIN="$scratch" CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-local}" \
        GOFLAGS="${GOFLAGS:-} -buildvcs=false" \
        go install -trimpath -ldflags "$ldflags" "$module@$version"
    local built="$scratch/$name"
    [[ -x "$built" ]] || die "go install left no $name binary in $scratch"
    local reported
    reported="$("$built" $check 2>&1)" || die "$name does not run: $reported"
    [[ "$reported" == *"${version#v}"* ]] ||
        die "$name reports '$reported', expected $version"
    mkdir -p "$dir"
    {
        echo "tool: $name"
        echo "module: $module@$version"
        echo "reports: $reported"
        echo "go: $(go env GOVERSION)"
        echo "ldflags: $ldflags"
        echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - started)) s"
    } >"$scratch/BUILD-INFO"
    mv "$scratch/BUILD-INFO" "$dir/BUILD-INFO"
    mv "$built" "$target"
    rm -rf "$scratch"
    log "built $target in $((SECONDS - started)) s"
}

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
if ! flock -n 9; then
    log "another run holds $cache_root/.lock; waiting"
    flock 9
fi
# Scratch directories of runs that died (we hold the lock, so none is in use).
rm -rf "$cache_root"/.build-*

helm_ldflags() {
    # helm's Makefile sets the version and the default Kubernetes version of `helm template`
    # (the minor of the client-go it is built with) by ldflags; without them helm says v3.21
    # and renders against Kubernetes v1.20.
    local client_go k8s_minor flags="-s -w"
    client_go="$(curl_mod helm.sh/helm/v3 "$HELM_VERSION" | awk '$1 == "k8s.io/client-go" { print $2 }')"
    k8s_minor="$(echo "$client_go" | cut -d. -f2)"
    [[ "$k8s_minor" =~ ^[0-9]+$ ]] || die "cannot read the client-go version from helm $HELM_VERSION's go.mod"
    flags+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    flags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        flags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
    done
    echo "$flags"
}

# A module's go.mod through the Go toolchain (honours GOPROXY, GONOSUMDB, the module cache).
curl_mod() {
    local json
    json="$(cd "$cache_root" && GOFLAGS=-mod=mod GOTOOLCHAIN=local go mod download -json "$1@$2" 2>/dev/null || true)"
    local gomod
    gomod="$(printf '%s' "$json" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
    [[ -n "$gomod" && -f "$gomod" ]] || die "cannot download $1@$2 from the Go module proxy: $json"
    cat "$gomod"
}

ensure() {
    case "$1" in
        helm)
            [[ -x "$(tool_path helm)" ]] && { log "cached: $(tool_path helm)"; return 0; }
            build helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" "$(helm_ldflags)" "version --short"
            ;;
        kustomize)
            # kustomize takes its version from the module build info (go install M@V sets it).
            build kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION" "-s -w" "version"
            ;;
    esac
}

case "${1:-}" in
    "")
        ensure helm
        ensure kustomize
        ;;
    path)
        [[ $# -eq 2 ]] || die "usage: $0 path helm|kustomize"
        tool_path "$2" >/dev/null
        ensure "$2"
        tool_path "$2"
        ;;
    *) die "usage: $0 [path helm|kustomize]" ;;
esac
