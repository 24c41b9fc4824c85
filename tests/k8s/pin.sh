#!/usr/bin/env bash
# Re-pins the wrapper module to another Kubernetes release:  ./pin.sh v1.35.9
#
# Reads k8s.io/kubernetes@VERSION's own go.mod: every staging module it replaces with
# ./staging/src/... is pinned to the matching v0.x.y release, and etcd's server module to the
# version Kubernetes itself requires. Then tidies go.mod/go.sum and updates versions.env.
# Commit go.mod, go.sum and versions.env; build.sh then builds into a new cache directory.
set -euo pipefail

version="${1:?usage: $0 v1.MINOR.PATCH}"
[[ "$version" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || { echo "not a v1.x.y version: $version" >&2; exit 1; }
staging="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

kube_mod="$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
[[ -f "$kube_mod" ]] || { echo "could not download k8s.io/kubernetes@$version" >&2; exit 1; }
etcd="$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2; exit }' "$kube_mod")"
[[ -n "$etcd" ]] || { echo "k8s.io/kubernetes@$version does not require go.etcd.io/etcd/server/v3" >&2; exit 1; }

{
    # Keep the header comment and everything up to the first require block.
    sed '/^require (/,$d' go.mod
    printf 'require (\n\tgo.etcd.io/etcd/server/v3 %s\n\tk8s.io/kubernetes %s\n)\n\nreplace (\n' "$etcd" "$version"
    sed -n '/^replace (/,/^)/p' "$kube_mod" |
        awk -v v="$staging" '$2 == "=>" && $3 ~ /^\.\/staging\// { printf "\t%s => %s %s\n", $1, $1, v }'
    printf ')\n'
} >go.mod.new
mv go.mod.new go.mod
go mod tidy
sed -i "s/^KUBERNETES_VERSION=.*/KUBERNETES_VERSION=$version/" versions.env
echo "pinned kubernetes $version (staging $staging), etcd $etcd"
