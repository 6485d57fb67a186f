#!/bin/sh
# The image's entrypoint: the exporter's command line, with one addition. `demo` listens on 127.0.0.1 by
# default (right on a laptop, unreachable through a container's published port), so here it listens on
# every address of the container; a --listen given after `demo` still wins (argparse keeps the last).
set -eu
if [ "${1:-}" = "demo" ]; then
  shift
  set -- demo --listen 0.0.0.0:9863 --state-dir /tmp/pve-datastore-exporter-demo "$@"
fi
exec pve-datastore-exporter "$@"
