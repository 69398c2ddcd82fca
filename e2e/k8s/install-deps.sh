#!/usr/bin/env bash
# Idempotent: installs what the Kubernetes e2e needs and builds kube-apiserver/controller-manager
# v1.20.2 (+ etcd from Debian's etcd-server package) into the cache when absent. Run as root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
need=()
for cmd in openssl curl ss make rsync; do command -v "$cmd" >/dev/null 2>&1 || need+=("$cmd"); done
command -v kubectl >/dev/null 2>&1 || need+=(kubectl)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # ss comes from iproute2
  apt-get install -y -qq --no-install-recommends openssl curl ca-certificates iproute2 make rsync kubectl >/dev/null
fi
"$here/build-k8s120.sh"
