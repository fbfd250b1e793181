#!/usr/bin/env bash
# Runs the daemon's load scenarios against lms-longpolld and against nginx + Nchan, alternately,
# in one sitting (benches/README.md, "Daemon"). Client and server share this machine's cores.
# usage: benches/daemon-vs-nchan.sh [OUT_DIR]   (needs: cargo build --release --features daemon
#        --bins --lib && cargo build --release -p lms-loadgen, in $CARGO_TARGET_DIR if set;
#        apt-get install nginx-light libnginx-mod-nchan for the Nchan runs)
#        ONLY=fanout ROUNDS=3 benches/daemon-vs-nchan.sh   runs only the scenarios whose name
#        starts with $ONLY, $ROUNDS times each (default: all of them, twice); ONLY=stream runs
#        the server-sent event ones (daemon /v1/stream against Nchan's EventSource subscriber)
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-/tmp/lmsrt-bench-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
lg="${CARGO_TARGET_DIR:-$root/target}/release/lms-loadgen"
if [ ! -x "$lg" ]; then
    echo "no $lg: build it with cargo build --release -p lms-loadgen" >&2
    exit 1
fi
port=18950

wanted() { [[ -z "${ONLY:-}" || "$1" == "$ONLY"* ]]; }

daemon() { # name, loadgen args...
    local name="$1"; shift
    wanted "$name" || return 0
    echo "== daemon $name: $*" | tee -a "$out/summary.txt"
    "$lg" "$@" --json > "$out/daemon-$name.log" 2>&1
    tail -n 15 "$out/daemon-$name.log" | grep -v '^{' | sed 's/^/   /' | tee -a "$out/summary.txt"
    grep '^{' "$out/daemon-$name.log" >> "$out/results.jsonl"
}

nchan() { # name, loadgen args...
    local name="$1"; shift
    wanted "$name" || return 0
    command -v nginx >/dev/null && [ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] || return 0
    port=$((port + 1))
    local started prefix pids
    started="$("$root/benches/nchan/start.sh" "$port")" || return 0
    prefix="${started%% *}"; pids="${started#* }"
    echo "== nchan $name: $*" | tee -a "$out/summary.txt"
    "$lg" "$@" --target nchan --url "127.0.0.1:$port" --pid "$pids" --json > "$out/nchan-$name.log" 2>&1
    tail -n 15 "$out/nchan-$name.log" | grep -v '^{' | sed 's/^/   /' | tee -a "$out/summary.txt"
    grep '^{' "$out/nchan-$name.log" | sed 's/^{/{"peer":"nchan",/' >> "$out/results.jsonl"
    "$root/benches/nchan/stop.sh" "$prefix" >/dev/null 2>&1
}

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u)" | tee "$out/summary.txt"
for round in $(seq 1 "${ROUNDS:-2}"); do
    daemon "idle-$round" idle --clients 10000 --channels 100 --duration 10
    nchan "idle-$round" idle --clients 10000 --channels 100 --duration 10
    daemon "fanout-$round" fanout --clients 10000 --rounds 5
    nchan "fanout-$round" fanout --clients 10000 --rounds 5
    daemon "steady-http-$round" steady --clients 1000 --channels 100 --rate 1000 --duration 20 --publish http
    nchan "steady-http-$round" steady --clients 1000 --channels 100 --rate 1000 --duration 20 --publish http
    daemon "steady-c-$round" steady --clients 1000 --channels 100 --rate 1000 --duration 20 --publish c
    daemon "saturate-http-$round" saturate --clients 1000 --channels 100 --duration 10 --publish http --publishers 4
    nchan "saturate-http-$round" saturate --clients 1000 --channels 100 --duration 10 --publish http --publishers 4
    daemon "saturate-lib-$round" saturate --clients 1000 --channels 100 --duration 10 --publish lib --batch 50
    daemon "publish-$round" publish --publishers 8 --duration 10
    nchan "publish-$round" publish --publishers 8 --duration 10
    daemon "timeouts-$round" steady --clients 1000 --channels 100 --rate 200 --duration 20 --poll-timeout 1
    NCHAN_SUB_TIMEOUT=1s nchan "timeouts-$round" steady --clients 1000 --channels 100 --rate 200 --duration 20 --poll-timeout 1
    # Server-sent events (#20): the same client reads both; Nchan's streams never time out
    # (nchan_subscriber_timeout 0) except in stream-resume, where the servers end streams (the
    # daemon every 2 s: tokens that expire 2 s after they are minted; Nchan after 2 s without
    # a message) and the client resumes them with Last-Event-ID.
    ss=(--transport stream)
    daemon "stream-idle-$round" idle "${ss[@]}" --clients 10000 --channels 100 --duration 10
    NCHAN_SUB_TIMEOUT=0 nchan "stream-idle-$round" idle "${ss[@]}" --clients 10000 --channels 100 --duration 10
    daemon "stream-fanout-$round" fanout "${ss[@]}" --clients 10000 --rounds 5
    NCHAN_SUB_TIMEOUT=0 nchan "stream-fanout-$round" fanout "${ss[@]}" --clients 10000 --rounds 5
    daemon "stream-steady-$round" steady "${ss[@]}" --clients 1000 --channels 100 --rate 1000 --duration 20 --publish http
    NCHAN_SUB_TIMEOUT=0 nchan "stream-steady-$round" steady "${ss[@]}" --clients 1000 --channels 100 --rate 1000 --duration 20 --publish http
    daemon "stream-resume-$round" steady "${ss[@]}" --clients 1000 --channels 100 --rate 300 --duration 30 --publish http --token-ttl 2
    NCHAN_SUB_TIMEOUT=2s nchan "stream-resume-$round" steady "${ss[@]}" --clients 1000 --channels 100 --rate 300 --duration 30 --publish http
    # Nchan's timeout restarts at each message, so its busy streams are not ended: here the
    # client drops every stream after 2 s, on both servers, and resumes it.
    daemon "stream-drop-$round" steady "${ss[@]}" --clients 1000 --channels 100 --rate 300 --duration 30 --publish http --stream-max-age 2
    NCHAN_SUB_TIMEOUT=0 nchan "stream-drop-$round" steady "${ss[@]}" --clients 1000 --channels 100 --rate 300 --duration 30 --publish http --stream-max-age 2
done
echo "results in $out"
