#!/usr/bin/env bash
# Fan-out of one event to N waiters split over two daemons sharing one Redis, beside one daemon
# on SQLite with all N, alternately (issue #21: "no slower than to one daemon on SQLite").
# usage: benches/fanout-redis.sh [ROUNDS] [CLIENTS]   (default 3 rounds, 10000 clients)
# needs: cargo build --release --features daemon,redis --bins
#        cargo build --release -p lms-loadgen --features redis   (in $CARGO_TARGET_DIR if set)
#        and redis-server. Each run is `lms-loadgen fanout --rounds 5`: five events, the time
# until the last waiter read each; the SQLite run starts its own daemon, the Redis run two
# started here, publishing through the first, every other client parked on the second.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
rounds="${1:-3}"
clients="${2:-10000}"
bin="${CARGO_TARGET_DIR:-$root/target}/release"
dir=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
sleep 0.5
url="redis://127.0.0.1:$rport/0?store=fanout"
# The settings lms-loadgen gives the daemon it starts (tools/loadgen/src/server.rs).
secret=$(grep -o 'SECRET: &str = "[^"]*"' "$root/tools/loadgen/src/main.rs" | cut -d'"' -f2)
daemon() { # port
    mkdir -p "$dir/state-$1"
    env -i LMSRT_LISTEN="127.0.0.1:$1" LMSRT_DB="$url" LMSRT_STATE_DIR="$dir/state-$1" \
        LMSRT_TOKEN_KEY="k1:$secret" LMSRT_POLL_RATE=3000000 LMSRT_POLL_BURST=1000000 \
        LMSRT_IP_RATE=3000000 LMSRT_IP_BURST=1000000 LMSRT_MAX_CONNECTIONS=20000 \
        LMSRT_MAX_CONNECTIONS_PER_IP=20000 LMSRT_MAX_BATCH=1000 LMSRT_PURGE_INTERVAL=0 \
        LMSRT_LOG=warn "$bin/lms-longpolld" > /dev/null &
    pids+=($!)
}
pa=$(free_port); daemon "$pa"
pb=$(free_port); daemon "$pb"
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$pa" && exec 4<>"/dev/tcp/127.0.0.1/$pb") 2>/dev/null && break
    sleep 0.1
done
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u)"
for r in $(seq "$rounds"); do
    echo "== round $r, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "-- one daemon on SQLite, $clients waiters"
    "$bin/lms-loadgen" fanout --clients "$clients" --rounds 5 | grep '^fanout:'
    echo "-- two daemons on one Redis, $((clients / 2)) waiters each"
    "$bin/lms-loadgen" fanout --clients "$clients" --rounds 5 --url "127.0.0.1:$pa" \
        --also-url "127.0.0.1:$pb" --db "$url" --pid "${pids[0]},${pids[1]}" | grep '^fanout:'
done
