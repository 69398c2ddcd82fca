#!/usr/bin/env bash
# Start etcd + kube-apiserver (+ kube-controller-manager) v1.20.2 on 127.0.0.1.
# Adapted from shared/k8s-local/start-k8s120.sh.
# Env: RUN_DIR (state, pid files, logs, kubeconfig; default /tmp/unisondb-k8s120-run),
#      ETCD_PORT, PEER_PORT, API_PORT (default 2379/2380/6443), WITH_KCM (1 = start the controller-manager),
#      AUTHZ (--authorization-mode: AlwaysAllow by default, RBAC for permission tests),
#      K8S_BIN (default ~/.cache/unisondb-e2e/k8s-1.20.2/bin, filled by build-k8s120.sh).
# Writes $RUN_DIR/kubeconfig (static token `test-token`, system:masters).
set -euo pipefail
R=${RUN_DIR:-/tmp/unisondb-k8s120-run}
B=${K8S_BIN:-$HOME/.cache/unisondb-e2e/k8s-1.20.2/bin}
ETCD_PORT=${ETCD_PORT:-2379}; PEER_PORT=${PEER_PORT:-2380}; API_PORT=${API_PORT:-6443}
AUTHZ=${AUTHZ:-AlwaysAllow}
bins=(etcd kube-apiserver)
if [ "${WITH_KCM:-1}" = 1 ]; then bins+=(kube-controller-manager); fi
for bin in "${bins[@]}"; do
  if [ ! -x "$B/$bin" ]; then
    echo "missing $B/$bin: run e2e/k8s/install-deps.sh (or e2e/k8s/build-k8s120.sh) first" >&2; exit 2
  fi
done
P=$R/pki
mkdir -p "$P"; cd "$P"
if [ ! -f sa.key ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=test-ca" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
  printf "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc,IP:10.0.0.1\nextendedKeyUsage=serverAuth\n" > ext.cnf
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 3650 -extfile ext.cnf 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  echo "test-token,admin,admin,system:masters" > tokens.csv
fi
cd "$R"
for port in $ETCD_PORT $PEER_PORT $API_PORT; do
  if ss -ltn | awk '{print $4}' | grep -q ":$port\$"; then echo "port $port already in use" >&2; exit 1; fi
done
rm -rf "$R/etcd-data"
"$B/etcd" --name t --data-dir "$R/etcd-data" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-cluster "t=http://127.0.0.1:$PEER_PORT" > "$R/etcd.log" 2>&1 &
echo $! > "$R/etcd.pid"
until curl -sf "http://127.0.0.1:$ETCD_PORT/health" >/dev/null; do kill -0 "$(cat "$R/etcd.pid")"; sleep 0.1; done
"$B/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
  --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" --client-ca-file="$P/ca.crt" \
  --token-auth-file="$P/tokens.csv" --authorization-mode="$AUTHZ" \
  --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$P/sa.pub" \
  --service-account-signing-key-file="$P/sa.key" --service-cluster-ip-range=10.0.0.0/24 \
  --endpoint-reconciler-type=none --allow-privileged=true --cert-dir="$R/certs" > "$R/apiserver.log" 2>&1 &
echo $! > "$R/apiserver.pid"
cat > "$R/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority: $P/ca.crt}}]
users: [{name: admin, user: {token: test-token}}]
contexts: [{name: local, context: {cluster: local, user: admin}}]
current-context: local
KC
until [ "$(curl -s --cacert "$P/ca.crt" -H 'Authorization: Bearer test-token' "https://127.0.0.1:$API_PORT/readyz")" = ok ]; do
  kill -0 "$(cat "$R/apiserver.pid")"; sleep 0.1; done
if [ "${WITH_KCM:-1}" = 1 ]; then
  "$B/kube-controller-manager" --kubeconfig="$R/kubeconfig" --leader-elect=false --port=0 --secure-port=0 \
    --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
    --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
    --controllers='*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-route,-service' > "$R/kcm.log" 2>&1 &
  echo $! > "$R/kcm.pid"
fi
echo "ready: export KUBECONFIG=$R/kubeconfig"
