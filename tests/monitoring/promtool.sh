#!/usr/bin/env bash
# Get promtool, Prometheus' rule checker and rule unit-test runner, for tests/monitoring.
#
# From Debian's `prometheus` package (bookworm: 2.42): `apt-get download` fetches the .deb
# (verified against the signed package index) and `dpkg-deb -x` unpacks it into a scratch
# folder, from which only usr/bin/promtool is kept. Nothing is installed: no prometheus
# user, no service, no server left running. Root only to refresh a missing or stale apt
# index (apt-get update); otherwise any user who can write the cache folder.
#
# Idempotent: the binary lands in ${BGPD_CACHE:-/var/cache/bgpd}/promtool/bin/promtool
# (with the package version in ../version) and nothing is fetched when it is there and runs.
# Prints the binary's path last. Set PROMTOOL=/path/to/promtool to make the tests use
# another one instead (any promtool >= 2.42).
set -euo pipefail

CACHE="${BGPD_CACHE:-/var/cache/bgpd}"
OUT="$CACHE/promtool"
BIN="$OUT/bin/promtool"

log() { echo "promtool.sh: $*" >&2; }

if [[ -x "$BIN" ]] && "$BIN" --version >/dev/null 2>&1; then
    log "up to date: prometheus $(cat "$OUT/version" 2>/dev/null || echo '?')"
    echo "$BIN"
    exit 0
fi

for tool in apt-get apt-cache dpkg-deb; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        log "ERROR: $tool not found: this script takes promtool from Debian's prometheus package."
        log "Elsewhere, install promtool (https://prometheus.io/download/) and set PROMTOOL=/path/to/promtool."
        exit 2
    fi
done
candidate() { apt-cache policy prometheus 2>/dev/null | awk '$1 == "Candidate:" {print $2}'; }
version="$(candidate)"
if [[ -z "$version" || "$version" == "(none)" ]] && [[ $EUID == 0 ]]; then
    log "no prometheus package in apt's index: apt-get update"
    apt-get update -qq >&2
    version="$(candidate)"
fi
if [[ -z "$version" || "$version" == "(none)" ]]; then
    log "ERROR: no 'prometheus' package in apt's index (Debian >= 12): run apt-get update,"
    log "or install promtool yourself and set PROMTOOL=/path/to/promtool."
    exit 2
fi

start=$SECONDS
mkdir -p "$OUT"
tmp="$(mktemp -d "$OUT/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# apt downloads as the unprivileged _apt user when it can write the target folder.
chmod 755 "$tmp"
if id _apt >/dev/null 2>&1; then chown _apt "$tmp" 2>/dev/null || true; fi

log "downloading prometheus $version (Debian package, only promtool is kept)"
if ! (cd "$tmp" && apt-get download -q "prometheus=$version" >&2); then
    # A stale index names a version the mirror no longer has.
    [[ $EUID == 0 ]] || { log "ERROR: download failed: run apt-get update"; exit 2; }
    apt-get update -qq >&2
    version="$(candidate)"
    (cd "$tmp" && apt-get download -q "prometheus=$version" >&2)
fi
deb=("$tmp"/prometheus_*.deb)
dpkg-deb -x "${deb[0]}" "$tmp/root"
"$tmp/root/usr/bin/promtool" --version >/dev/null

mkdir -p "$OUT/bin"
install -m 755 "$tmp/root/usr/bin/promtool" "$BIN.new"
mv -f "$BIN.new" "$BIN"
echo "$version" >"$OUT/version"
log "done in $((SECONDS - start)) s: $("$BIN" --version 2>&1 | head -1)"
echo "$BIN"
