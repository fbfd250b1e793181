#!/usr/bin/env bash
# The load comparison of benches/README.md ("WordPress: legacy short polling vs the unified
# long poll"): sets the site up with the e2e harness (held open, php-fpm with enough children for
# one waiting poll per client), creates the simulated users, runs bench.mjs once per mode and
# prints a table. Results go to bindings/wordpress/tests/bench/results/.
#
#   bash bindings/wordpress/tests/bench/run-bench.sh
#
# BENCH_CLIENTS (100), BENCH_CHANNELS (10), BENCH_SECONDS (600), BENCH_POST_MEAN_S (10: a message
# per channel every 10 s on average), BENCH_MODES ("legacy unified-ajax unified-daemon
# unified-stream"),
# BENCH_FPM_CHILDREN (BENCH_CLIENTS + 30).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../../.." && pwd)"
clients="${BENCH_CLIENTS:-100}"
channels="${BENCH_CHANNELS:-10}"
modes="${BENCH_MODES:-legacy unified-ajax unified-daemon unified-stream}"
results="$here/results"
mkdir -p "$results"
envfile="$(mktemp /tmp/lmsrt-bench-env.XXXXXX)"
rm -f "$envfile"
log="$(mktemp /tmp/lmsrt-bench-site.XXXXXX.log)"

LMSRT_E2E_FPM_CHILDREN="${BENCH_FPM_CHILDREN:-$((clients + 30))}" LMSRT_E2E_HOLD="$envfile" \
    bash "$root/bindings/wordpress/tests/e2e/run.sh" >"$log" 2>&1 &
site_pid=$!
daemon_pid=""
stop_all() {
    [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null
    kill -TERM "$site_pid" 2>/dev/null
    wait "$site_pid" 2>/dev/null
    rm -f "$envfile"
}
trap stop_all EXIT
for _ in $(seq 1 600); do
    [ -s "$envfile" ] && break
    kill -0 "$site_pid" 2>/dev/null || { cat "$log"; echo "bench: the site set-up failed" >&2; exit 1; }
    sleep 1
done
[ -s "$envfile" ] || { echo "bench: the site did not come up (see $log)" >&2; exit 1; }
# shellcheck disable=SC1090
source "$envfile"
export LMSRT_CLIENT_JS="$root/bindings/client/lms-realtime-client.js"
opt() { php "$root/bindings/wordpress/tests/e2e/setup-site.php" option "$LMSRT_E2E_BASE" "$1" "$2" >/dev/null; }

php "$here/bench-setup.php" users "$LMSRT_E2E_BASE" "$clients" "$channels" "$LMSRT_E2E_WORK/bench-clients.json"
secret="bench-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"

for mode in $modes; do
    out="$results/$stamp-$mode.json"
    case "$mode" in
        legacy)
            opt lms_longpoll_rollout 0; opt lms_realtime_daemon_url '""' ;;
        unified-ajax)
            opt lms_longpoll_rollout 100; opt lms_realtime_daemon_url '""' ;;
        unified-daemon|unified-stream)
            bin="$(echo "$LMSRT_DAEMON_CMD" | awk '{print $1}')"
            token="$(php -r '$_SERVER["HTTP_HOST"]=parse_url($argv[1],PHP_URL_HOST).":".parse_url($argv[1],PHP_URL_PORT); require "/usr/share/wordpress/wp-load.php"; echo class_exists("LmsRealtime\\Token") ? "yes" : "no";' "$LMSRT_E2E_BASE")"
            if [ ! -x "$bin" ] || [ "$token" != yes ]; then
                echo "{\"mode\": \"$mode\", \"skipped\": \"no daemon binary ($bin) or no LmsRealtime\\\\Token in the binding\"}" | tee "$out"
                continue
            fi
            printf '%s\n' "$secret" >"$LMSRT_E2E_WORK/bench-secret"
            # All simulated clients come from 127.0.0.1, like users behind one NAT: raise the
            # per-address limit (the per-user limits stay the defaults).
            cmd="$LMSRT_DAEMON_CMD --ip-rate 60000 --ip-burst 10000"
            cmd="${cmd//\{db\}/$LMSRT_E2E_DB}"
            cmd="${cmd//\{port\}/$LMSRT_E2E_DAEMON_PORT}"
            cmd="${cmd//\{key_id\}/bench}"
            cmd="${cmd//\{secret_file\}/$LMSRT_E2E_WORK/bench-secret}"
            cmd="${cmd//\{secret\}/$secret}"
            # shellcheck disable=SC2086
            $cmd >"$LMSRT_E2E_WORK/daemon-bench.log" 2>&1 &
            daemon_pid=$!
            echo "$daemon_pid" >"$LMSRT_E2E_WORK/daemon.pid"
            for _ in $(seq 1 50); do curl -fsS -o /dev/null "http://127.0.0.1:$LMSRT_E2E_DAEMON_PORT/healthz" && break; sleep 0.2; done
            opt lms_longpoll_rollout 100; opt lms_realtime_daemon_url '"/lmsrt"'; opt lms_realtime_daemon_secret "\"$secret\""; opt lms_realtime_daemon_key_id '"bench"' ;;
        *) echo "unknown mode $mode" >&2; exit 2 ;;
    esac
    echo "== $mode: $clients clients, $channels channels, ${BENCH_SECONDS:-600} s"
    BENCH_HEAD="$(php "$here/bench-setup.php" head "$LMSRT_E2E_BASE")" \
        node "$here/bench.mjs" "$mode" "$LMSRT_E2E_WORK/bench-clients.json" "$out"
    if [ -n "$daemon_pid" ]; then kill "$daemon_pid"; wait "$daemon_pid" 2>/dev/null; daemon_pid=""; rm -f "$LMSRT_E2E_WORK/daemon.pid"; fi
done

echo
echo "| mode | poll requests / client / min | server CPU ms / delivered event | latency p50 | latency p99 | delivered | lost | duplicates |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for mode in $modes; do
    php -r '$r = json_decode(file_get_contents($argv[1]), true);
        if (isset($r["skipped"])) { printf("| %s | skipped: %s |\n", $r["mode"], $r["skipped"]); exit; }
        printf("| %s | %.2f | %.2f | %d ms | %d ms | %d / %d | %d | %d |\n", $r["mode"], $r["poll_requests_per_client_per_minute"],
            $r["server_cpu_ms_per_delivered_event"], $r["latency_ms"]["p50"], $r["latency_ms"]["p99"], $r["delivered"],
            $r["expected_deliveries"], $r["lost"], $r["duplicates"]);' "$results/$stamp-$mode.json"
done
