#!/usr/bin/env bash
# Build the Kubernetes control plane used by the integration tests and `bgpd lab`:
# kube-apiserver, kube-controller-manager, kubectl (k8s.io/kubernetes, pinned in ./go.mod)
# and etcd + etcdctl (go.etcd.io/etcd, pinned in ./etcd/go.mod), from the Go module proxy
# with the machine's Go toolchain. No prebuilt binaries are downloaded.
#
# Idempotent: the binaries land in ${BGPD_CACHE:-/var/cache/bgpd}/controlplane/<version>/bin
# and the build is skipped when that folder's stamp matches the hash of the go.mod/go.sum
# files. Prints the bin folder last.
#
# Needs Go >= 1.26 (Kubernetes v1.36 requires it). Debian 12's `golang-go` (1.19) is too
# old: install a release from https://go.dev/dl/ or set PATH to one.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_VERSION="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$HERE/go.mod")"
ETCD_VERSION="$(awk '$1 == "go.etcd.io/etcd/server/v3" && $2 ~ /^v/ {print $2; exit}' "$HERE/etcd/go.mod")"
CACHE="${BGPD_CACHE:-/var/cache/bgpd}"
OUT="$CACHE/controlplane/$K8S_VERSION"
BIN="$OUT/bin"
BINARIES=(kube-apiserver kube-controller-manager kubectl etcd etcdctl)
REQUIRED_GO_MINOR=26 # go directive of k8s.io/kubernetes' go.mod: "go 1.26.0"

log() { echo "build.sh: $*" >&2; }

stamp="$(cat "$HERE/go.mod" "$HERE/go.sum" "$HERE/etcd/go.mod" "$HERE/etcd/go.sum" | sha256sum | cut -d' ' -f1)"
all_present=1
for b in "${BINARIES[@]}"; do [[ -x "$BIN/$b" ]] || all_present=0; done
if [[ $all_present == 1 && -f "$OUT/stamp" && "$(cat "$OUT/stamp")" == "$stamp" ]]; then
    log "up to date: kubernetes $K8S_VERSION, etcd $ETCD_VERSION"
    echo "$BIN"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    log "ERROR: Go is not installed (need Go >= 1.$REQUIRED_GO_MINOR)."
    log "Debian 12's golang-go package is 1.19, too old for Kubernetes $K8S_VERSION;"
    log "install a Go release from https://go.dev/dl/ and put its bin folder on PATH."
    exit 2
fi
go_minor="$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')"
if [[ ! "$go_minor" =~ ^[0-9]+$ ]] || (( go_minor < REQUIRED_GO_MINOR )); then
    log "ERROR: $(go env GOVERSION) is too old; Kubernetes $K8S_VERSION needs Go >= 1.$REQUIRED_GO_MINOR."
    exit 2
fi

# Never let `go` fetch a different toolchain behind our back; build exactly what go.mod and
# go.sum pin (readonly: a build never rewrites them; no vendor folder); static binaries so
# no C toolchain or libc version matters.
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0
PARALLEL="${BGPD_BUILD_PARALLEL:-$(nproc)}" # go build -p: packages compiled at once

mkdir -p "$OUT"
tmp="$(mktemp -d "$OUT/.build.XXXXXX")"
chmod 755 "$tmp" # mktemp makes it 0700: let non-root users run the binaries
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS

# The version the apiserver reports (and derives its compatibility version from); the
# release scripts set the same variables through hack/lib/version.sh.
minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
vpkg=k8s.io/component-base/version
ldflags="-s -w -X $vpkg.gitVersion=$K8S_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor"
ldflags+=" -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"
cpkg=k8s.io/client-go/pkg/version
ldflags+=" -X $cpkg.gitVersion=$K8S_VERSION -X $cpkg.gitMajor=1 -X $cpkg.gitMinor=$minor"

log "building kubernetes $K8S_VERSION (kube-apiserver, kube-controller-manager, kubectl) with $(go env GOVERSION)"
(cd "$HERE" && go build -trimpath -p "$PARALLEL" -ldflags="$ldflags" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl)

log "building etcd $ETCD_VERSION (etcd, etcdctl)"
(cd "$HERE/etcd" && go build -trimpath -p "$PARALLEL" -ldflags="-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
(cd "$HERE/etcd" && go build -trimpath -p "$PARALLEL" -ldflags="-s -w" -o "$tmp/etcdctl" go.etcd.io/etcd/etcdctl/v3)

rm -rf "$BIN"
mv "$tmp" "$BIN"
trap - EXIT
echo "$stamp" >"$OUT/stamp"
log "built in $((SECONDS - start)) s: $(du -sh "$BIN" | cut -f1) in $BIN"
echo "$BIN"
