#!/usr/bin/env bash
# Stop what start-k8s120.sh launched in $RUN_DIR, by pid file.
R=${RUN_DIR:-/tmp/unisondb-k8s120-run}
for p in kcm apiserver etcd; do
  if [ -f "$R/$p.pid" ]; then
    pid=$(cat "$R/$p.pid")
    kill "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
    rm -f "$R/$p.pid"
  fi
done
true
