#!/usr/bin/env bash
# Build real Kubernetes v1.20.2 binaries (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
# kube-proxy) from Debian's `kubernetes` source package (Go 1.19 from Debian) and take etcd 3.4 from Debian's
# `etcd-server` package. Also caches build/pause/linux/pause.c (the pause image of e2e/cluster). Run as root.
# Adapted from shared/k8s-local/build-k8s120.sh. Binaries are cached under $K8S_CACHE (default
# ~/.cache/unisondb-e2e/k8s-1.20.2/bin); when they are all present the build is skipped.
set -euo pipefail
CACHE=${K8S_CACHE:-$HOME/.cache/unisondb-e2e/k8s-1.20.2}
BIN=$CACHE/bin
K8S_BINS="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy"
missing=0
for b in $K8S_BINS etcd; do [ -x "$BIN/$b" ] || missing=1; done
[ -f "$CACHE/pause.c" ] || missing=1
if [ "$missing" = 0 ]; then
  echo "k8s 1.20.2 binaries already cached in $BIN"; exit 0
fi
W=${K8S_BUILD_DIR:-/tmp/unisondb-k8s120-build}
mkdir -p "$W"/debs "$W"/root "$W"/apt/lists/partial "$BIN"
cd "$W"
apt-get update -qq
apt-get install -y -qq --no-install-recommends make rsync openssl curl ca-certificates iproute2 >/dev/null
# 1. the Debian source package (full upstream tree incl. vendor/), via a private deb-src list
echo "deb-src http://deb.debian.org/debian bookworm main" > apt/sources.list
A="-o Dir::Etc::SourceList=$W/apt/sources.list -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists=$W/apt/lists"
apt-get $A update -qq
(cd debs && apt-get $A source --download-only kubernetes 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
rm -rf kubernetes-1.20.2 && tar xzf debs/kubernetes_*really1.20.2.orig.tar.gz
# 2. Go 1.19, etcd 3.4, reflect2 1.0.2 -- extracted into $W/root, not installed
(cd debs && apt-get download golang-1.19-go golang-1.19-src etcd-server golang-github-modern-go-reflect2-dev 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
for d in debs/*.deb; do dpkg -x "$d" root; done
export GOROOT=$W/root/usr/lib/go-1.19 PATH=$W/root/usr/lib/go-1.19/bin:$PATH
cd kubernetes-1.20.2
# vendored reflect2 v1.0.1 predates Go 1.18 (apiserver SIGSEGVs on the first JSON watch); use Debian's 1.0.2
rm -rf vendor/github.com/modern-go/reflect2 && mkdir -p vendor/github.com/modern-go/reflect2
cp "$W"/root/usr/share/gocode/src/github.com/modern-go/reflect2/*.go "$W"/root/usr/share/gocode/src/github.com/modern-go/reflect2/*.s vendor/github.com/modern-go/reflect2/
rm -f vendor/github.com/modern-go/reflect2/*_test.go
# 3. build the control plane (operator e2e) and the node components (e2e/cluster)
make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet cmd/kube-proxy"
for b in $K8S_BINS; do install -m 0755 "_output/bin/$b" "$BIN"/; done
install -m 0755 "$W"/root/usr/bin/etcd "$BIN"/
install -m 0644 build/pause/linux/pause.c "$CACHE"/pause.c
ls -la "$BIN"
# the build tree (~2 GB incl. Go cache) is no longer needed
[ "${KEEP_BUILD:-0}" = 1 ] || rm -rf "$W"
