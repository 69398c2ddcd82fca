#!/usr/bin/env bash
# Idempotent: installs what the full-stack cluster e2e (e2e/tests/cluster_e2e.rs) needs. Run as root.
#  - Debian packages: containerd, runc, CNI plugins, iptables, conntrack, dnsmasq, socat, busybox, gcc
#    (the pause image), tini (the image's init, as in the Dockerfile), prometheus (scenario step 7),
#    buildah + mmdebstrap (the test builds the Dockerfile: e2e/image/build.sh), binutils (readelf)
#  - the Kubernetes v1.20.2 binaries (apiserver, controller-manager, scheduler, kubelet, kube-proxy)
#    and etcd, built and cached by e2e/k8s/install-deps.sh (that script also runs on its own)
#  - the shared venv ~/.cache/unisondb-e2e/venv with pyzmq (the ZeroMQ subscriber) and helm-python-sdk
#    (e2e/helm/install-deps.sh owns the latter; both run from scripts/install-deps.sh)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CACHE="${UNISONDB_E2E_CACHE:-$HOME/.cache/unisondb-e2e}"
VENV="$CACHE/venv"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
PKGS=(containerd runc containernetworking-plugins iptables conntrack dnsmasq-base socat busybox-static gcc libc6-dev
      tini prometheus python3-venv iproute2 openssl curl buildah mmdebstrap binutils)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
if [ ${#missing[@]} -gt 0 ]; then
  echo "e2e/cluster: installing apt packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's prometheus package starts a system service on install; the test runs its own instance.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  $SUDO systemctl stop prometheus || true
fi
mkdir -p "$CACHE"
if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
"$VENV/bin/python" -c 'import zmq' 2>/dev/null || "$VENV/bin/pip" install -q pyzmq
# control plane + node binaries (skipped when cached)
bash "$here/../k8s/install-deps.sh"
echo "e2e/cluster: ready"
