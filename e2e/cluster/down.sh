#!/usr/bin/env bash
# Tear down what up.sh started (same env) and leave the machine clean for the next run: processes by pid
# file only, pods through CRI, then iptables chains (KUBE-*, CNI-*), the bridge, netns, mounts, cgroups,
# sysctls and the state dirs. Safe to run twice, and after a half-finished up.sh.
D=$(cd "$(dirname "$0")" && pwd)
CACHE=${K8S_CACHE:-${UNISONDB_E2E_CACHE:-$HOME/.cache/unisondb-e2e}/k8s-1.20.2}
B=${K8S_BIN:-$CACHE/bin}
export RUN_DIR=${RUN_DIR:-/tmp/unisondb-cluster/cp}; P=${P:-/tmp/unisondb-cluster/node}
KC=$RUN_DIR/kubeconfig; K="kubectl --kubeconfig=$KC --request-timeout=5s"
BRIDGE=unisondb0
CTR="ctr -a $P/ctd/containerd.sock -n k8s.io"
stop() {
  [ -f $P/$1.pid ] || return 0
  local pid; pid=$(cat $P/$1.pid)
  kill $pid 2>/dev/null
  for _ in $(seq 50); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
  kill -9 $pid 2>/dev/null; rm -f $P/$1.pid
}
# stop controllers first so deleted pods are not recreated
if [ -f $RUN_DIR/kcm.pid ]; then kill $(cat $RUN_DIR/kcm.pid) 2>/dev/null; rm -f $RUN_DIR/kcm.pid; fi
stop scheduler; stop pv-provisioner
# let the kubelet tear pods down through CRI (runs CNI DEL, removes netns/veth/IPAM)
if [ -f $P/kubelet.pid ] && [ -f $KC ]; then
  $K delete pods --all -A --grace-period=0 --force >/dev/null 2>&1 || true
  for _ in $(seq 100); do [ -z "$($CTR task ls -q 2>/dev/null)" ] && break; sleep 0.2; done
fi
for p in dns-sync dnsmasq socat kube-proxy kubelet; do stop $p; done
# anything left (e.g. if the kubelet was already gone): kill tasks directly, remove sandboxes
if [ -S $P/ctd/containerd.sock ]; then
  for t in $($CTR task ls -q 2>/dev/null); do $CTR task kill -s KILL $t 2>/dev/null; done; sleep 1
  for t in $($CTR task ls -q 2>/dev/null); do $CTR task rm -f $t 2>/dev/null; done
fi
stop containerd; sleep 0.5
# containerd-shim processes of our containerd (their -address names our socket)
for pid in $(pgrep -f "containerd-shim.*-address $P/ctd/containerd.sock" 2>/dev/null); do kill -9 $pid 2>/dev/null; done
bash $D/../k8s/stop-k8s120.sh
[ -x $B/kube-proxy ] && $B/kube-proxy --cleanup >/dev/null 2>&1
# CNI bridge plugin leftovers: masquerade chains
for c in $(iptables -t nat -S 2>/dev/null | awk '/^-N CNI-/{print $2}'); do
  iptables -t nat -S POSTROUTING | grep -- "-j $c" | sed 's/^-A/-D/' | while read -r l; do eval iptables -t nat $l; done; done
for c in $(iptables -t nat -S 2>/dev/null | awk '/^-N CNI-/{print $2}'); do iptables -t nat -F $c; iptables -t nat -X $c; done
# portmap plugin chains
for t in nat filter; do
  for c in $(iptables -t $t -S 2>/dev/null | awk '/^-N CNI-/{print $2}'); do
    iptables -t $t -S | grep -E "^-A [A-Z]+ .*-j $c( |$)" | sed 's/^-A/-D/' | while read -r l; do eval iptables -t $t $l; done
    iptables -t $t -F $c; iptables -t $t -X $c; done
done
# chains the kubelet itself owns (KUBE-FIREWALL, KUBE-MARK-*, KUBE-KUBELET-CANARY, ...)
for t in filter nat mangle; do
  iptables -t $t -S 2>/dev/null | grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j KUBE-' | sed 's/^-A/-D/' | while read -r l; do eval iptables -t $t $l; done
  for c in $(iptables -t $t -S 2>/dev/null | awk '/^-N KUBE-/{print $2}'); do iptables -t $t -F $c; done
  for c in $(iptables -t $t -S 2>/dev/null | awk '/^-N KUBE-/{print $2}'); do iptables -t $t -X $c; done
done
ip link del $BRIDGE 2>/dev/null
for n in /run/netns/cni-*; do [ -e "$n" ] && { umount "$n" 2>/dev/null; rm -f "$n"; }; done
rmdir /run/netns 2>/dev/null  # containerd creates it; harmless if it goes
# mounts under $P (secret tmpfs, overlay rootfs, shm), cgroups, hard-coded kubelet paths
mount | awk -v p="$P/" 'index($3, p)==1 {print $3}' | sort -r | xargs -r -n1 umount -l
for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do for g in kubepods kubepods.slice k8s.io; do
  [ -d $h$g ] && find $h$g -depth -type d -exec rmdir {} \; 2>/dev/null; done; done
rm -rf /var/lib/kubelet /var/log/pods /var/log/containers
[ -d /run/containerd ] && find /run/containerd -depth -type d -empty -delete
# sysctls changed by the bridge plugin (ip_forward) and kube-proxy (route_localnet)
[ -f $P/sysctl.orig ] && while read -r f v; do echo $v > $f 2>/dev/null; done < $P/sysctl.orig
# state (PV data, images, logs) unless KEEP_CLUSTER_STATE=1 (e.g. to read logs after a failure)
if [ "${KEEP_CLUSTER_STATE:-0}" != 1 ]; then rm -rf "$P" "$RUN_DIR"; fi
true
