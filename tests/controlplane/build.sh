#!/usr/bin/env bash
# Build the Kubernetes control plane used by the integration tests and `bgpd lab`:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (k8s.io/kubernetes, pinned
# in ./go.mod) and etcd + etcdctl (go.etcd.io/etcd, pinned in ./etcd/go.mod), from the Go
# module proxy with the machine's Go toolchain. No prebuilt binaries are downloaded.
#
#   build.sh            # the control plane; prints its bin folder
#   build.sh kubelet    # the control plane, then what a lab node needs to run pods for real
#                       # (tests/kubelet/): kubelet (same pin as the API server), containerd,
#                       # containerd-shim-runc-v2 and ctr (./containerd/go.mod), and the
#                       # sandbox ("pause") image from the Kubernetes module's pause.c
#                       # (gcc -static, an image FROM scratch); prints the node folder
#
# Idempotent: the control plane lands in ${BGPD_CACHE:-/var/cache/bgpd}/controlplane/<version>/bin
# and the node parts in .../<version>/node/{bin,images}; each build is skipped when its stamp
# matches the hash of the go.mod/go.sum files (and for the node, of the pause image's recipe)
# it was built from.
#
# Needs Go >= 1.26 (Kubernetes v1.36 requires it; containerd's go.mod says which patch
# release it needs). Debian 12's `golang-go` (1.19) is too old: install a release from
# https://go.dev/dl/ or set PATH to one. The node parts also need gcc and libc6-dev (static
# pause) and, to run, runc and containernetworking-plugins: `make deps` installs them.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_VERSION="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$HERE/go.mod")"
ETCD_VERSION="$(awk '$1 == "go.etcd.io/etcd/server/v3" && $2 ~ /^v/ {print $2; exit}' "$HERE/etcd/go.mod")"
CONTAINERD_VERSION="$(awk '$1 == "github.com/containerd/containerd/v2" && $2 ~ /^v/ {print $2; exit}' "$HERE/containerd/go.mod")"
CACHE="${BGPD_CACHE:-/var/cache/bgpd}"
OUT="$CACHE/controlplane/$K8S_VERSION"
BIN="$OUT/bin"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd etcdctl)
NODE="$OUT/node"
NODE_BINARIES=(kubelet containerd containerd-shim-runc-v2 ctr)
PAUSE_ARCHIVE=images/pause.tar # in $NODE
REQUIRED_GO_MINOR=26 # go directive of k8s.io/kubernetes' go.mod: "go 1.26.0"

log() { echo "build.sh: $*" >&2; }

WHAT="${1:-controlplane}"
if [[ $WHAT != controlplane && $WHAT != kubelet ]]; then
    log "usage: build.sh [controlplane|kubelet]"
    exit 2
fi

# One build at a time (a test run and `make lab` may start together): the second waits,
# then finds the first one's binaries up to date.
mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9

stamp="$(cat "$HERE/go.mod" "$HERE/go.sum" "$HERE/etcd/go.mod" "$HERE/etcd/go.sum" | sha256sum | cut -d' ' -f1)"
# The node's stamp: the kubelet's pin, containerd's, and how the pause image is made.
node_stamp="$(cat "$HERE/go.mod" "$HERE/go.sum" "$HERE/containerd/go.mod" "$HERE/containerd/go.sum" \
    "$HERE/oci_archive.py" <(echo "pause: gcc -Os -Wall -Werror -static") | sha256sum | cut -d' ' -f1)"

up_to_date() { # folder stamp-file stamp binaries...
    local dir="$1" file="$2" want="$3" b
    shift 3
    for b in "$@"; do [[ -x "$dir/$b" ]] || return 1; done
    [[ -f $file && "$(cat "$file")" == "$want" ]]
}

cp_ok=0
up_to_date "$BIN" "$OUT/stamp" "$stamp" "${BINARIES[@]}" && cp_ok=1
node_ok=1
if [[ $WHAT == kubelet ]]; then
    node_ok=0
    up_to_date "$NODE/bin" "$NODE/stamp" "$node_stamp" "${NODE_BINARIES[@]}" \
        && [[ -f $NODE/$PAUSE_ARCHIVE ]] && node_ok=1
fi
if [[ $cp_ok == 1 ]]; then
    log "up to date: kubernetes $K8S_VERSION, etcd $ETCD_VERSION"
fi
if [[ $WHAT == kubelet && $node_ok == 1 ]]; then
    log "up to date: kubelet $K8S_VERSION, containerd $CONTAINERD_VERSION, pause"
fi
if [[ $cp_ok == 1 && $node_ok == 1 ]]; then
    if [[ $WHAT == kubelet ]]; then echo "$NODE"; else echo "$BIN"; fi
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

# The version the Kubernetes binaries report (and the apiserver derives its compatibility
# version from); the release scripts set the same variables through hack/lib/version.sh.
minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
vpkg=k8s.io/component-base/version
ldflags="-s -w -X $vpkg.gitVersion=$K8S_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor"
ldflags+=" -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"
cpkg=k8s.io/client-go/pkg/version
ldflags+=" -X $cpkg.gitVersion=$K8S_VERSION -X $cpkg.gitMajor=1 -X $cpkg.gitMinor=$minor"

tmp=""
trap '[[ -n $tmp ]] && rm -rf "$tmp"' EXIT
new_tmp() {
    tmp="$(mktemp -d "$OUT/.build.XXXXXX")"
    chmod 755 "$tmp" # mktemp makes it 0700: let non-root users run the binaries
}

build_controlplane() {
    local start=$SECONDS
    new_tmp
    log "building kubernetes $K8S_VERSION (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl) with $(go env GOVERSION)"
    (cd "$HERE" && go build -trimpath -p "$PARALLEL" -ldflags="$ldflags" -o "$tmp/" \
        k8s.io/kubernetes/cmd/kube-apiserver \
        k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kube-scheduler \
        k8s.io/kubernetes/cmd/kubectl)

    log "building etcd $ETCD_VERSION (etcd, etcdctl)"
    (cd "$HERE/etcd" && go build -trimpath -p "$PARALLEL" -ldflags="-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
    (cd "$HERE/etcd" && go build -trimpath -p "$PARALLEL" -ldflags="-s -w" -o "$tmp/etcdctl" go.etcd.io/etcd/etcdctl/v3)

    rm -rf "$BIN"
    mv "$tmp" "$BIN"
    tmp=""
    echo "$stamp" >"$OUT/stamp"
    log "built in $((SECONDS - start)) s: $(du -sh "$BIN" | cut -f1) in $BIN"
}

# "go 1.26.6" in a go.mod: the oldest Go that may build it (GOTOOLCHAIN=local never fetches).
check_go_directive() {
    local want have
    want="$(awk '$1 == "go" {print $2; exit}' "$1")"
    have="$(go env GOVERSION | sed -E 's/^go//; s/[^0-9.].*$//')"
    if [[ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n1)" != "$want" ]]; then
        log "ERROR: $1 needs Go >= $want; this is go$have (install a newer one from https://go.dev/dl/)."
        exit 2
    fi
}

build_node() {
    local start=$SECONDS
    check_go_directive "$HERE/containerd/go.mod"
    if ! command -v gcc >/dev/null 2>&1 || [[ ! -f /usr/include/stdio.h ]]; then
        log "ERROR: gcc and libc6-dev are needed for the static pause binary (make deps)"
        exit 2
    fi
    new_tmp
    mkdir -p "$tmp/bin" "$tmp/images"
    log "building kubelet $K8S_VERSION with $(go env GOVERSION)"
    (cd "$HERE" && go build -trimpath -p "$PARALLEL" -ldflags="$ldflags" -o "$tmp/bin/" \
        k8s.io/kubernetes/cmd/kubelet)

    # containerd's own Makefile (STATIC=1): static build tags, no docs; the shim without gRPC.
    # CGO is off (see above), which leaves out only the btrfs snapshotter (overlayfs is used).
    log "building containerd $CONTAINERD_VERSION (containerd, containerd-shim-runc-v2, ctr)"
    local ctrd=github.com/containerd/containerd/v2 tags="urfave_cli_no_docs osusergo netgo static_build"
    local cld="-s -w -X $ctrd/version.Version=$CONTAINERD_VERSION -X $ctrd/version.Package=$ctrd"
    (cd "$HERE/containerd" && go build -trimpath -p "$PARALLEL" -tags "$tags" -ldflags="$cld" \
        -o "$tmp/bin/" $ctrd/cmd/containerd $ctrd/cmd/ctr)
    (cd "$HERE/containerd" && go build -trimpath -p "$PARALLEL" -tags "$tags no_grpc" -ldflags="$cld" \
        -o "$tmp/bin/" $ctrd/cmd/containerd-shim-runc-v2)

    # The sandbox image, built the way the Kubernetes module's build/pause does (its Makefile's
    # CFLAGS and TAG; its Dockerfile's layout, user and entrypoint), without a registry.
    local kdir tag
    kdir="$(cd "$HERE" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)"
    if [[ -z $kdir || ! -f $kdir/build/pause/linux/pause.c ]]; then
        (cd "$HERE" && go mod download k8s.io/kubernetes)
        kdir="$(cd "$HERE" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)"
    fi
    tag="$(awk '$1 == "TAG" && $2 == "?=" {print $3; exit}' "$kdir/build/pause/Makefile")"
    log "building the pause image $tag from $kdir/build/pause/linux/pause.c"
    gcc -Os -Wall -Werror -static -DVERSION="v$tag-bgpd" -o "$tmp/pause" "$kdir/build/pause/linux/pause.c"
    strip "$tmp/pause"
    python3 "$HERE/oci_archive.py" "$tmp/pause" "localhost/pause:$tag" "$tmp/$PAUSE_ARCHIVE"
    echo "localhost/pause:$tag" >"$tmp/images/pause.name"
    rm "$tmp/pause"

    echo "$node_stamp" >"$tmp/stamp"
    rm -rf "$NODE"
    mv "$tmp" "$NODE"
    tmp=""
    log "built in $((SECONDS - start)) s: $(du -sh "$NODE" | cut -f1) in $NODE"
}

[[ $cp_ok == 1 ]] || build_controlplane
[[ $node_ok == 1 ]] || build_node
trap - EXIT
if [[ $WHAT == kubelet ]]; then echo "$NODE"; else echo "$BIN"; fi
