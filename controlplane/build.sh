#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and
# etcd from their Go
# modules (k8s.io/kubernetes at the release go.mod pins, staging modules at
# the same release) into a cache, once per release: later runs reuse them.
# Prints the directory holding the binaries.
set -euo pipefail
cd "$(dirname "$0")"
release=$(awk '$1 == "k8s.io/kubernetes" || ($1 == "require" && $2 == "k8s.io/kubernetes") {print $NF; exit}' go.mod)
[ -n "$release" ] || { echo "controlplane/go.mod requires no k8s.io/kubernetes release" >&2; exit 1; }
cache="${FLUSH_CONNTRACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flush-conntrack}/controlplane-${release}"
complete=true
for bin in kube-apiserver kube-controller-manager kube-scheduler kubelet etcd; do
  [ -x "$cache/$bin" ] || complete=false
done
if $complete; then
  echo "$cache"
  exit 0
fi
mkdir -p "$cache.partial"
echo "building the control plane ${release} into $cache (once; several minutes)" >&2
go build -trimpath -ldflags "-s -w" -o "$cache.partial/" ./cmd/... >&2
rm -rf "$cache" && mv "$cache.partial" "$cache"
echo "$cache"
