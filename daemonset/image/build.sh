#!/usr/bin/env bash
# Build the agent image localhost/bgpd:dev from daemonset/Containerfile without a container
# registry and with no network inside the build:
#
#   1. the base: Debian bookworm (python3, python3-venv, passwd) made by mmdebstrap from
#      Debian's archive and imported with `podman import` as localhost/bgpd-base:bookworm;
#   2. the wheels: the project's dependencies and build backend, downloaded from PyPI on the
#      host by pip, for CPython 3.11 on glibc 2.36 (bookworm), with binary wheels only;
#   3. `podman build --network none` with BASE and WHEELS pointing at those two.
#
# Both inputs are cached under ${BGPD_CACHE:-/var/cache/bgpd}/image, keyed on what made them
# (the mmdebstrap arguments; the dependency lists of pyproject.toml and the target tags), so
# a second run only re-runs the build, whose unchanged steps podman's layer cache skips.
# Delete the folder to refresh Debian's or PyPI's packages.
#
# Needs root, podman, runc and mmdebstrap (installed with apt-get when missing). Podman runs
# with runc and host-compatible ulimits (shared/CONTAINERS.md: crun refuses this machine's
# hybrid cgroups, podman's default nofile/nproc exceed its hard limits).
#
#   daemonset/image/build.sh            # builds localhost/bgpd:dev, prints its size
#   BGPD_IMAGE=localhost/bgpd:x daemonset/image/build.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${BGPD_CACHE:-/var/cache/bgpd}/image"
IMAGE="${BGPD_IMAGE:-localhost/bgpd:dev}"
PYTHON="${PYTHON:-python3}"

SUITE=bookworm
BASE_IMAGE="localhost/bgpd-base:$SUITE"
BASE_LABEL=dev.bgpd.base-key
# What the base holds. essential (not minbase): no apt, no perl beyond perl-base; the
# merged-usr hook instead of the usrmerge package (which pulls in perl). passwd: groupadd and
# useradd for the Containerfile. No documentation, manuals or translations.
# shellcheck disable=SC2054 # the commas belong to --include's value
MMDEBSTRAP_ARGS=(
    --variant=essential
    --include=python3,python3-venv,passwd
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --architectures=amd64
    "$SUITE"
)
# The base's interpreter and C library, which the wheels must fit: bookworm has CPython
# 3.11 and glibc 2.36, so any manylinux tag up to 2.36.
PY_VERSION=3.11
PY_ABI=cp311
GLIBC_MINOR=36

PODMAN=(podman --runtime runc)
ULIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=4096:4096)

log() { echo "build.sh: $*" >&2; }
sha() { sha256sum | cut -c1-16; }

if [[ $(id -u) != 0 ]]; then
    log "ERROR: run as root (mmdebstrap, podman's root storage)"
    exit 2
fi
if [[ $(dpkg --print-architecture 2>/dev/null) != amd64 ]]; then
    log "ERROR: only amd64 is wired up here (the wheel tags and the base's architecture)"
    exit 2
fi

# ---- tools, the way `make deps` installs Debian packages
missing=()
for probe in podman:podman runc:runc mmdebstrap:mmdebstrap; do
    command -v "${probe%%:*}" >/dev/null 2>&1 || missing+=("${probe#*:}")
done
if (( ${#missing[@]} )); then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

mkdir -p "$CACHE/wheels"
# One build at a time: two runs would otherwise race on the cache and the tags.
exec 9>"$CACHE/.lock"
flock 9
start=$SECONDS

# ---- 1. the base image
base_key="$(printf '%s\n' base-v1 "${MMDEBSTRAP_ARGS[@]}" "${BGPD_DEBIAN_MIRROR:-}" | sha)"
image_id() { "${PODMAN[@]}" image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }
have_key="$("${PODMAN[@]}" image inspect --format "{{ index .Labels \"$BASE_LABEL\" }}" \
    "$BASE_IMAGE" 2>/dev/null || true)"
old_base_id="$(image_id "$BASE_IMAGE")"
if [[ $have_key != "$base_key" ]]; then
    tarball="$CACHE/base-$SUITE-$base_key.tar"
    if [[ ! -f $tarball ]]; then
        log "making the $SUITE base with mmdebstrap (once; cached as $tarball)"
        # Without a mirror argument mmdebstrap uses Debian's archive plus, for a stable
        # suite, its updates and security suites. BGPD_DEBIAN_MIRROR: a mirror of your own.
        mirror=()
        [[ -n ${BGPD_DEBIAN_MIRROR:-} ]] && mirror=("$BGPD_DEBIAN_MIRROR")
        rm -f "$CACHE"/base-"$SUITE"-*.tar "$CACHE"/.base-*.tar
        if ! mmdebstrap "${MMDEBSTRAP_ARGS[@]}" "$CACHE/.base-$base_key.tar" "${mirror[@]}" \
                >"$CACHE/mmdebstrap.log" 2>&1; then
            tail -n 30 "$CACHE/mmdebstrap.log" >&2
            log "ERROR: mmdebstrap failed (whole log: $CACHE/mmdebstrap.log)"
            exit 1
        fi
        mv "$CACHE/.base-$base_key.tar" "$tarball"
    fi
    log "importing $tarball as $BASE_IMAGE"
    "${PODMAN[@]}" import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change "LABEL $BASE_LABEL=$base_key" \
        --change 'CMD ["/bin/bash"]' \
        "$tarball" "$BASE_IMAGE" >/dev/null
fi

# ---- 2. the wheels
# The requirements exactly as pyproject.toml states them, the build backend included (pip
# builds the project itself inside the image, from the build context).
mapfile -t requirements < <("$PYTHON" - "$REPO/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    data = tomllib.load(f)
for line in [*data["project"]["dependencies"], *data["build-system"]["requires"]]:
    print(line)
PY
)
platforms=()
for ((minor = GLIBC_MINOR; minor >= 17; minor--)); do
    platforms+=(--platform "manylinux_2_${minor}_x86_64")
done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64
            --platform manylinux1_x86_64 --platform linux_x86_64)
wheel_args=(--only-binary=:all: --python-version "$PY_VERSION" --implementation cp
            --abi "$PY_ABI" --abi abi3 --abi none "${platforms[@]}")
wheels_key="$(printf '%s\n' wheels-v1 "${requirements[@]}" "${wheel_args[@]}" | sha)"
wheels="$CACHE/wheels/$wheels_key"
if [[ ! -f $wheels/.complete ]]; then
    log "downloading wheels from PyPI (once; cached in $wheels)"
    pipvenv="$CACHE/pip-venv"
    [[ -x $pipvenv/bin/pip ]] || "$PYTHON" -m venv "$pipvenv"
    rm -rf "$wheels" "$CACHE/wheels/.partial"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$pipvenv/bin/pip" download --quiet \
        --dest "$CACHE/wheels/.partial" "${wheel_args[@]}" "${requirements[@]}"
    touch "$CACHE/wheels/.partial/.complete"
    mv "$CACHE/wheels/.partial" "$wheels"
    # Older downloads are never used again.
    find "$CACHE/wheels" -mindepth 1 -maxdepth 1 ! -name "$wheels_key" -exec rm -rf {} +
fi

# ---- 3. the image
# The build stage gets a tag of its own: it is the layer cache of the next build, and
# whatever is left untagged afterwards can go (below).
BUILD_IMAGE="${IMAGE%:*}-build:${IMAGE##*:}"
log "building $IMAGE (base $BASE_IMAGE, no network)"
# --network none: nothing in the build reaches any network; pip reads the mounted wheels
# (the WHEELS path names the key, so a new set of wheels never hits a stale cached layer).
# --pull=never: the base is local; never ask a registry.
build_args=(
    --network none --pull=never "${ULIMITS[@]}"
    -f "$REPO/daemonset/Containerfile" --ignorefile "$REPO/daemonset/Containerfile.dockerignore"
    --build-arg "BASE=$BASE_IMAGE"
    --volume "$CACHE/wheels:/wheels:ro" --build-arg "WHEELS=/wheels/$wheels_key"
)
"${PODMAN[@]}" build "${build_args[@]}" --target build --tag "$BUILD_IMAGE" "$REPO" >&2
"${PODMAN[@]}" build "${build_args[@]}" --tag "$IMAGE" "$REPO" >&2

# Leftovers: an untagged image descending from our base is an earlier build of ours (the
# previous image or build stage, or a build stage superseded because the tree changed
# between the two builds above). Remove them with their layers (podman keeps one that a
# container still uses), then a replaced base.
ancestors=" $(image_id "$BASE_IMAGE") $old_base_id "
while read -r id; do
    parent="$id"
    while [[ -n $parent ]]; do
        if [[ $ancestors == *" ${parent#sha256:} "* ]]; then
            "${PODMAN[@]}" rmi "$id" >/dev/null 2>&1 || true
            break
        fi
        parent="$("${PODMAN[@]}" image inspect --format '{{.Parent}}' "$parent" 2>/dev/null || true)"
    done
done < <("${PODMAN[@]}" images --quiet --no-trunc --filter dangling=true)
if [[ -n $old_base_id && $old_base_id != "$(image_id "$BASE_IMAGE")" ]]; then
    "${PODMAN[@]}" rmi "$old_base_id" >/dev/null 2>&1 || true
fi

size="$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")"
log "built $IMAGE in $((SECONDS - start)) s: $((size / 1000000)) MB ($size bytes)"
echo "$IMAGE"
