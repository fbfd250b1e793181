#!/usr/bin/env bash
# What each duty of a single Redis append costs Redis (benches/README.md, "Event store on Redis",
# and benches/journal/2026-12-07-redis-batch.md, "The duties, one by one"): the store's own
# append script (src/store/redis_store/scripts.rs), and scripts that do a growing part of its
# work, each run by redis-benchmark (-c 1) as EVALSHA with the append's keys and arguments for one
# event. Redis's own time per call is read from INFO commandstats (usec_per_call of evalsha).
# usage: benches/redis-append-parts.sh [ROUNDS] [CALLS]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
rounds="${1:-2}"; calls="${2:-30000}"
dir="$(mktemp -d /tmp/lmsrt-parts.XXXXXX)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --dir "$dir" --logfile "$dir/r.log" >/dev/null
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done

python3 - "$root/src/store/redis_store/scripts.rs" "$dir" <<'PY'
import re, sys
src = open(sys.argv[1]).read()
full = re.search(r'const APPEND: &str = r#"(.*?)"#;', src, re.S).group(1)
top = "local top = redis.call('ZRANGE', KEYS[3], 0, 0, 'REV', 'WITHSCORES')[2]"
assert top in full, "the append script changed: update this bench"
head = "local last = redis.call('INCRBY', KEYS[2], 1)\nlocal sid = string.format('%d', last)\n"
xadd = "redis.call('XADD', KEYS[6], sid, 'x', ARGV[7], 'h', ARGV[5], 't', ARGV[6], 'd', ARGV[4])\n"
lanes = "redis.call('ZADD', KEYS[3], sid, KEYS[6])\n"
exp = "redis.call('ZADD', KEYS[4], ARGV[7], KEYS[6] .. '|' .. sid .. '|' .. sid)\n"
pub = "redis.call('PUBLISH', ARGV[2], sid)\n"
ret = "return {last}\n"
variants = [
    ("1-evalsha-only", "return {1}\n"),
    ("2-id+entry", head + xadd + ret),
    ("3-+lanes-index", head + xadd + lanes + ret),
    ("4-+expiry-index", head + xadd + lanes + exp + ret),
    ("5-+wake-up", head + xadd + lanes + exp + pub + ret),
    ("6-store-without-top-check", full.replace(top, "local top = nil")),
    ("7-store-script", full),
]
for name, body in variants:
    open(f"{sys.argv[2]}/{name}.lua", "w").write(body)
PY

payload='{"t":"message_create","p":1,"c":1,"m":null,"th":null,"u":1,"d":{"text":"hello there, a chat message of some length"},"ts":1796600000000,"x":1796686400000}'
echo "# machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u), redis $(redis-server --version | grep -o 'v=[0-9.]*')"
for r in $(seq "$rounds"); do
    for f in "$dir"/*.lua; do
        v="$(basename "$f" .lua)"
        sha="$(redis-cli -p "$port" script load "$(cat "$f")")"
        k="lmsrt:{$v-$r}"
        redis-cli -p "$port" config resetstat >/dev/null
        rate="$(redis-benchmark -p "$port" -c 1 -n "$calls" -q EVALSHA "$sha" 6 "$k:meta" "$k:seq" \
            "$k:lanes" "$k:exp" "$k:idem" "$k:l:1:1" 123 "$k:wake" 0 "$payload" '' message_create \
            1796686400000 '' '' 2>&1 | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1)"
        us="$(redis-cli -p "$port" info commandstats | tr -d '\r' | grep '^cmdstat_evalsha' \
            | sed 's/.*usec_per_call=\([0-9.]*\).*/\1/')"
        echo "R$r $v redis_us_per_call=$us ($rate)"
    done
done
