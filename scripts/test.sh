#!/usr/bin/env bash
# Runs every test suite of the project on a fresh Debian machine, installing what it needs.
# This is the README's test command; .ci/run calls it after the format and lint checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# The C ABI test loads target/<profile>/liblms_realtime.so when it exists: build it first
# so a stale copy from an earlier build is never the one tested.
cargo build --locked --lib

# php-cli first: the daemon's process tests include an append from a real PHP process, which
# must run here rather than skip (LMSRT_REQUIRE_PHP turns a missing php into a failure).
if ! command -v php >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends php-cli >/dev/null
fi
export LMSRT_REQUIRE_PHP=1

# redis-server: the Redis engine's tests (feature `redis`) start their own servers on loopback;
# openssl: tests/redis_connect.rs makes the TLS certificates of its rediss:// server with it.
if ! command -v redis-server >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server redis-tools openssl >/dev/null
fi

echo "== Rust: unit, property, multi-process, integration, daemon (feature daemon) and doc tests,"
echo "   and the load generator (tools/loadgen)"
cargo test --workspace --locked --all-features

echo "== Fuzz targets: each for ${LMSRT_FUZZ_SECONDS:-20} s from a copy of its seed corpus (nightly, cargo-fuzz)"
bash fuzz/run.sh

echo "== PHP coding standard and static analysis (installs php-codesniffer, phpmd if missing)"
# php -l on every PHP file; phpcs: PSR-12 for the binding, the WordPress ruleset for the plugins
# (warnings fail too), PSR-12 and fixture tests for that ruleset's own sniffs; phpmd's bug rules.
if ! command -v phpcs >/dev/null 2>&1 || ! command -v phpmd >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends php-codesniffer phpmd >/dev/null
fi
find . \( -name target -o -name node_modules -o -name vendor -o -name dist -o -name .git \) -prune \
    -o -name '*.php' -print0 | xargs -0 -n1 php -l >/dev/null
phpcs -q --standard=php-ext/phpcs.xml.dist
phpcs -q --standard=bindings/wordpress/phpcs.xml
phpcs -q --standard=PSR12 --extensions=php bindings/wordpress/phpcs
php bindings/wordpress/phpcs/tests/run.php
phpmd php-ext/src,php-ext/preload.php,php-ext/autoload.php,php-ext/examples,php-ext/bin,bindings/wordpress/lms-realtime,bindings/wordpress/lms-realtime-demo,bindings/wordpress/phpcs/WordPress \
    text php-ext/phpmd.xml

echo "== C ABI under valgrind, then PHPUnit (installs php-cli, phpunit, valgrind if missing)"
bash php-ext/run-tests.sh

echo "== Browser client: node's built-in test runner"
if ! command -v node >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs >/dev/null
fi
node --test bindings/client/test/ bindings/wordpress/tests/js/

echo "== WordPress plugin: PHPUnit inside a real WordPress, then two browsers end to end"
echo "   (installs wordpress, mariadb, php-fpm, nginx-light, chromium if missing; needs root)"
bash bindings/wordpress/tests/e2e/run.sh

echo "== all suites passed"
