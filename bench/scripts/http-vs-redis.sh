#!/usr/bin/env bash
# The HTTP API against Redis in one run, with a C load generator on both sides: `wrk` (10
# connections, 2 threads, a Lua script for PUT bodies) against our HTTP API with wal.fsync:
# interval, and redis-benchmark (-c 10 -d 1000) against Redis with appendonly yes / appendfsync
# everysec (the fair durability peer) and without persistence. 1000-byte values (base64 in JSON for
# us, as the API requires), keys drawn from 100,000. Prints requests per second, the ratios, and our
# server's CPU time per request (utime + stime from /proc, which noise on a shared machine cannot blur).
# Needs wrk, redis-server, redis-benchmark (apt-get install wrk redis-server redis-tools) and a
# release build: cargo build --release -p unisondb-node --bin unisondb.
#
# usage: bench/scripts/http-vs-redis.sh [SECONDS]   (default 10 per phase)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${UNISONDB_BIN:-target/release/unisondb}
SECS=${1:-10}
DIR=$(mktemp -d)
trap 'kill $NODE 2>/dev/null || true; redis-cli -p 16480 shutdown nosave >/dev/null 2>&1 || true; redis-cli -p 16481 shutdown nosave >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT
cat > "$DIR/node.yaml" <<YAML
server: {data_dir: $DIR/data, namespaces: [default]}
http: {listen: 127.0.0.1:16490}
grpc: {listen: 127.0.0.1:16491}
notify: {bind: "tcp://127.0.0.1:16492"}
wal: {fsync: interval}
YAML
"$BIN" server --config "$DIR/node.yaml" >"$DIR/node.log" 2>&1 & NODE=$!
redis-server --port 16480 --appendonly yes --appendfsync everysec --save "" --dir "$DIR" --daemonize yes --logfile "$DIR/aof.log"
redis-server --port 16481 --appendonly no --save "" --dir "$DIR" --daemonize yes --logfile "$DIR/mem.log"
for p in 16480 16481; do until redis-cli -p $p ping >/dev/null 2>&1; do sleep 0.2; done; done
until curl -sf http://127.0.0.1:16490/readyz >/dev/null; do sleep 0.2; done

VALUE=$(head -c 1000 /dev/urandom | base64 -w0)
cat > "$DIR/put.lua" <<LUA
local body = '{"value":"$VALUE"}'
local headers = { ["Content-Type"] = "application/json" }
request = function()
  return wrk.format("PUT", "/api/v1/default/kv/k" .. math.random(1, 100000), headers, body)
end
LUA
cat > "$DIR/get.lua" <<'LUA'
request = function()
  return wrk.format("GET", "/api/v1/default/kv/k" .. math.random(1, 100000))
end
LUA

ticks() { awk '{print $14 + $15}' "/proc/$NODE/stat"; }
HZ=$(getconf CLK_TCK)
# ours SCRIPT -> "requests/s cpu-us-per-request"
ours() {
  local t0 out reqs t1
  t0=$(ticks)
  out=$(wrk -t2 -c10 -d"${SECS}s" -s "$DIR/$1" http://127.0.0.1:16490)
  t1=$(ticks)
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  # GETs of keys the PUT phase did not reach answer 404 (counted as non-2xx by wrk).
  echo "$(echo "$out" | awk '/Requests\/sec/ {print $2}') $(echo "($t1 - $t0) * 1000000 / $HZ / $reqs" | bc -l)"
}
# redis PORT TEST -> requests/s
redis() {
  local n=$(( SECS * 40000 ))
  redis-benchmark -p "$1" -t "$2" -n "$n" -r 100000 -d 1000 -c 10 -q 2>/dev/null | tr '\r' '\n' \
    | awk -v t="$(echo "$2" | tr a-z A-Z)" '$1 == t":" {print $2}' | tail -1
}

read -r put put_cpu < <(ours put.lua)
read -r get get_cpu < <(ours get.lua)
set_aof=$(redis 16480 set); get_aof=$(redis 16480 get)
set_mem=$(redis 16481 set); get_mem=$(redis 16481 get)
printf "%-10s %12s %12s %12s %8s %8s %14s\n" op unisondb redis-aof redis-mem vs-aof vs-mem "our CPU us/req"
printf "%-10s %12.0f %12.0f %12.0f %8.2f %8.2f %14.1f\n" PUT/SET "$put" "$set_aof" "$set_mem" \
  "$(echo "$put / $set_aof" | bc -l)" "$(echo "$put / $set_mem" | bc -l)" "$put_cpu"
printf "%-10s %12.0f %12.0f %12.0f %8.2f %8.2f %14.1f\n" GET "$get" "$get_aof" "$get_mem" \
  "$(echo "$get / $get_aof" | bc -l)" "$(echo "$get / $get_mem" | bc -l)" "$get_cpu"
