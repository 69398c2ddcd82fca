#!/usr/bin/env bash
# Python side of the loopback e2e tests: a venv with pyzmq (ZeroMQ subscribers) and redis-py (a
# real client of the RESP listener, keyspace notifications included), and moto_server (S3). Idempotent.
set -euo pipefail
VENV="${UNISONDB_E2E_VENV:-$HOME/.cache/unisondb-e2e/venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import zmq" >/dev/null 2>&1; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check pyzmq
fi
if ! "$VENV/bin/python" -c "import redis" >/dev/null 2>&1; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check redis
fi
# moto in server mode: the S3-compatible server the object-storage tests start on loopback
# (node/tests/object_store.rs; see docs/BACKUP.md for why moto).
if [ ! -x "$VENV/bin/moto_server" ]; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'moto[server]'
fi
"$VENV/bin/python" -c "import zmq; print('pyzmq', zmq.__version__, 'libzmq', zmq.zmq_version())"
