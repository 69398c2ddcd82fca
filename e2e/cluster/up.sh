#!/usr/bin/env bash
# A real single-node Kubernetes v1.20.2 cluster without Docker, for e2e/tests/cluster_e2e.rs.
# Adapted from shared/k8s-local/node/up.sh: etcd + kube-apiserver + kube-controller-manager
# (e2e/k8s/start-k8s120.sh), kube-scheduler, containerd + runc, kubelet, kube-proxy (iptables),
# a CNI bridge, cluster DNS (dnsmasq fed by dns-sync.py), plus a hostPath PV provisioner
# (pv-provisioner.py) behind a default StorageClass so StatefulSet volumeClaimTemplates bind.
# Images come from no registry: mkimage.py docker-archives imported with `ctr image import`.
# Env: RUN_DIR (control plane, default /tmp/unisondb-cluster/cp), P (node state, default /tmp/unisondb-cluster/node),
#      API_PORT (default 6443; API_PORT+1 is the in-cluster relay), ETCD_PORT, PEER_PORT,
#      K8S_BIN / K8S_CACHE (binaries from e2e/k8s/install-deps.sh).
# Prints `ready: export KUBECONFIG=...` when the node is Ready. Tear down with down.sh (same env).
set -euo pipefail
D=$(cd "$(dirname "$0")" && pwd)
CACHE=${K8S_CACHE:-${UNISONDB_E2E_CACHE:-$HOME/.cache/unisondb-e2e}/k8s-1.20.2}
export K8S_BIN=${K8S_BIN:-$CACHE/bin}; B=$K8S_BIN
export RUN_DIR=${RUN_DIR:-/tmp/unisondb-cluster/cp}; P=${P:-/tmp/unisondb-cluster/node}
export API_PORT=${API_PORT:-6443} ETCD_PORT=${ETCD_PORT:-2379} PEER_PORT=${PEER_PORT:-2380}
KC=$RUN_DIR/kubeconfig; K="kubectl --kubeconfig=$KC"
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
  [ -x "$B/$b" ] || { echo "missing $B/$b: run e2e/cluster/install-deps.sh" >&2; exit 2; }; done
[ -f "$CACHE/pause.c" ] || { echo "missing $CACHE/pause.c: run e2e/cluster/install-deps.sh" >&2; exit 2; }
for c in containerd runc ctr iptables conntrack dnsmasq socat busybox gcc kubectl; do
  command -v $c >/dev/null || { echo "missing $c: run e2e/cluster/install-deps.sh" >&2; exit 2; }; done
[ -x /usr/lib/cni/bridge ] || { echo "missing CNI plugins: run e2e/cluster/install-deps.sh" >&2; exit 2; }
NODE=$(hostname); NODE_IP=$(ip -4 route get 1.1.1.1 | awk '{for(i=1;i<NF;i++) if($i=="src") print $(i+1)}')
POD_CIDR=10.244.0.0/24; GW=10.244.0.1; DNS_IP=10.0.0.10; BRIDGE=unisondb0
UPSTREAM_DNS=$(awk '/^nameserver/{print $2; exit}' /etc/resolv.conf)
mkdir -p $P/{ctd/root,ctd/state,cni/net.d,cni/ipam,img,kubelet/root,kubelet/certs,dns/hosts,logs,pv}
bg() { local name=$1; shift; nohup "$@" > $P/logs/$name.log 2>&1 & echo $! > $P/$name.pid; }
# sysctls we (the bridge plugin, kube-proxy) change; down.sh restores them
: > $P/sysctl.orig
for f in /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/all/route_localnet /proc/sys/net/bridge/bridge-nf-call-iptables; do
  [ -f $f ] && echo "$f $(cat $f)" >> $P/sysctl.orig; done
echo 1 > /proc/sys/net/ipv4/ip_forward

# 1. containerd (private root/state/socket; restrict_oom_score_adj: we lack CAP_SYS_RESOURCE)
containerd config default | sed -e "s#^root = .*#root = \"$P/ctd/root\"#" -e "s#^state = .*#state = \"$P/ctd/state\"#" \
  -e "s#address = \"/run/containerd/containerd.sock\"#address = \"$P/ctd/containerd.sock\"#" \
  -e "s#sandbox_image = .*#sandbox_image = \"localhost/pause:local\"#" -e "s#bin_dir = \"/opt/cni/bin\"#bin_dir = \"/usr/lib/cni\"#" \
  -e "s#conf_dir = \"/etc/cni/net.d\"#conf_dir = \"$P/cni/net.d\"#" -e "s#restrict_oom_score_adj = false#restrict_oom_score_adj = true#" \
  > $P/ctd/config.toml
cat > $P/cni/net.d/10-local.conflist <<CNI
{"cniVersion": "0.4.0", "name": "local", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$P/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
CNI
bg containerd containerd --config $P/ctd/config.toml
until [ -S $P/ctd/containerd.sock ]; do kill -0 $(cat $P/containerd.pid); sleep 0.1; done
CTR="ctr -a $P/ctd/containerd.sock -n k8s.io"

# 2. images without a registry (docker-archive tarballs written by mkimage.py)
gcc -Os -static -DVERSION=local -o $P/img/pause $CACHE/pause.c
python3 $D/mkimage.py $P/img/pause.tar localhost/pause:local '["/pause"]' /pause=$P/img/pause >/dev/null
specs="/bin/busybox=/bin/busybox"; for a in $(/bin/busybox --list); do [ $a = busybox ] || specs="$specs /bin/$a->busybox"; done
python3 $D/mkimage.py $P/img/busybox.tar localhost/busybox:local '["/bin/sh"]' $specs /root/ >/dev/null
$CTR image import $P/img/pause.tar >/dev/null; $CTR image import $P/img/busybox.tar >/dev/null

# 3. control plane (etcd, apiserver, kcm) + scheduler
bash $D/../k8s/start-k8s120.sh >/dev/null
bg scheduler $B/kube-scheduler --kubeconfig=$KC --leader-elect=false --port=0 --secure-port=0

# 4. kubelet
cat > $P/kubelet/config.yaml <<KCFG
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failSwapOn: false
clusterDomain: cluster.local
clusterDNS: ["$DNS_IP"]
readOnlyPort: 0
nodeStatusUpdateFrequency: 2s
# Mounted Secrets/ConfigMaps are refreshed on the pod sync period (default 1m): the certificate
# rotation step waits for it.
syncFrequency: 10s
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
KCFG
bg kubelet $B/kubelet --kubeconfig=$KC --config=$P/kubelet/config.yaml --root-dir=$P/kubelet/root --cert-dir=$P/kubelet/certs \
  --container-runtime=remote --container-runtime-endpoint=unix://$P/ctd/containerd.sock --node-ip=$NODE_IP

# 5. kube-proxy (iptables)
bg kube-proxy $B/kube-proxy --kubeconfig=$KC --proxy-mode=iptables --cluster-cidr=$POD_CIDR --hostname-override=$NODE \
  --conntrack-max-per-core=0 --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256

# 6. in-cluster API access: apiserver listens on 127.0.0.1 with --endpoint-reconciler-type=none -> relay + manual Endpoints
bg socat socat TCP-LISTEN:$((API_PORT+1)),bind=$NODE_IP,fork,reuseaddr TCP:127.0.0.1:$API_PORT

# 7. cluster DNS: dnsmasq on the bridge gateway, fed by a 1s API poller, behind Service kube-dns
bg dns-sync python3 $D/dns-sync.py https://127.0.0.1:$API_PORT test-token $RUN_DIR/pki/ca.crt $P/dns/hosts/k8s
bg dnsmasq dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --server=$UPSTREAM_DNS --local=/cluster.local/ \
  --hostsdir=$P/dns/hosts --listen-address=$GW --bind-dynamic --user=root --pid-file=
cat <<YAML | $K apply -f - >/dev/null
apiVersion: v1
kind: Endpoints
metadata: {name: kubernetes, namespace: default}
subsets: [{addresses: [{ip: $NODE_IP}], ports: [{name: https, port: $((API_PORT+1)), protocol: TCP}]}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec: {clusterIP: $DNS_IP, ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: kube-dns, namespace: kube-system}
subsets: [{addresses: [{ip: $GW}], ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]}]
YAML

# 8. storage: a default StorageClass served by pv-provisioner.py (hostPath dirs under $P/pv)
cat <<YAML | $K apply -f - >/dev/null
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-hostpath
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: unisondb.io/e2e-hostpath
reclaimPolicy: Delete
volumeBindingMode: Immediate
allowVolumeExpansion: true
YAML
bg pv-provisioner python3 $D/pv-provisioner.py https://127.0.0.1:$API_PORT test-token $RUN_DIR/pki/ca.crt $P/pv unisondb.io/e2e-hostpath

# 9. wait for the node; nodelifecycle controller is off, so drop the registration taint ourselves
for _ in $(seq 600); do
  [ "$($K get node $NODE -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ] && break
  kill -0 $(cat $P/kubelet.pid) || { echo "kubelet exited: $(tail -20 $P/logs/kubelet.log)" >&2; exit 1; }
  sleep 0.5; done
[ "$($K get node $NODE -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ] || { echo "node not Ready in 300s" >&2; exit 1; }
$K taint nodes $NODE node.kubernetes.io/not-ready:NoSchedule- >/dev/null 2>&1 || true
until $K get sa default >/dev/null 2>&1; do sleep 0.2; done
echo "ready: export KUBECONFIG=$KC"
