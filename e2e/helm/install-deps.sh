#!/usr/bin/env bash
# Installs what the Helm / Kubernetes packaging tests (e2e/tests/helm_*.rs, k8s_packaging.rs) need.
# Idempotent and quick when done; run by scripts/install-deps.sh (which runs every e2e/*/install-deps.sh).
#  - a Python venv shared by every e2e installer: ~/.cache/unisondb-e2e/venv (created only if missing)
#  - helm-python-sdk==0.2.2 (Helm v4 Go SDK as a wheel: lint, template, install) in it
#    (YAML is parsed by the Rust tests themselves, serde_yaml_ng: no pyyaml)
#  - kubectl (Debian's kubernetes-client when no kubectl is on PATH)
# The kube-apiserver/etcd binaries come from e2e/k8s/install-deps.sh (the operator's e2e); the
# apiserver tests fail with a message naming it when they are missing.
set -euo pipefail
CACHE="${UNISONDB_E2E_CACHE:-$HOME/.cache/unisondb-e2e}"
VENV="$CACHE/venv"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "e2e/helm: installing apt packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}
mkdir -p "$CACHE"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$VENV"; }
fi
if ! "$VENV/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("helm-python-sdk") != "0.2.2")' 2>/dev/null; then
  "$VENV/bin/pip" install -q "helm-python-sdk==0.2.2"
fi
command -v kubectl >/dev/null 2>&1 || apt_install kubernetes-client
# openssl/curl/ss are used to start the test apiserver
command -v openssl >/dev/null 2>&1 || apt_install openssl
command -v curl >/dev/null 2>&1 || apt_install curl
command -v ss >/dev/null 2>&1 || apt_install iproute2
echo "e2e/helm: ready (venv $VENV, $("$VENV/bin/python" -c 'import importlib.metadata as m; print("helm-python-sdk", m.version("helm-python-sdk"))'), kubectl $(command -v kubectl))"
