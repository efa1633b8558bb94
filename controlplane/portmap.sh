#!/usr/bin/env bash
# Builds the CNI portmap plugin at one release from its Go module into a
# cache, once per release, and prints the directory holding `portmap`.
# The real-node tests run Debian's portmap and these: before 0.9 (no flush
# on ADD: the classical stale entry) and 1.10 (flushes on ADD and DEL).
set -euo pipefail
version="${1:?usage: portmap.sh vX.Y.Z}"
cache="${FLUSH_CONNTRACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flush-conntrack}/portmap-${version}"
if [ -x "$cache/portmap" ]; then
  echo "$cache"
  exit 0
fi
mkdir -p "$cache.partial"
echo "building CNI portmap ${version} into $cache (once)" >&2
GOBIN="$cache.partial" GOFLAGS=-mod=mod CGO_ENABLED=0 \
  go install -trimpath -ldflags "-s -w" "github.com/containernetworking/plugins/plugins/meta/portmap@${version}" >&2
rm -rf "$cache" && mv "$cache.partial" "$cache"
echo "$cache"
