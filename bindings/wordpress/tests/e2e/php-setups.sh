#!/usr/bin/env bash
# The plugin under each PHP set-up, on real php-fpm behind nginx. run.sh calls this after its
# other phases (it needs run.sh's site and its exported start_fpm/stop_fpm); alone:
#   LMSRT_E2E_ONLY=php-setups bash bindings/wordpress/tests/e2e/run.sh
#
# For each mode (LMSRT_E2E_SETUP_MODES, default: ffi preload noffi badpreload badpreload-user;
# see start_fpm in run.sh) php-fpm is restarted with that set-up (the workers use the library
# the installed plugin bundles), then php-setups.mjs checks over HTTP: every page answers, the
# set-up check reports the expected live path, the admin notice, and an event recorded through
# the plugin reaches a poll of admin-ajax.php?action=lms_unified_long_poll. php-fpm ends in the
# ffi mode, as the other phases had it.
#
# Prints TAP; the last lines are the totals run.sh counts (# pass, # fail, # skipped).
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
w="${LMSRT_E2E_WORK:?run this from run.sh}"
base="${LMSRT_E2E_BASE:?run this from run.sh}"
plugin="$LMSRT_E2E_CONTENT/plugins/lms-realtime"
read -r -a modes <<<"${LMSRT_E2E_SETUP_MODES:-ffi preload noffi badpreload badpreload-user}"
pass=0 fail=0 skip=0 n=0

ok() { n=$((n + 1)); pass=$((pass + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); fail=$((fail + 1)); echo "not ok $n - $*"; }
totals() { echo "1..$n"; echo "# pass $pass"; echo "# fail $fail"; echo "# skipped $skip"; }

if ! declare -F start_fpm >/dev/null; then
    not_ok "start_fpm is not defined: run php-setups.sh from run.sh"
    totals
    exit 1
fi

fixture="$LMSRT_E2E_CONTENT/mu-plugins/lmsrt-e2e-setups.php"
mkdir -p "$LMSRT_E2E_CONTENT/mu-plugins"
cp "$here/fixtures/lmsrt-e2e-setups.php" "$fixture"
# preload.php's records of the starts below (LmsRealtime\Library::preloadStatus()) go too.
status_prefix="$(php -r 'require $argv[1]; echo LmsRealtime\Library::preloadStatusPrefix($argv[2]);' \
    "$plugin/lib/php-ext/src/Library.php" "$plugin/lib/php-ext/preload.php")"
trap 'rm -f "$fixture" "$status_prefix"*.json' EXIT

if php "$here/setups-site.php" prepare "$base" "$w/setups.json" "${modes[@]}" >"$w/setups.log" 2>&1; then
    ok "a channel per mode, alice a member"
else
    not_ok "setups-site.php prepare failed"; sed 's/^/    /' "$w/setups.log"
    totals
    exit 1
fi

# The header for ffi.preload, written as the docs say: from the installed plugin, with the
# library it bundles (no path given: write-header.php finds <plugin>/lib/liblms_realtime.so).
real_lib="$(realpath "$plugin/lib/liblms_realtime.so")"
if env -u LMSRT_LIBRARY php "$plugin/lib/php-ext/bin/write-header.php" "$w/lms_realtime.h" >"$w/write-header.log" 2>&1 \
    && grep -qxF "#define FFI_LIB \"$real_lib\"" "$w/lms_realtime.h"; then
    ok "write-header.php of the installed plugin: FFI_LIB is its bundled library ($real_lib)"
else
    not_ok "write-header.php of the installed plugin"; sed 's/^/    /' "$w/write-header.log"
fi

for mode in "${modes[@]}"; do
    echo "# mode $mode"
    : >"$w/php-startup.log" 2>/dev/null
    if start_fpm "$mode" bundled; then
        ok "$mode: php-fpm starts and the site answers"
    else
        not_ok "$mode: php-fpm did not come up (see $w/php-fpm.log)"
        tail -5 "$w/php-fpm.log" | sed 's/^/    /'
        continue
    fi
    LMSRT_E2E_MODE="$mode" LMSRT_E2E_SETUPS_FILE="$w/setups.json" LMSRT_E2E_STARTUP_LOG="$w/php-startup.log" \
        node --test --test-reporter=tap "$here/php-setups.mjs" >"$w/php-setups-$mode.tap" 2>&1
    sed 's/^/    /' "$w/php-setups-$mode.tap"
    for k in pass fail skipped; do
        v="$(sed -n "s/^# $k \([0-9]*\)$/\1/p" "$w/php-setups-$mode.tap" | tail -1)"
        case $k in pass) pass=$((pass + ${v:-0})) ;; fail) fail=$((fail + ${v:-1})) ;; skipped) skip=$((skip + ${v:-0})) ;; esac
    done
done

echo "# back to the ffi mode"
if start_fpm ffi; then ok "php-fpm back in the ffi mode"; else not_ok "php-fpm did not come back in the ffi mode"; fi
totals
[ "$fail" -eq 0 ]
