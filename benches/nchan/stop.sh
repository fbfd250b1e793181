#!/usr/bin/env bash
# Stops the nginx started by start.sh and removes its prefix. usage: stop.sh PREFIX
set -euo pipefail
prefix="${1:?usage: stop.sh PREFIX}"
if [ -s "$prefix/nginx.pid" ]; then
    nginx -p "$prefix" -c "$prefix/nginx.conf" -s stop || true
    sleep 0.5
fi
rm -rf "$prefix"
