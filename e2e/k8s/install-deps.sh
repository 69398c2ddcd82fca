#!/usr/bin/env bash
# Idempotent: installs what the Kubernetes e2e needs and builds kube-apiserver/controller-manager
# v1.20.2 (+ etcd from Debian's etcd-server package) into the cache when absent. Run as root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
need=()
for cmd in openssl curl ss make rsync; do command -v "$cmd" >/dev/null 2>&1 || need+=("$cmd"); done
# kubectl ships on our machines; elsewhere Debian's kubernetes-client provides it.
command -v kubectl >/dev/null 2>&1 || need+=(kubernetes-client)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # ss comes from iproute2
  pkgs=(openssl curl ca-certificates iproute2 make rsync)
  command -v kubectl >/dev/null 2>&1 || pkgs+=(kubernetes-client)
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi
"$here/build-k8s120.sh"
