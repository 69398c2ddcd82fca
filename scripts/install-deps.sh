#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine. Idempotent and quick when done.
# Used by ./test.sh (the README's test command) and therefore by CI.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need_apt=()
# Debian packages the tests use (each listed with why).
APT_PACKAGES=(
  python3-venv   # the Python venv for pyzmq / Helm SDK test clients
  pkg-config     # -sys crates
  g++            # zmq-sys compiles the bundled libzmq (C++) via zeromq-src
  redis-tools    # redis-cli and redis-benchmark, real clients of the RESP listener (node/tests/resp.rs)
  iproute2       # `ip netns`/veth/bridge: network-namespace fault tests (replication_netns.rs, raft_netns.rs)
  iptables       # partitions inside a namespace (node/tests/raft_netns.rs)
)
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing apt packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

# Optional parts add their own installers here as they land (e2e/*/install-deps.sh).
for extra in e2e/*/install-deps.sh; do
  [ -f "$extra" ] || continue
  echo "running $extra"
  bash "$extra"
done
