#!/bin/sh
# Image entrypoint: one image, two programs.
#   <image> unisondb server --mode relayer --config /etc/unisondb/config.yaml
#   <image> unisondb-operator run
#   <image> server ...            (anything else runs `unisondb` with those arguments)
# Kubernetes `command:` overrides this script entirely (the operator's StatefulSets use
# command ["unisondb"]); both binaries are on PATH for that.
set -e
case "$1" in
  unisondb|unisondb-operator) exec "$@" ;;
  "") exec unisondb --help ;;
  -*|*) exec unisondb "$@" ;;
esac
