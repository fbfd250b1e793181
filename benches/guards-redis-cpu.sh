#!/usr/bin/env bash
# Server CPU per poll and delivery latency of lms-longpolld builds with --guards redis on one
# redis-server, alternately (benches/journal/2026-12-07-redis-guards.md, "Off the serving thread").
# usage: benches/guards-redis-cpu.sh ROUNDS "lms-loadgen args" LABEL=BIN... (lms-loadgen from target/release)
set -uo pipefail
rounds=$1; args=$2; shift 2; builds=("$@")
lg="$(cd "$(dirname "$0")/.." && pwd)/target/release/lms-loadgen"
secret="loadgen-secret-0123456789abcdef0123456789"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ticks() { local t=0 p; for p in ${1//,/ }; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo "$t"; }
rport=$(free_port)
rdir=$(mktemp -d /tmp/gbench-redis.XXXXXX)
redis-server --port $rport --bind 127.0.0.1 --save '' --appendonly no --dir $rdir >/dev/null 2>&1 &
rpid=$!
sleep 0.5
echo "# $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u)"
n=0
for r in $(seq 1 $rounds); do
  for b in "${builds[@]}"; do
    which=${b%%=*}; bin=${b#*=}
    n=$((n+1))
    port=$(free_port)
    dir=$(mktemp -d /tmp/gbench.XXXXXX)
    env -i LMSRT_LISTEN="127.0.0.1:$port" LMSRT_DB="redis://127.0.0.1:$rport/0?store=s$n" LMSRT_GUARDS=redis LMSRT_TOKEN_KEY="k1:$secret" \
      LMSRT_POLL_RATE=3000000 LMSRT_POLL_BURST=1000000 LMSRT_IP_RATE=3000000 LMSRT_IP_BURST=1000000 \
      LMSRT_MAX_CONNECTIONS=20000 LMSRT_MAX_CONNECTIONS_PER_IP=20000 LMSRT_STATE_DIR=$dir \
      LMSRT_PURGE_INTERVAL=0 LMSRT_PUBLISH_REPLAY_CAPACITY=5000000 LMSRT_LOG=warn \
      "$bin" >/dev/null 2>"$dir/err" &
    pid=$!
    for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
    kill -0 $pid 2>/dev/null || { echo "$which: exited: $(tail -3 $dir/err)"; continue; }
    t0=$(ticks $pid); r0=$(ticks $rpid)
    out=$($lg $args --url "127.0.0.1:$port" --pid $pid --json 2>&1 | grep '^{')
    t1=$(ticks $pid); r1=$(ticks $rpid)
    echo "R$r $which daemon_cpu_ms=$(( (t1-t0)*10 )) redis_cpu_ms=$(( (r1-r0)*10 )) :: $out"
    kill $pid; wait $pid 2>/dev/null
    rm -rf $dir
  done
done
kill $rpid; wait $rpid 2>/dev/null; rm -rf $rdir
