#!/usr/bin/env bash
# Refreshes the generated packaging files after a CRD or chart change:
#  1. charts/unisondb-operator/files/crds/*.yaml  <- crds/*.yaml (the operator's generated CRDs)
#  2. deploy/operator.yaml                        <- the chart rendered with defaults
# The tests (cargo test -p unisondb-e2e) fail while either is stale.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${UNISONDB_E2E_CACHE:-$HOME/.cache/unisondb-e2e}/venv/bin/python"
[ -x "$PY" ] || { echo "missing $PY: run e2e/helm/install-deps.sh" >&2; exit 1; }
SRC=${CRDS_DIR:-crds}
ls "$SRC"/*.yaml >/dev/null 2>&1 || { echo "no CRDs in $SRC/ (generate them: unisondb-operator crd > crds/unisondb.io_crds.yaml)" >&2; exit 1; }
DST=charts/unisondb-operator/files/crds
find "$DST" -name '*.yaml' -delete
cp "$SRC"/*.yaml "$DST"/
"$PY" e2e/helm/render-deploy.py > deploy/operator.yaml.tmp && mv deploy/operator.yaml.tmp deploy/operator.yaml
echo "synced $(ls "$DST"/*.yaml | wc -l) CRD file(s) into $DST; regenerated deploy/operator.yaml"
