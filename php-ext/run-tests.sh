#!/usr/bin/env bash
# Runs the binding's tests on a fresh Debian/Ubuntu machine:
#   1. installs php-cli (with FFI), phpunit, valgrind and sqlite3 with apt-get when they are missing
#      (as root; otherwise it says what to install);
#   2. builds the cdylib with the Redis engine (cargo build --lib --features redis, as a site
#      owner's library should be; LMSRT_PROFILE=release for a release build);
#   3. runs the C ABI test under valgrind (cargo test --test c_abi, LMSRT_VALGRIND=1: zero
#      leaks and zero invalid accesses, or it fails), with the same features, so that the
#      library it leaves in target/ is still the one PHP loads;
#   4. runs both PHPUnit suites (unit and integration) against the library just built; the
#      Redis tests start their own redis-server on a free loopback port.
# Extra arguments go to phpunit (e.g. --testsuite unit).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

missing=()
command -v php >/dev/null 2>&1 || missing+=(php-cli)
command -v phpunit >/dev/null 2>&1 || [ -x "$here/vendor/bin/phpunit" ] || missing+=(phpunit)
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
# The poison-event test writes rows behind the library's back with the sqlite3 tool.
command -v sqlite3 >/dev/null 2>&1 || missing+=(sqlite3)
# The store-on-Redis tests start their own server (tests/Integration/RedisServer.php).
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "run-tests.sh: installing ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "run-tests.sh: missing ${missing[*]}: install them (apt-get install ${missing[*]})" >&2
        exit 1
    fi
fi
# Not `grep -q`: it exits at the first match, php then dies of SIGPIPE writing the rest of the
# list, and pipefail turns that into a failure (about one run in three).
if ! php -m | grep -x FFI >/dev/null; then
    echo "run-tests.sh: this PHP has no FFI extension (php -m lists no FFI)" >&2
    exit 1
fi

cd "$root"
profile="${LMSRT_PROFILE:-debug}"
release_flag=()
[ "$profile" = release ] && release_flag=(--release)
features=(--features redis)
cargo build --locked --lib "${release_flag[@]}" "${features[@]}"

echo "== C ABI test under valgrind" >&2
LMSRT_VALGRIND=1 cargo test --locked "${release_flag[@]}" "${features[@]}" --test c_abi

target_dir="${CARGO_TARGET_DIR:-$root/target}"
export LMSRT_LIBRARY="$target_dir/$profile/liblms_realtime.so"
phpunit_bin=phpunit
[ -x "$here/vendor/bin/phpunit" ] && phpunit_bin="$here/vendor/bin/phpunit"
echo "== PHPUnit (unit + integration) against $LMSRT_LIBRARY" >&2
php -v | head -1 >&2
"$phpunit_bin" -c "$here/phpunit.xml.dist" "$@"
