#!/usr/bin/env bash
# Server CPU per HTTP publish (and per event with its deliveries) of two lms-longpolld builds and of
# nginx + Nchan, scenario by scenario, alternately, in one sitting (benches/README.md, "Daemon",
# and benches/journal/2026-12-07-publish-cpu.md). CPU is read from /proc (utime + stime of the
# server's processes) around each lms-loadgen run; the daemon runs with the replay window and the
# per-address connection cap raised (one loopback client publishes far more than 100,000 times).
# usage: [ONLY=pub1|pub8|steady|sat4] benches/daemon-cpu.sh BEFORE_BIN_DIR AFTER_BIN_DIR [ROUNDS] > results.txt
#        (each dir holds lms-longpolld; lms-loadgen is taken from AFTER_BIN_DIR; a dir may be "-"
#        to skip it; Nchan runs when nginx and its module are installed; with BARE=<path to
#        examples/bare_hyper> the publish rows also run against tokio + hyper alone, the bound)
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
before="$1"; after="$2"; rounds="${3:-2}"
lg="$after/lms-loadgen"
secret="loadgen-secret-0123456789abcdef0123456789"

# A port nobody holds (a fixed range could meet the kernel's ephemeral ports).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

ticks() { local t=0 p; for p in ${1//,/ }; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo "$t"; }

report() { # label, ticks, loadgen output
    local js n
    js="$(grep '^{' <<<"$3")"
    n="$(python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["published"])' <<<"$js")"
    echo "$1 events=$n cpu_ms=$(($2 * 10)) us_per_event=$(awk -v t="$2" -v n="$n" 'BEGIN{if(n>0)printf "%.1f", t*10000/n}') :: $js"
}

daemon() { # label, bin dir, loadgen args...
    local label="$1" bin="$2"; shift 2
    [ "$bin" = - ] && return 0
    local dir port pid t0 out
    dir="$(mktemp -d /tmp/lmsrt-cpu.XXXXXX)"
    port="$(free_port)"
    env -i LMSRT_LISTEN="127.0.0.1:$port" LMSRT_DB="$dir/b.db" LMSRT_TOKEN_KEY="k1:$secret" \
        LMSRT_POLL_RATE=3000000 LMSRT_POLL_BURST=1000000 LMSRT_IP_RATE=3000000 LMSRT_IP_BURST=1000000 \
        LMSRT_MAX_CONNECTIONS=20000 LMSRT_MAX_CONNECTIONS_PER_IP=20000 LMSRT_MAX_BATCH=1000 \
        LMSRT_PURGE_INTERVAL=0 LMSRT_PUBLISH_REPLAY_CAPACITY=5000000 LMSRT_LOG=warn \
        "$bin/lms-longpolld" >/dev/null 2>"$dir/err" &
    pid=$!
    for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "$label: the daemon exited at start: $(tail -n 3 "$dir/err")"
        rm -rf "$dir"
        return 0
    fi
    t0="$(ticks "$pid")"
    out="$("$lg" "$@" --url "127.0.0.1:$port" --db "$dir/b.db" --pid "$pid" --json 2>&1)"
    report "$label" $(($(ticks "$pid") - t0)) "$out"
    kill "$pid"; wait "$pid" 2>/dev/null
    rm -rf "$dir"
}

bare() { # label, loadgen args...: the HTTP layer's bound (examples/bare_hyper.rs), when $BARE is set
    local label="$1"; shift
    [ -n "${BARE:-}" ] || return 0
    local port pid t0 out
    port="$(free_port)"
    "$BARE" "127.0.0.1:$port" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
    t0="$(ticks "$pid")"
    out="$("$lg" "$@" --url "127.0.0.1:$port" --pid "$pid" --json 2>&1)"
    report "$label" $(($(ticks "$pid") - t0)) "$out"
    kill "$pid"; wait "$pid" 2>/dev/null
}

nchan() { # label, loadgen args...
    local label="$1"; shift
    command -v nginx >/dev/null && [ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] || return 0
    local port started prefix pids t0 out
    port="$(free_port)"
    started="$("$root/benches/nchan/start.sh" "$port")" || return 0
    prefix="${started%% *}"; pids="${started#* }"
    t0="$(ticks "$pids")"
    out="$("$lg" "$@" --target nchan --url "127.0.0.1:$port" --pid "$pids" --json 2>&1)"
    report "$label" $(($(ticks "$pids") - t0)) "$out"
    "$root/benches/nchan/stop.sh" "$prefix" >/dev/null 2>&1
}

scenarios=("pub1:publish --publishers 1 --duration 5" "pub8:publish --publishers 8 --duration 5"
    "steady:steady --clients 1000 --channels 100 --rate 1000 --duration 10"
    "sat4:saturate --clients 1000 --channels 100 --duration 8 --publish http --publishers 4")
echo "# machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u)"
for r in $(seq 1 "$rounds"); do
    for sc in "${scenarios[@]}"; do
        name="${sc%%:*}"; read -r -a args <<<"${sc#*:}"
        [[ -z "${ONLY:-}" || "$name" == "$ONLY" ]] || continue
        daemon "R$r-before-$name" "$before" "${args[@]}"
        daemon "R$r-after-$name" "$after" "${args[@]}"
        nchan "R$r-nchan-$name" "${args[@]}"
        [[ "$name" == pub* ]] && bare "R$r-bare-hyper-$name" "${args[@]}"
    done
done
