#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (LMSRT_FUZZ_SECONDS, default 20) from a copy of its
# seed corpus in a temporary directory: the checked-in corpus never grows here. Builds all the
# targets once (the sanitizer build of the crate is most of the time), then runs the binaries.
# Any crash, leak or hang fails the script; its input is kept under fuzz/artifacts/<target>/.
# Needs the nightly toolchain: missing, it fails when CI is set and skips (saying so) otherwise.
# Installs cargo-fuzz if missing. Called by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${LMSRT_FUZZ_SECONDS:-20}"

if ! cargo +nightly --version >/dev/null 2>&1; then
    if [ -n "${CI:-}" ]; then
        echo "error: the fuzz targets need the nightly toolchain (rustup toolchain install nightly)" >&2
        exit 1
    fi
    echo "   SKIPPED: no nightly toolchain (CI fails here instead)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# This directory is its own workspace with its own target dir, whatever the caller's is.
unset CARGO_TARGET_DIR
triple="$(rustc +nightly -vV | sed -n 's/^host: //p')"
cargo +nightly fuzz build
targets=$(cargo +nightly fuzz list)

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for t in $targets; do
    mkdir -p "$tmp/$t" "artifacts/$t"
    cp -R "corpus/$t/." "$tmp/$t/"
    log="$tmp/$t.log"
    if ! "target/$triple/release/$t" "$tmp/$t" -max_total_time="$seconds" -runs=-1 -timeout=10 \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "error: fuzz target $t failed; its input is in fuzz/artifacts/$t/" >&2
        echo "       reproduce: cd fuzz && cargo +nightly fuzz run $t artifacts/$t/<file>" >&2
        exit 1
    fi
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
    echo "   fuzz $t: ${runs:-?} executions in ${seconds} s, no crash"
done
