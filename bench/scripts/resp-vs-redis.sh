#!/usr/bin/env bash
# The RESP listener against Redis in one run, with UnisonDB's own redis-benchmark settings
# (-d 1000 -c 10, and -P 10): us with wal.fsync: interval, Redis with appendonly yes /
# appendfsync everysec (the fair durability peer) and Redis without persistence. Prints requests
# per second and our ratio to each Redis. Needs redis-server and redis-benchmark (redis-tools),
# and a release build: cargo build --release -p unisondb-node.
#
# usage: bench/scripts/resp-vs-redis.sh [ROUNDS]   (default 3; the median of the rounds is printed)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${UNISONDB_BIN:-target/release/unisondb}
ROUNDS=${1:-3}
DIR=$(mktemp -d)
trap 'kill $NODE 2>/dev/null || true; redis-cli -p 16380 shutdown nosave >/dev/null 2>&1 || true; redis-cli -p 16381 shutdown nosave >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT
cat > "$DIR/node.yaml" <<YAML
server: {data_dir: $DIR/data, namespaces: [default]}
http: {listen: 127.0.0.1:16390}
grpc: {listen: 127.0.0.1:16391}
notify: {bind: "tcp://127.0.0.1:16392"}
wal: {fsync: interval}
resp: {listen: 127.0.0.1:16379}
YAML
"$BIN" server --config "$DIR/node.yaml" >"$DIR/node.log" 2>&1 & NODE=$!
redis-server --port 16380 --appendonly yes --appendfsync everysec --save "" --dir "$DIR" --daemonize yes --logfile "$DIR/aof.log"
redis-server --port 16381 --appendonly no --save "" --dir "$DIR" --daemonize yes --logfile "$DIR/mem.log"
for p in 16379 16380 16381; do until redis-cli -p $p ping >/dev/null 2>&1; do sleep 0.2; done; done

# rps PORT TEST PIPELINE -> requests per second
rps() {
  redis-benchmark -p "$1" -t "$2" -n "$4" -d 1000 -c 10 -P "$3" -q 2>/dev/null | tr '\r' '\n' \
    | awk -v t="$(echo "$2" | tr a-z A-Z)" '$1 == t":" {print $2}' | tail -1
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf "%-8s %-4s %12s %12s %12s %8s %8s\n" test P unisondb redis-aof redis-mem vs-aof vs-mem
for pipe in 1 10; do
  n=$(( pipe == 1 ? 50000 : 200000 ))
  for t in set get; do
    declare -A r=()
    for p in 16379 16380 16381; do
      r[$p]=$(for _ in $(seq "$ROUNDS"); do rps $p $t $pipe $n; done | median)
    done
    printf "%-8s %-4s %12.0f %12.0f %12.0f %8.2f %8.2f\n" "$t" "$pipe" "${r[16379]}" "${r[16380]}" "${r[16381]}" \
      "$(echo "${r[16379]} / ${r[16380]}" | bc -l)" "$(echo "${r[16379]} / ${r[16381]}" | bc -l)"
  done
done
