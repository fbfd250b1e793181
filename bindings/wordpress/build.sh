#!/usr/bin/env bash
# Builds the installable plugin: dist/lms-realtime/ and dist/lms-realtime.zip, and the demo chat
# plugin beside it: dist/lms-realtime-demo/ and dist/lms-realtime-demo.zip.
#
# The folder bundles what the plugin needs besides its own files: the PHP binding
# (php-ext/src, include, preload.php, bin -> lib/php-ext/), the browser client
# (bindings/client/lms-realtime-client.js -> assets/) and a translation template
# (languages/lms-realtime.pot, when xgettext is installed). With --with-library it also
# bundles target/release/liblms_realtime.so as lib/liblms_realtime.so (platform-specific).
#
#   bash bindings/wordpress/build.sh [--with-library] [--out DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$here/dist"
with_lib=0
while [ $# -gt 0 ]; do
    case "$1" in
        --with-library) with_lib=1 ;;
        --out) out="$2"; shift ;;
        *) echo "usage: $0 [--with-library] [--out DIR]" >&2; exit 2 ;;
    esac
    shift
done

dest="$out/lms-realtime"
rm -rf "$dest" "$out/lms-realtime.zip"
mkdir -p "$dest"
cp -R "$here/lms-realtime/." "$dest/"
mkdir -p "$dest/lib/php-ext" "$dest/assets" "$dest/languages"
cp -R "$root/php-ext/src" "$root/php-ext/include" "$root/php-ext/bin" "$dest/lib/php-ext/"
cp "$root/php-ext/preload.php" "$root/php-ext/README.md" "$root/php-ext/composer.json" "$dest/lib/php-ext/"
cp "$root/bindings/client/lms-realtime-client.js" "$dest/assets/"
if [ "$with_lib" = 1 ]; then
    lib="${CARGO_TARGET_DIR:-$root/target}/release/liblms_realtime.so"
    [ -f "$lib" ] || { echo "no $lib: run cargo build --release --lib first" >&2; exit 1; }
    cp "$lib" "$dest/lib/liblms_realtime.so"
fi
if command -v xgettext >/dev/null 2>&1; then
    (cd "$dest" && find . -name '*.php' -not -path './lib/*' | sort | xgettext --language=PHP --from-code=UTF-8 \
        --keyword=__ --keyword=_e --keyword=esc_html__ --keyword=esc_html_e --keyword=esc_attr__ \
        --keyword=esc_attr_e --keyword=_x:1,2c --keyword=_n:1,2 --add-comments=translators: \
        --package-name="LMS Chat Realtime" --package-version=0.1.0 -o languages/lms-realtime.pot -f -)
fi
# The demo chat is a plugin of its own (never part of the production plugin).
rm -rf "$out/lms-realtime-demo" "$out/lms-realtime-demo.zip"
cp -R "$here/lms-realtime-demo" "$out/lms-realtime-demo"
if command -v zip >/dev/null 2>&1; then
    (cd "$out" && zip -qr lms-realtime.zip lms-realtime && zip -qr lms-realtime-demo.zip lms-realtime-demo)
    echo "built $dest and $out/lms-realtime.zip (demo: $out/lms-realtime-demo.zip)"
else
    echo "built $dest (no zip command: the zip was not made)"
fi
