#!/bin/sh
# The Redis append beside raw redis-benchmark XADD on one redis-server, alternately: per round,
# redis-benchmark's XADD (one client, one at a time, then -P 100 pipelined), then each given
# bench binary (benches/redis_append.rs built from some tree) against the same server.
#
#   benches/redis-batch.sh ROUNDS LABEL=BINARY [LABEL=BINARY ...]
#
# e.g. before=/work/target-before/release/deps/redis_append-HASH after=... (find the binary
# with `cargo bench --features redis --bench redis_append --no-run`). Needs redis-server and
# redis-benchmark (Debian's redis-tools).
set -eu
rounds=$1
shift
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
    --daemonize yes --pidfile "$dir/pid" --logfile "$dir/log"
trap 'kill "$(cat "$dir/pid")"; rm -rf "$dir"' EXIT
sleep 0.5
stored='{"t":"message_create","p":1,"c":1,"m":null,"th":null,"u":1,"d":{"text":"hello there, a chat message of some length"},"ts":1796600000000,"x":1796686400000}'
xadd() {
    redis-benchmark -p "$port" -c 1 "$@" -q XADD rb-xadd '*' d "$stored" | tr '\r' '\n' |
        tail -1 | sed -E 's/.*: ([0-9.]+ requests per second.*)/\1/'
}
r=1
while [ "$r" -le "$rounds" ]; do
    echo "== round $r, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "redis-benchmark XADD -c 1: $(xadd -n 20000)"
    echo "redis-benchmark XADD -c 1 -P 100: $(xadd -P 100 -n 200000) (events/s)"
    redis-cli -p "$port" del rb-xadd >/dev/null
    for pair in "$@"; do
        echo "-- ${pair%%=*}"
        LMSRT_BENCH_REDIS="redis://127.0.0.1:$port" "${pair#*=}" | sed 's/^round [0-9]*: //'
    done
    r=$((r + 1))
done
