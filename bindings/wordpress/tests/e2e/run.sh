#!/usr/bin/env bash
# End-to-end tests of the WordPress plugin in a real WordPress, on a fresh Debian 12 machine.
#
#   bash bindings/wordpress/tests/e2e/run.sh
#
# 1. installs what is missing (apt): wordpress, mariadb, php-fpm, nginx-light, chromium, ...;
# 2. builds the library (cargo build --release --lib --features redis: a site owner's library
#    opens a Redis store too) and, if the package has it, the daemon;
# 3. builds the plugin (build.sh), starts a private MariaDB in a temporary directory, writes
#    /etc/wordpress/config-<its loopback address>.php, installs WordPress from PHP CLI, activates the plugin,
#    creates the users and a channel;
# 4. serves the site with php-fpm (start_fpm ffi: FFI enabled) + nginx on a free loopback port,
#    /lmsrt/ proxied to the daemon's port;
# 5. runs the PHPUnit suite inside that WordPress, then the browser scenarios (node --test,
#    playwright-core driving /usr/bin/chromium), then the PHP set-ups (php-setups.sh: php-fpm
#    restarted in each set-up, start_fpm <mode>), then the uninstall check;
# 6. prints "N passed, M failed, K skipped" and tears everything down (trap), so it can run
#    again at once.
#
# Environment:
#   LMSRT_DAEMON_CMD   the daemon command line, with {db} {port} {key_id} {secret} {secret_file}
#                      placeholders (default: target/release/lms-longpolld --db {db} --listen
#                      127.0.0.1:{port} --token-key {key_id}:{secret} --trust-proxy; the daemon
#                      scenario is skipped, with the reason, while that binary does not exist)
#   LMSRT_E2E_KEEP=1   keep the temporary directory (logs) after the run
#   LMSRT_E2E_ONLY     "phpunit", "browser" (with the uninstall check) or "php-setups" to run one part
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
wpdir="$(cd "$here/../.." && pwd)"
root="$(cd "$wpdir/../.." && pwd)"
only="${LMSRT_E2E_ONLY:-}"

log() { printf '\n== %s\n' "$*"; }
die() { printf 'e2e: %s\n' "$*" >&2; exit 1; }

# Runs can go side by side: each has its own loopback address (so its own site config,
# /etc/wordpress/config-<address>.php, which Debian's wp-config.php picks by Host) and its own
# wp-content in its temporary directory.

# -- 1. packages ----------------------------------------------------------------------------
need=()
for p in wordpress mariadb-server mariadb-client php-cli php-mysql php-curl php-xml php-mbstring \
         php8.2-fpm nginx-light chromium fonts-liberation phpunit zip gettext; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
    log "apt-get install ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || die "apt-get install failed"
fi
command -v node >/dev/null || die "node (20+) is required; it is preinstalled on the dev machines"
# Debian starts services on install on some machines: this run uses its own instances only.

# -- 2. builds ------------------------------------------------------------------------------
target="${CARGO_TARGET_DIR:-$root/target}"
lib_features=""
grep -qE '^\s*redis\s*=' "$root/Cargo.toml" && lib_features="--features redis"
log "cargo build --release --lib $lib_features"
# shellcheck disable=SC2086
(cd "$root" && cargo build --release --lib --locked $lib_features) || die "cargo build failed"
lib="$target/release/liblms_realtime.so"
[ -f "$lib" ] || die "no $lib"
daemon_bin="$target/release/lms-longpolld"
if grep -q 'lms-longpolld' "$root/Cargo.toml" 2>/dev/null; then
    log "cargo build --release (daemon)"
    features=""
    # With the library's features too: the daemon serves a Redis store, and the library this
    # build leaves in target/ stays one that opens it.
    grep -qE '^\s*daemon\s*=' "$root/Cargo.toml" && features="--features daemon${lib_features:+,redis}"
    # shellcheck disable=SC2086
    (cd "$root" && cargo build --release --locked $features --bin lms-longpolld) || die "daemon build failed"
fi
# (In a variable first: inside ${...:-...} the "}" of "{db}" would end the expansion.)
default_daemon_cmd="$daemon_bin --db {db} --listen 127.0.0.1:{port} --token-key {key_id}:{secret} --trust-proxy"
export LMSRT_DAEMON_CMD="${LMSRT_DAEMON_CMD:-$default_daemon_cmd}"

# -- 3. the site ----------------------------------------------------------------------------
work="$(mktemp -d /tmp/lmsrt-e2e.XXXXXX)"
chmod 755 "$work"
host="127.0.$((RANDOM % 200 + 20)).$((RANDOM % 250 + 2))"
while [ -e "/etc/wordpress/config-$host.php" ]; do host="127.0.$((RANDOM % 200 + 20)).$((RANDOM % 250 + 2))"; done
content="$work/wp-content"
site_cfg="/etc/wordpress/config-$host.php"
mkdir -p "$content/plugins" "$content/themes" "$content/mu-plugins"
export LMSRT_E2E_WORK="$work" LMSRT_E2E_CONTENT="$content"
pids=()

cleanup() {
    local rc=$?
    [ -n "${hold_pid:-}" ] && kill "$hold_pid" 2>/dev/null
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    [ -f "$work/daemon.pid" ] && kill "$(cat "$work/daemon.pid")" 2>/dev/null
    declare -F stop_fpm >/dev/null && stop_fpm
    sleep 0.5
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null; done
    rm -f "$site_cfg"
    if [ "${LMSRT_E2E_KEEP:-0}" = 1 ]; then echo "e2e: kept $work"; else rm -rf "$work"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "${1:-127.0.0.1}"; }
port="$(free_port "$host")"
dport="$(free_port)"
base="http://$host:$port"

log "plugin build"
# With the library bundled (lib/liblms_realtime.so), as a site owner installs it; the phases
# before php-setups load the one LMSRT_LIBRARY names (the site config below).
bash "$wpdir/build.sh" --with-library --out "$work/dist" >/dev/null || die "build.sh failed"
cp -R "$work/dist/lms-realtime" "$content/plugins/lms-realtime"
cp -R "$work/dist/lms-realtime-demo" "$content/plugins/lms-realtime-demo"
cp -R "$here/fixtures/theme" "$content/themes/lmsrt-e2e"
cp -R "$here/fixtures/lms-theme" "$content/themes/lms-chat-fixture"
cp "$here/fixtures/lmsrt-e2e.php" "$content/mu-plugins/lmsrt-e2e.php"

log "MariaDB in $work/mysql"
mkdir -p "$work/mysql/data"
chown -R mysql:mysql "$work/mysql"
mariadb-install-db --no-defaults --user=mysql --datadir="$work/mysql/data" --auth-root-authentication-method=socket \
    >"$work/mysql/install.log" 2>&1 || die "mariadb-install-db failed (see $work/mysql/install.log)"
sock="$work/mysql/mysqld.sock"
mariadbd --no-defaults --user=mysql --datadir="$work/mysql/data" --skip-networking --socket="$sock" \
    --pid-file="$work/mysql/mysqld.pid" --log-error="$work/mysql/error.log" --innodb-buffer-pool-size=64M 9>&- &
pids+=($!)
for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || die "MariaDB did not start (see $work/mysql/error.log)"
dbpass="$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
mariadb --no-defaults --socket="$sock" -uroot -e "CREATE DATABASE lmsrt_e2e; CREATE USER 'lmsrt'@'localhost' IDENTIFIED BY '$dbpass'; GRANT ALL ON lmsrt_e2e.* TO 'lmsrt'@'localhost';" \
    || die "cannot create the database"

salt() { head -c 48 /dev/urandom | base64 | tr -d '\n/+='; }
mkdir -p "$work/store"
cat >"$site_cfg" <<PHP
<?php
// Written by bindings/wordpress/tests/e2e/run.sh; removed when it ends.
define( 'DB_NAME', 'lmsrt_e2e' );
define( 'DB_USER', 'lmsrt' );
define( 'DB_PASSWORD', '$dbpass' );
define( 'DB_HOST', 'localhost:$sock' );
define( 'WP_CONTENT_DIR', '$content' );
define( 'WP_HTTP_BLOCK_EXTERNAL', true );
define( 'DISABLE_WP_CRON', true );
define( 'AUTOMATIC_UPDATER_DISABLED', true );
define( 'WP_DEBUG', true );
define( 'WP_DEBUG_DISPLAY', false );
define( 'WP_DEBUG_LOG', '$work/wp-debug.log' );
// php-setups.sh runs php-fpm with env[LMSRT_E2E_BUNDLED_LIBRARY]: the plugin then finds the
// library it bundles, as on a site without this constant.
if ( ! getenv( 'LMSRT_E2E_BUNDLED_LIBRARY' ) ) {
	define( 'LMSRT_LIBRARY', '$lib' );
}
if ( ! getenv( 'LMSRT_E2E_NO_DB_PATH' ) ) {
	define( 'LMSRT_DB_PATH', '$work/store/events.db' );
}
define( 'AUTH_KEY', '$(salt)' );
define( 'SECURE_AUTH_KEY', '$(salt)' );
define( 'LOGGED_IN_KEY', '$(salt)' );
define( 'NONCE_KEY', '$(salt)' );
define( 'AUTH_SALT', '$(salt)' );
define( 'SECURE_AUTH_SALT', '$(salt)' );
define( 'LOGGED_IN_SALT', '$(salt)' );
define( 'NONCE_SALT', '$(salt)' );
\$table_prefix = 'wp_';
PHP

log "WordPress install at $base"
export LMSRT_E2E_SITE="$work/site.json"
php "$here/setup-site.php" install "$base" >"$work/setup.log" 2>&1 || { cat "$work/setup.log"; die "wp_install failed"; }

passed=0 failed=0 skipped=0
# check "what it shows" command...: one result, counted and printed TAP-style.
check() {
    local name="$1"; shift
    if "$@" >>"$work/checks.log" 2>&1; then
        passed=$((passed + 1)); echo "ok - $name"
    else
        failed=$((failed + 1)); echo "not ok - $name (see $work/checks.log)"; tail -5 "$work/checks.log"
    fi
}
site() { php "$here/setup-site.php" "$@" "$base" ; }
snap() { php "$here/setup-site.php" snapshot "$base" "$work/snap-$1.json" >/dev/null; }
same() { php "$here/setup-site.php" compare "$base" "$work/snap-$1.json" "$work/snap-$2.json" ${3:-}; }

log "the LMS chat theme's data, before the plugin is ever active (fixture theme, its tables and rows)"
export LMSRT_E2E_LMS_SITE="$work/lms-site.json"
php "$here/setup-site.php" lms-install "$base" "$LMSRT_E2E_LMS_SITE" >>"$work/setup.log" 2>&1 || { cat "$work/setup.log"; die "LMS fixture install failed"; }
snap 0
# Deleting the plugin from the admin runs uninstall.php, even for a plugin never activated.
check "deleting the never-activated plugin leaves the theme's tables byte-identical" \
    bash -c "php '$here/setup-site.php' uninstall '$base' && php '$here/setup-site.php' snapshot '$base' '$work/snap-1.json' && php '$here/setup-site.php' compare '$base' '$work/snap-0.json' '$work/snap-1.json'"
php "$here/setup-site.php" configure "$base" "$LMSRT_E2E_SITE" >>"$work/setup.log" 2>&1 || { cat "$work/setup.log"; die "site configuration failed"; }
snap 2
check "activating the plugin leaves the theme's tables byte-identical" same 0 2

log "php-fpm and nginx"
# start_fpm <mode> [bundled]: writes the pool config of a PHP set-up and (re)starts php-fpm on the
# same socket ($work/php-fpm.sock); returns once the site answers, 1 if php-fpm does not come up
# (its log: $work/php-fpm.log, PHP's start-up messages: $work/php-startup.log). The master runs
# as root, so the preload modes need opcache.preload_user (www-data runs the preload).
#   ffi               php_admin_value[ffi.enable] = true (FFI::cdef per request)
#   preload           ffi.enable=preload, ffi.preload=$work/lms_realtime.h (php-setups.sh writes
#                     it with write-header.php), opcache.enable=1,
#                     opcache.preload=<installed plugin>/lib/php-ext/preload.php
#   noffi             php_admin_value[ffi.enable] = false (FFI unavailable)
#   badpreload        as preload without ffi.preload, LMSRT_LIBRARY=/nonexistent/... in the
#                     master's environment: preload.php finds no library
#   badpreload-user   as preload without ffi.preload: PHP refuses preload.php's FFI::load()
#                     under opcache.preload_user
# "bundled": the workers get env[LMSRT_E2E_BUNDLED_LIBRARY] (the site config then leaves
# LMSRT_LIBRARY undefined and the plugin finds the library it bundles).
stop_fpm() {
    local pidfile="$LMSRT_E2E_WORK/php-fpm.pid" pid
    [ -f "$pidfile" ] || return 0
    pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
    rm -f "$pidfile" "$LMSRT_E2E_WORK/php-fpm.sock"
}
start_fpm() {
    local mode="$1" w="$LMSRT_E2E_WORK" plugin="$LMSRT_E2E_CONTENT/plugins/lms-realtime"
    local ini=() env=() admin=() pid
    case "$mode" in
        ffi) admin=("php_admin_value[ffi.enable] = true") ;;
        noffi) admin=("php_admin_value[ffi.enable] = false") ;;
        preload | badpreload | badpreload-user)
            ini=(-d ffi.enable=preload -d opcache.enable=1 -d "opcache.preload=$plugin/lib/php-ext/preload.php"
                 -d opcache.preload_user=www-data -d "error_log=$w/php-startup.log" -d log_errors=1)
            touch "$w/php-startup.log" && chmod 666 "$w/php-startup.log"
            if [ "$mode" = preload ]; then
                [ -f "$w/lms_realtime.h" ] || { echo "start_fpm: no $w/lms_realtime.h" >&2; return 1; }
                ini+=(-d "ffi.preload=$w/lms_realtime.h")
            fi
            [ "$mode" = badpreload ] && env=(LMSRT_LIBRARY=/nonexistent/liblms_realtime.so)
            ;;
        *) echo "start_fpm: unknown mode $mode" >&2; return 2 ;;
    esac
    [ "${2:-}" = bundled ] && admin+=("env[LMSRT_E2E_BUNDLED_LIBRARY] = 1")
    stop_fpm
    {
        printf '[global]\npid = %s\nerror_log = %s\ndaemonize = no\n' "$w/php-fpm.pid" "$w/php-fpm.log"
        printf '[lmsrt]\nuser = root\ngroup = root\nlisten = %s\nlisten.mode = 0666\npm = static\n' "$w/php-fpm.sock"
        printf 'pm.max_children = %s\ncatch_workers_output = yes\n' "${LMSRT_E2E_FPM_CHILDREN:-16}"
        printf 'php_admin_value[error_log] = %s\nphp_admin_flag[log_errors] = on\n' "$w/php-errors.log"
        for line in "${admin[@]}"; do printf '%s\n' "$line"; done
    } >"$w/php-fpm.conf"
    echo "php-fpm: $mode ${2:-} ${ini[*]} ${env[*]}" >>"$w/php-fpm.log"
    # Its output to a file: a php-fpm started by php-setups.sh must not hold run.sh's pipe open.
    env "${env[@]}" php-fpm8.2 -R -y "$w/php-fpm.conf" "${ini[@]}" >>"$w/php-fpm.out" 2>&1 9>&- &
    pid=$!
    # Ready: the socket is there and, once nginx runs, the site answers through it.
    for _ in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || return 1
        if [ -S "$w/php-fpm.sock" ]; then
            [ -f "$w/nginx/nginx.pid" ] || return 0
            [ "$(curl -s -o /dev/null -w '%{http_code}' "$LMSRT_E2E_BASE/wp-login.php")" = 200 ] && return 0
        fi
        sleep 0.1
    done
    return 1
}
export -f start_fpm stop_fpm
export LMSRT_E2E_BASE="$base"
start_fpm ffi || die "php-fpm did not start (see $work/php-fpm.log)"
mkdir -p "$work/nginx/tmp"
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
user www-data;
events { worker_connections 4096; }
http {
    include /etc/nginx/mime.types;
    log_format timed '\$remote_addr [\$time_local] "\$request" \$status \$body_bytes_sent \$request_time';
    access_log $work/nginx/access.log timed;
    client_body_temp_path $work/nginx/tmp/body;
    fastcgi_temp_path $work/nginx/tmp/fastcgi;
    proxy_temp_path $work/nginx/tmp/proxy;
    uwsgi_temp_path $work/nginx/tmp/uwsgi;
    scgi_temp_path $work/nginx/tmp/scgi;
    server {
        listen $host:$port;
        root /usr/share/wordpress;
        index index.php;
        location ^~ /wp-content/ {
            alias $content/;
            location ~ \.php\$ { return 403; }
        }
        location /lmsrt/ {
            proxy_pass http://127.0.0.1:$dport/;
            proxy_http_version 1.1;
            proxy_set_header X-Real-IP \$remote_addr;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 75s;
            proxy_connect_timeout 2s;
        }
        location ~ \.php\$ {
            try_files \$uri =404;
            fastcgi_pass unix:$work/php-fpm.sock;
            fastcgi_read_timeout 75s;
            # Our own parameters: this machine's fastcgi_params drops the port from HTTP_HOST.
            fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
            fastcgi_param SCRIPT_NAME \$fastcgi_script_name;
            fastcgi_param QUERY_STRING \$query_string;
            fastcgi_param REQUEST_METHOD \$request_method;
            fastcgi_param CONTENT_TYPE \$content_type;
            fastcgi_param CONTENT_LENGTH \$content_length;
            fastcgi_param REQUEST_URI \$request_uri;
            fastcgi_param DOCUMENT_URI \$document_uri;
            fastcgi_param DOCUMENT_ROOT \$document_root;
            fastcgi_param SERVER_PROTOCOL \$server_protocol;
            fastcgi_param REQUEST_SCHEME \$scheme;
            fastcgi_param GATEWAY_INTERFACE CGI/1.1;
            fastcgi_param SERVER_SOFTWARE nginx;
            fastcgi_param REMOTE_ADDR \$remote_addr;
            fastcgi_param REMOTE_PORT \$remote_port;
            fastcgi_param SERVER_ADDR \$server_addr;
            fastcgi_param SERVER_PORT \$server_port;
            fastcgi_param SERVER_NAME \$server_name;
            fastcgi_param HTTP_HOST \$http_host;
        }
        location / { try_files \$uri \$uri/ /index.php?\$args; }
    }
}
CONF
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" 9>&- &
pids+=($!)
for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$base/wp-login.php" 2>/dev/null && break
    sleep 0.1
done
curl -fsS -o /dev/null "$base/wp-login.php" || die "the site does not answer on $base (see $work/nginx/error.log, $work/php-fpm.log)"

export LMSRT_WP_HOST="$host" LMSRT_E2E_WORK="$work" LMSRT_E2E_BASE="$base" LMSRT_E2E_DAEMON_PORT="$dport" \
       LMSRT_E2E_LIBRARY="$lib" LMSRT_E2E_DAEMON_BIN="$daemon_bin" LMSRT_E2E_DB="$work/store/events.db" \
       LMSRT_E2E_ROOT="$root"

if [ -n "${LMSRT_E2E_HOLD:-}" ]; then
    # Development: keep the site up for running tests by hand; stop with Ctrl-C (or kill).
    { echo "export LMSRT_WP_HOST=$host LMSRT_E2E_WORK=$work LMSRT_E2E_BASE=$base LMSRT_E2E_DAEMON_PORT=$dport LMSRT_E2E_SITE=$LMSRT_E2E_SITE"
      echo "export LMSRT_E2E_LIBRARY=$lib LMSRT_E2E_DAEMON_BIN=$daemon_bin LMSRT_E2E_DB=$work/store/events.db LMSRT_E2E_ROOT=$root"
      printf 'export LMSRT_DAEMON_CMD=%q\n' "$LMSRT_DAEMON_CMD"; } >"$LMSRT_E2E_HOLD"
    echo "e2e: holding the site at $base (environment in $LMSRT_E2E_HOLD)"
    while true; do sleep 3600 9>&- & hold_pid=$!; wait "$hold_pid"; done
fi

count_tap() { # totals from a node --test TAP log
    local f="$1"
    passed=$((passed + $(sed -n 's/^# pass \([0-9]*\)/\1/p' "$f" | tail -1)))
    failed=$((failed + $(sed -n 's/^# fail \([0-9]*\)/\1/p' "$f" | tail -1)))
    skipped=$((skipped + $(sed -n 's/^# skipped \([0-9]*\)/\1/p' "$f" | tail -1)))
}

# -- 5a. PHPUnit inside WordPress -----------------------------------------------------------
if [ -z "$only" ] || [ "$only" = phpunit ]; then
    log "PHPUnit (plugin classes inside WordPress)"
    LMSRT_WP_HOST="$host" phpunit -c "$wpdir/tests/phpunit/phpunit.xml.dist" --log-junit "$work/phpunit.xml" 2>&1 | tee "$work/phpunit.log"
    if [ -f "$work/phpunit.xml" ]; then
        read -r t f e s < <(php -r '$x = simplexml_load_file($argv[1]); $a = $x->testsuite->attributes(); echo (int)$a["tests"], " ", (int)$a["failures"], " ", (int)$a["errors"], " ", (int)$a["skipped"], "\n";' "$work/phpunit.xml")
        passed=$((passed + t - f - e - s)); failed=$((failed + f + e)); skipped=$((skipped + s))
    else
        failed=$((failed + 1))
    fi
fi

ensure_playwright() { # the browser driver, for the browser and the LMS phases alike
    log "playwright-core (npm, no browser download)"
    if [ ! -f "$here/node_modules/playwright-core/package.json" ]; then
        (cd "$here" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --loglevel=error >/dev/null) \
            || die "npm install playwright-core failed"
    fi
}

# -- 5b. browser scenarios ------------------------------------------------------------------
if [ -z "$only" ] || [ "$only" = browser ]; then
    ensure_playwright
    log "browser scenarios (node --test)"
    node --test --test-concurrency=1 --test-reporter=tap "$here"/chat-*.test.mjs "$here"/legacy-*.test.mjs 2>&1 | tee "$work/node.tap"
    count_tap "$work/node.tap"
fi

# -- 5c. the PHP set-ups, php-fpm restarted for each (on the demo site, before the LMS theme) --
if [ -z "$only" ] || [ "$only" = php-setups ]; then
    log "PHP set-ups (php-setups.sh)"
    bash "$here/php-setups.sh" 2>&1 | tee "$work/php-setups.tap"
    count_tap "$work/php-setups.tap"
fi

# -- 5d. the LMS chat theme -----------------------------------------------------------------
if [ -z "$only" ] || [ "$only" = browser ] || [ "$only" = lms ]; then
    pages_answer() { # the home page, the login page and admin-ajax answer without a server error
        local u code
        for u in "$base/" "$base/wp-login.php" "$base/wp-admin/admin-ajax.php?action=lms_unified_long_poll"; do
            code="$(curl -s -o /dev/null -w '%{http_code}' "$u")"
            [ "$code" -lt 500 ] || { echo "$u: $code"; return 1; }
        done
    }
    integration_is() { [ "$(site integration)" = "$1" ] || { echo "integration: $(site integration), want $1"; return 1; }; }
    lms_browser() { # label
        LMSRT_E2E_PATH_LABEL="$1" LMSRT_E2E_EXPECT_PLUGIN=1 LMSRT_E2E_LATENCY_OUT="$work/latency.jsonl" \
            node --test --test-concurrency=1 --test-reporter=tap "$here"/lms-*.test.mjs 2>&1 | tee "$work/lms-$1.tap"
        count_tap "$work/lms-$1.tap"
    }

    ensure_playwright
    log "LMS theme, way in (b): switching to the unmodified theme while the plugin is active"
    site lms-theme >>"$work/setup.log" 2>&1
    check "every page answers with the LMS theme and the plugin active (no 'Cannot declare class')" pages_answer
    check "the plugin meets the unmodified theme through its hooks, on the store" integration_is "theme-hooks store"
    lms_browser store

    log "LMS theme, way in (a): the theme's one-line change (class LMS_Chat_Realtime extends LMSRT_Chat_Realtime_Base)"
    theme_rt="$content/themes/lms-chat-fixture/includes/class-lms-chat-realtime.php"
    cp "$theme_rt" "$work/theme-realtime.orig.php"
    sed -i 's/^class LMS_Chat_Realtime$/class LMS_Chat_Realtime extends LMSRT_Chat_Realtime_Base/' "$theme_rt"
    check "the change is one line" bash -c "[ \"\$(diff '$work/theme-realtime.orig.php' '$theme_rt' | grep -c '^>')\" = 1 ]"
    check "every page answers with the extended theme class" pages_answer
    check "the plugin uses the theme's own class" integration_is "theme-extends store"
    lms_browser store-extends
    cp "$work/theme-realtime.orig.php" "$theme_rt"

    log "activating the plugin while the LMS theme is active"
    site deactivate >>"$work/setup.log" 2>&1
    check "activation succeeds with the theme's classes loaded first" site activate
    check "every page answers after activation" pages_answer
fi

# -- 5e. uninstall ----------------------------------------------------------------------------
if [ -z "$only" ] || [ "$only" = browser ]; then
    log "uninstall"
    snap 3
    if LMSRT_E2E_NO_DB_PATH=1 php "$here/setup-site.php" uninstall-check "$base" 2>&1 | tee "$work/uninstall.log" | tail -1 | grep -q '^ok'; then
        passed=$((passed + 1)); echo "ok - uninstall removes the plugin's options, transients, table, schedule and store"
    else
        failed=$((failed + 1)); echo "not ok - uninstall check"; cat "$work/uninstall.log"
    fi
    snap 4
    check "uninstall leaves the theme's tables byte-identical" same 3 4
    check "the theme's tables keep their layout from before activation to after uninstall" same 0 4 schema
fi

if [ -s "$work/php-errors.log" ]; then
    # WordPress 6.1 core raises PHP 8.2 deprecation notices; anything else is worth a look.
    deprecated="$(grep -c 'PHP Deprecated' "$work/php-errors.log")"
    if grep -v 'PHP Deprecated' "$work/php-errors.log" | grep -q .; then
        log "PHP errors logged by php-fpm (first 20 lines, $deprecated deprecation notices left out)"
        grep -v 'PHP Deprecated' "$work/php-errors.log" | head -20
    fi
fi
echo
echo "e2e summary: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
