#!/usr/bin/env bash
# Starts nginx + Nchan (Debian: apt-get install nginx-light libnginx-mod-nchan) on 127.0.0.1:PORT
# in a fresh temporary prefix (NCHAN_SUB_TIMEOUT: nchan_subscriber_timeout, how long a long-poll
# or an EventSource stream lasts; default 30s, 0 for never), and prints "PREFIX PIDS" (the prefix,
# then master and workers, comma-separated) for
# lms-loadgen --target nchan --url 127.0.0.1:PORT --pid PIDS. Stop it with stop.sh PREFIX.
# usage: start.sh PORT [PREFIX]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
port="${1:?usage: start.sh PORT [PREFIX]}"
prefix="${2:-$(mktemp -d /tmp/lmsrt-nchan.XXXXXX)}"
mkdir -p "$prefix"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@PORT@|$port|g" -e "s|@SUBTIMEOUT@|${NCHAN_SUB_TIMEOUT:-30s}|g" "$here/nginx.conf.in" > "$prefix/nginx.conf"
nginx -p "$prefix" -c "$prefix/nginx.conf"
for _ in $(seq 50); do [ -s "$prefix/nginx.pid" ] && break; sleep 0.1; done
master="$(cat "$prefix/nginx.pid")"
sleep 0.3
workers="$(pgrep -P "$master" | paste -sd, -)"
echo "$prefix $master,$workers"
