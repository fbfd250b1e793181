<?php

/**
 * Benchmarks of the PHP binding, each next to the alternative measured in the same run.
 *
 *   LMSRT_LIBRARY=target/release/liblms_realtime.so php -d ffi.enable=1 benches/php/bench.php [quick]
 *
 * Needs php-cli (FFI), php-sqlite3 (PDO-SQLite, the alternative) and opcache (the preload
 * figure). Prints a Markdown report (keep it in a benches/journal/ file; today's figure goes to benches/README.md). The scenarios:
 *
 *  1. single appends/s from one process: EventStore::append() vs a PDO-SQLite INSERT of the
 *     same row into a table with the same columns and indexes, same WAL and synchronous mode;
 *  2. 8 processes appending at once: per-append latency p50/p99/max and stalls > 50 ms, for
 *     the binding and for PDO;
 *  3. a fetch of 50 events over 10 channels at the live tail, decoded into PHP objects, vs the
 *     same rows read with PDO and json_decode;
 *  4. binding set-up per request under preload (FFI::scope + ABI check + out-params) vs
 *     FFI::cdef() parsing the header (what every request would pay without preload), plus the
 *     cost of opening the store per request;
 *  5. CPU of a process blocked in wait() for 10 s vs the sleep-and-query loop it replaces
 *     (usleep 0.1 s + one query);
 *  6. 8 processes appending at once to a store on Redis (#21), beside the same on SQLite and
 *     raw round trips to the same redis-server: XADD from 8 PHP processes over a plain socket
 *     (no library), and redis-benchmark's PING and XADD with 8 clients; rounds alternate the
 *     kinds. Starts its own redis-server (loopback, free port, no persistence) and needs a
 *     library built with `--features redis`. `bench.php redis [quick]` runs only this one.
 */

declare(strict_types=1);

require __DIR__ . '/../../php-ext/tests/bootstrap.php';

use LmsRealtime\EventStore;
use LmsRealtime\FfiNative;
use LmsRealtime\Library;

const SCHEMA = <<<'SQL'
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, event_type TEXT NOT NULL,
    priority INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 4), channel_id INTEGER NOT NULL CHECK (channel_id > 0),
    message_id INTEGER, thread_id INTEGER, user_id INTEGER NOT NULL, data TEXT NOT NULL,
    timestamp INTEGER NOT NULL, expires_at INTEGER NOT NULL, idem_key TEXT);
CREATE INDEX IF NOT EXISTS events_lane ON events (channel_id, priority, id, expires_at);
CREATE INDEX IF NOT EXISTS events_expiry ON events (expires_at);
CREATE UNIQUE INDEX IF NOT EXISTS events_idem ON events (idem_key) WHERE idem_key IS NOT NULL;
SQL;

const DATA = ['text' => 'Hello, this is a chat message of ordinary length.', 'user' => 'alice', 'attachments' => []];

function pdo(string $path): PDO
{
    $pdo = new PDO('sqlite:' . $path, null, null, [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION]);
    $pdo->exec('PRAGMA journal_mode = WAL');
    $pdo->exec('PRAGMA synchronous = NORMAL');
    $pdo->exec('PRAGMA busy_timeout = 5000');
    $pdo->exec(SCHEMA);
    return $pdo;
}

function pdoInsert(PDO $pdo): PDOStatement
{
    return $pdo->prepare('INSERT INTO events (event_type, priority, channel_id, message_id, thread_id, user_id, data, timestamp, expires_at)
                          VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)');
}

function pdoAppend(PDOStatement $st, int $channel, int $i): void
{
    $now = (int) (microtime(true) * 1000);
    $st->execute(['message_create', 1, $channel, $i, null, 3, json_encode(DATA), $now, $now + 3_600_000]);
}

/** @param list<float> $xs */
function pct(array $xs, float $p): float
{
    sort($xs);
    return $xs[max(0, (int) ceil($p / 100 * count($xs)) - 1)];
}

function tmpdir(): string
{
    $d = sys_get_temp_dir() . '/lmsrt-bench-' . getmypid() . '-' . bin2hex(random_bytes(3));
    mkdir($d);
    return $d;
}

function rmtree(string $d): void
{
    foreach (glob("$d/*") ?: [] as $f) {
        unlink($f);
    }
    rmdir($d);
}

/** @param list<string> $args */
function resp(array $args): string
{
    $out = '*' . count($args) . "\r\n";
    foreach ($args as $a) {
        $out .= '$' . strlen($a) . "\r\n" . $a . "\r\n";
    }
    return $out;
}

/**
 * A redis-server of the bench's own on a free loopback port, no persistence.
 *
 * @return array{proc: resource, port: int, dir: string}
 */
function redisStart(): array
{
    $l = stream_socket_server('tcp://127.0.0.1:0');
    $name = (string) stream_socket_get_name($l, false);
    fclose($l);
    $port = (int) substr($name, strrpos($name, ':') + 1);
    $dir = tmpdir();
    $proc = proc_open(['redis-server', '--port', (string) $port, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', $dir],
        [0 => ['file', '/dev/null', 'r'], 1 => ['file', '/dev/null', 'w'], 2 => ['file', '/dev/null', 'w']], $pipes);
    $deadline = microtime(true) + 10;
    while (($s = @stream_socket_client("tcp://127.0.0.1:$port", $errno, $error, 0.2)) === false) {
        if (microtime(true) > $deadline) {
            throw new RuntimeException("redis-server on $port did not start");
        }
        usleep(20_000);
    }
    fclose($s);
    return ['proc' => $proc, 'port' => $port, 'dir' => $dir];
}

/** @param array{proc: resource, port: int, dir: string} $r */
function redisStop(array $r): void
{
    proc_terminate($r['proc'], 9);
    proc_close($r['proc']);
    rmtree($r['dir']);
}

/**
 * Per-append latencies (ms) of 8 worker processes appending $per each at once.
 *
 * @return array{0: list<float>, 1: float} latencies and wall seconds
 */
function eightAppenders(string $kind, string $db, int $per): array
{
    $d = tmpdir();
    $startAt = microtime(true) + 1.0;
    $procs = [];
    for ($w = 0; $w < 8; $w++) {
        $procs[] = proc_open([PHP_BINARY, '-d', 'ffi.enable=1', __FILE__, 'worker', $kind, $db, (string) $per, (string) $startAt, "$d/lat-$w.json"], [], $pipes);
    }
    foreach ($procs as $pr) {
        proc_close($pr);
    }
    $wall = microtime(true) - $startAt;
    $lat = [];
    for ($w = 0; $w < 8; $w++) {
        $lat = array_merge($lat, json_decode((string) file_get_contents("$d/lat-$w.json"), true) ?? []);
    }
    rmtree($d);
    return [$lat, $wall];
}

function cpuMs(): float
{
    $r = getrusage();
    return ($r['ru_utime.tv_sec'] + $r['ru_stime.tv_sec']) * 1e3 + ($r['ru_utime.tv_usec'] + $r['ru_stime.tv_usec']) / 1e3;
}

// ---- child modes -------------------------------------------------------------------------

if (($argv[1] ?? '') === 'worker') {
    // worker <binding|pdo> <db> <n> <start_at_unix_float> <out>
    [, , $kind, $db, $n, $startAt, $out] = $argv;
    $n = (int) $n;
    if ($kind === 'binding') {
        $s = EventStore::open($db);
        $append = static fn (int $i) => $s->append('message_create', 1 + $i % 10, DATA, messageId: $i, userId: 3);
    } elseif ($kind === 'raw') {
        // $db is host:port: one XADD of the same payload per append, a round trip each.
        $sock = stream_socket_client("tcp://$db", $errno, $error, 2.0);
        stream_set_write_buffer($sock, 0);
        $append = static function (int $i) use ($sock): void {
            fwrite($sock, resp(['XADD', 'lmsrt-bench:raw', '*', 'c', (string) (1 + $i % 10), 'd', json_encode(DATA)]));
            if (($line = fgets($sock)) === false || $line[0] !== '$') {
                throw new RuntimeException('XADD failed: ' . var_export($line, true));
            }
            fgets($sock);
        };
    } else {
        $st = pdoInsert(pdo($db));
        $append = static fn (int $i) => pdoAppend($st, 1 + $i % 10, $i);
    }
    while (microtime(true) < (float) $startAt) {
        usleep(200);
    }
    $lat = [];
    for ($i = 0; $i < $n; $i++) {
        $t = hrtime(true);
        $append($i);
        $lat[] = (hrtime(true) - $t) / 1e6;
    }
    file_put_contents($out, json_encode($lat));
    exit(0);
}
if (($argv[1] ?? '') === 'setup') {
    // setup <n>: run under preload; per-request binding set-up.
    $n = (int) $argv[2];
    $times = [];
    for ($i = 0; $i < $n; $i++) {
        Library::reset();
        $t = hrtime(true);
        $native = new FfiNative(Library::ffi());
        $times[] = (hrtime(true) - $t) / 1e3;
    }
    echo json_encode(['source' => Library::source(), 'times' => $times]);
    exit(0);
}
if (($argv[1] ?? '') === 'waitcpu') {
    // waitcpu <binding|loop> <db> <seconds>
    [, , $kind, $db, $secs] = $argv;
    $secs = (float) $secs;
    if ($kind === 'binding') {
        $s = EventStore::open($db);
        $cursor = $s->headCursor();
        $c0 = cpuMs();
        $t0 = microtime(true);
        $s->wait([999], $cursor, timeout: $secs);
    } else {
        $pdo = pdo($db);
        $q = $pdo->prepare('SELECT id, data FROM events WHERE channel_id = ? AND id > ? ORDER BY id LIMIT 50');
        $c0 = cpuMs();
        $t0 = microtime(true);
        while (microtime(true) - $t0 < $secs) {
            $q->execute([999, 0]);
            $q->fetchAll();
            usleep(100_000);
        }
    }
    echo json_encode(['cpu_ms' => cpuMs() - $c0, 'wall_ms' => (microtime(true) - $t0) * 1e3]);
    exit(0);
}

// ---- the run ---------------------------------------------------------------------------------

$quick = in_array('quick', $argv, true);
$onlyRedis = in_array('redis', $argv, true);
$lib = Library::resolvePath();
Library::ffi($lib);
$report = [];
$report[] = sprintf('Library: `%s` (%s, engines: %s), PHP %s, SQLite %s (PDO), load %s', basename(dirname($lib)) . '/' . basename($lib), Library::version(), implode(' ', Library::engines()), PHP_VERSION, in_array('sqlite', PDO::getAvailableDrivers(), true) ? (new PDO('sqlite::memory:'))->query('select sqlite_version()')->fetchColumn() : 'n/a', implode(' ', array_map(fn ($x) => sprintf('%.2f', $x), sys_getloadavg() ?: [])));
if (!$onlyRedis) {

    // 1. single appends/s
    $n = $quick ? 2000 : 10000;
    $rates = ['binding' => [], 'pdo' => []];
    for ($round = 0; $round < 3; $round++) {
        foreach (['binding', 'pdo'] as $kind) {
            $d = tmpdir();
            if ($kind === 'binding') {
                $s = EventStore::open("$d/e.db");
                $s->append('warmup', 1);
                $t = hrtime(true);
                for ($i = 0; $i < $n; $i++) {
                    $s->append('message_create', 1 + $i % 10, DATA, messageId: $i, userId: 3);
                }
                $el = (hrtime(true) - $t) / 1e9;
                $s->close();
            } else {
                $st = pdoInsert(pdo("$d/e.db"));
                pdoAppend($st, 1, 0);
                $t = hrtime(true);
                for ($i = 0; $i < $n; $i++) {
                    pdoAppend($st, 1 + $i % 10, $i);
                }
                $el = (hrtime(true) - $t) / 1e9;
                $st = null;
            }
            $rates[$kind][] = $n / $el;
            rmtree($d);
        }
    }
    $b = pct($rates['binding'], 50);
    $p = pct($rates['pdo'], 50);
    $report[] = "\n### 1. Single appends from one PHP process ($n appends × 3 rounds, median)\n";
    $report[] = '| | appends/s | µs/append |';
    $report[] = '|---|---:|---:|';
    $report[] = sprintf('| binding `EventStore::append()` | %.0f | %.1f |', $b, 1e6 / $b);
    $report[] = sprintf('| PDO-SQLite INSERT, same row and indexes | %.0f | %.1f |', $p, 1e6 / $p);
    $report[] = sprintf("\nRatio binding / PDO: **%.2f** (target ≥ 0.8). Rounds: binding %s; PDO %s.", $b / $p, implode(', ', array_map(fn ($x) => sprintf('%.0f', $x), $rates['binding'])), implode(', ', array_map(fn ($x) => sprintf('%.0f', $x), $rates['pdo'])));

    // 2. 8 processes at once
    $per = $quick ? 300 : 1500;
    $report[] = "\n### 2. 8 PHP processes appending at once ($per appends each)\n";
    $report[] = '| | total appends/s | p50 ms | p99 ms | max ms | appends > 50 ms |';
    $report[] = '|---|---:|---:|---:|---:|---:|';
    foreach (['binding', 'pdo'] as $kind) {
        $d = tmpdir();
        if ($kind === 'binding') {
            EventStore::open("$d/e.db")->close();
        } else {
            pdo("$d/e.db");
        }
        $startAt = microtime(true) + 1.0;
        $procs = [];
        for ($w = 0; $w < 8; $w++) {
            $procs[] = proc_open([PHP_BINARY, '-d', 'ffi.enable=1', __FILE__, 'worker', $kind, "$d/e.db", (string) $per, (string) $startAt, "$d/lat-$w.json"], [], $pipes);
        }
        foreach ($procs as $pr) {
            proc_close($pr);
        }
        $wall = microtime(true) - $startAt;
        $lat = [];
        for ($w = 0; $w < 8; $w++) {
            $lat = array_merge($lat, json_decode((string) file_get_contents("$d/lat-$w.json"), true));
        }
        $stalls = count(array_filter($lat, fn ($x) => $x > 50));
        $report[] = sprintf('| %s | %.0f | %.2f | %.2f | %.1f | %d |', $kind === 'binding' ? 'binding' : 'PDO-SQLite (busy_timeout 5 s)', count($lat) / $wall, pct($lat, 50), pct($lat, 99), max($lat), $stalls);
        rmtree($d);
    }
    $report[] = "\nTargets for the binding: p99 ≤ 5 ms, no append > 50 ms.";

    // 3. fetch of 50 events over 10 channels at the live tail
    $iters = $quick ? 1000 : 5000;
    $d = tmpdir();
    $s = EventStore::open("$d/e.db");
    for ($i = 0; $i < 5000; $i++) {
        $s->append('message_create', 1 + $i % 10, DATA, messageId: $i, userId: 3);
    }
    $cursor = $s->headCursor();
    for ($i = 0; $i < 50; $i++) {
        $s->append($i % 5 === 0 ? 'reaction_update' : 'message_create', 1 + $i % 10, DATA, messageId: $i, userId: 3);
    }
    $channels = range(1, 10);
    $lat = [];
    for ($i = 0; $i < $iters + 100; $i++) {
        $t = hrtime(true);
        $batch = $s->fetch($channels, $cursor, limit: 50);
        $el = (hrtime(true) - $t) / 1e3;
        if ($i >= 100) {
            $lat[] = $el;
        }
    }
    assert(count($batch) === 50);
    $fetched = count($batch);
    $s->close();
    // The alternative: the same rows with PDO (events table of the store itself), decoded.
    $pdo = new PDO("sqlite:$d/e.db");
    $pdo->exec('PRAGMA journal_mode = WAL');
    $q = $pdo->prepare('SELECT id, event_type, priority, channel_id, message_id, thread_id, user_id, data, timestamp, expires_at
                        FROM lmsrt_events WHERE id > ? AND channel_id IN (1,2,3,4,5,6,7,8,9,10) ORDER BY id LIMIT 50');
    $from = 5000;
    $plat = [];
    for ($i = 0; $i < $iters + 100; $i++) {
        $t = hrtime(true);
        $q->execute([$from]);
        $rows = $q->fetchAll(PDO::FETCH_ASSOC);
        foreach ($rows as &$r) {
            $r['data'] = json_decode($r['data'], true);
        }
        unset($r);
        $el = (hrtime(true) - $t) / 1e3;
        if ($i >= 100) {
            $plat[] = $el;
        }
    }
    $pdo = null;
    rmtree($d);
    $report[] = "\n### 3. Fetch of 50 events over 10 channels at the live tail, decoded into PHP values ($iters fetches)\n";
    $report[] = '| | p50 µs | p99 µs | max µs |';
    $report[] = '|---|---:|---:|---:|';
    $report[] = sprintf('| binding `fetch()` → `Batch` of `Event` objects (%d events) | %.0f | %.0f | %.0f |', $fetched, pct($lat, 50), pct($lat, 99), max($lat));
    $report[] = sprintf('| PDO `SELECT … WHERE id > ? AND channel_id IN (…) ORDER BY id LIMIT 50` + `json_decode` (the legacy query: no lanes, no expiry or gap check) | %.0f | %.0f | %.0f |', pct($plat, 50), pct($plat, 99), max($plat));
    $report[] = "\nTarget for the binding: p99 ≤ 200 µs.";

    // 4. set-up per request
    $n = $quick ? 2000 : 20000;
    $header = tempnam(sys_get_temp_dir(), 'lmsrt-bh-');
    file_put_contents($header, Library::headerFor((string) realpath($lib)));
    $ini = ['-d', 'ffi.enable=preload', '-d', "ffi.preload=$header", '-d', 'opcache.enable_cli=1', '-d', 'opcache.preload=' . realpath(__DIR__ . '/../../php-ext/preload.php')];
    if (trim((string) shell_exec('id -u')) === '0') {
        array_push($ini, '-d', 'opcache.preload_user=root');
    }
    $cmd = implode(' ', array_map('escapeshellarg', array_merge([PHP_BINARY], $ini, [__FILE__, 'setup', (string) $n])));
    $r = json_decode((string) shell_exec($cmd), true);
    unlink($header);
    $setup = array_slice($r['times'], 10);
    $hdr = (string) file_get_contents(Library::HEADER);
    $cdef = [];
    for ($i = 0; $i < ($quick ? 200 : 1000); $i++) {
        $t = hrtime(true);
        $f = FFI::cdef($hdr, $lib);
        $cdef[] = (hrtime(true) - $t) / 1e3;
    }
    $d = tmpdir();
    EventStore::open("$d/e.db")->close();
    $open = [];
    for ($i = 0; $i < ($quick ? 200 : 1000); $i++) {
        $t = hrtime(true);
        $s = EventStore::open("$d/e.db");
        $s->headCursor();
        $s->close();
        $open[] = (hrtime(true) - $t) / 1e3;
    }
    rmtree($d);
    $report[] = "\n### 4. Binding set-up per request\n";
    $report[] = '| | mean µs | p50 µs | p99 µs |';
    $report[] = '|---|---:|---:|---:|';
    $report[] = sprintf('| preload (`%s`): `Library::ffi()` + `new FfiNative` | %.2f | %.2f | %.2f |', $r['source'], array_sum($setup) / count($setup), pct($setup, 50), pct($setup, 99));
    $report[] = sprintf('| without preload: `FFI::cdef()` parsing the header | %.1f | %.1f | %.1f |', array_sum($cdef) / count($cdef), pct($cdef, 50), pct($cdef, 99));
    $report[] = sprintf('| for reference: `EventStore::open()` + `headCursor()` + `close()` of an existing store | %.0f | %.0f | %.0f |', array_sum($open) / count($open), pct($open, 50), pct($open, 99));
    $report[] = "\nTarget: set-up under preload ≤ 5 µs.";

    // 5. CPU of a blocked wait
    $secs = $quick ? 3 : 10;
    $d = tmpdir();
    EventStore::open("$d/e.db")->close();
    $res = [];
    foreach (['binding', 'loop'] as $kind) {
        $cmd = implode(' ', array_map('escapeshellarg', [PHP_BINARY, '-d', 'ffi.enable=1', __FILE__, 'waitcpu', $kind, "$d/e.db", (string) $secs]));
        $res[$kind] = json_decode((string) shell_exec($cmd), true);
    }
    rmtree($d);
    $report[] = "\n### 5. CPU of one PHP process waiting {$secs} s for an event that does not come\n";
    $report[] = '| | CPU ms | % of a core |';
    $report[] = '|---|---:|---:|';
    $report[] = sprintf('| binding `wait()` (futex-woken, no polling) | %.1f | %.3f %% |', $res['binding']['cpu_ms'], 100 * $res['binding']['cpu_ms'] / $res['binding']['wall_ms']);
    $report[] = sprintf('| sleep-and-query loop (usleep 0.1 s + a PDO query) | %.1f | %.3f %% |', $res['loop']['cpu_ms'], 100 * $res['loop']['cpu_ms'] / $res['loop']['wall_ms']);
}

// 6. 8 processes appending at once on Redis, beside SQLite and raw round trips, alternately
$per = $quick ? 300 : 1500;
$rounds = $quick ? 1 : 3;
$redis = redisStart();
$addr = "127.0.0.1:{$redis['port']}";
$kinds = [
    'redis' => ['binding', "redis://$addr/0?store=bench"],
    'sqlite' => ['binding', ''],
    'raw' => ['raw', $addr],
];
$lat = array_fill_keys(array_keys($kinds), []);
$walls = array_fill_keys(array_keys($kinds), 0.0);
$p99s = array_fill_keys(array_keys($kinds), []);
$rb = ['PING_MBULK' => [], 'XADD' => []];
for ($round = 0; $round < $rounds; $round++) {
    foreach ($kinds as $name => [$kind, $db]) {
        $d = null;
        if ($name === 'sqlite') {
            $d = tmpdir();
            $db = "$d/e.db";
        }
        EventStore::open($kind === 'raw' ? "redis://$addr/0?store=warm" : $db)->close();
        [$l, $wall] = eightAppenders($kind, $db, $per);
        $lat[$name] = array_merge($lat[$name], $l);
        $walls[$name] += $wall;
        $p99s[$name][] = pct($l, 99);
        if ($d !== null) {
            rmtree($d);
        }
    }
    // redis-benchmark (C, 8 clients, one request in flight each), as the floor of a round trip.
    $csv = (string) shell_exec(sprintf('redis-benchmark -h 127.0.0.1 -p %d -c 8 -n %d --csv -t ping_mbulk 2>/dev/null; '
        . 'redis-benchmark -h 127.0.0.1 -p %d -c 8 -n %d --csv XADD lmsrt-bench:rb \'*\' d %s 2>/dev/null',
        $redis['port'], 8 * $per, $redis['port'], 8 * $per, escapeshellarg((string) json_encode(DATA))));
    foreach (explode("\n", $csv) as $line) {
        // The last seven quoted numbers (the XADD row's name holds the JSON payload, quotes unescaped).
        if (preg_match_all('/"([\d.]+)"/', $line, $m) >= 7 && preg_match('/^"(PING|XADD)/', $line, $t)) {
            [$rps, , , $p50, , $p99, $max] = array_map('floatval', array_slice($m[1], -7));
            $rb[$t[1] === 'PING' ? 'PING_MBULK' : 'XADD'][] = ['rps' => $rps, 'p50' => $p50, 'p99' => $p99, 'max' => $max];
        }
    }
}
redisStop($redis);
$report[] = "\n### 6. 8 PHP processes appending at once: Redis, SQLite, raw round trips ($per appends each, $rounds rounds, alternately)\n";
$report[] = '| | total appends/s | p50 ms | p99 ms | max ms | appends > 50 ms | p99 per round ms |';
$report[] = '|---|---:|---:|---:|---:|---:|---:|';
$labels = ['redis' => 'binding on Redis (`redis://…`)', 'sqlite' => 'binding on SQLite', 'raw' => 'raw `XADD` from PHP over a socket (no library)'];
foreach ($labels as $name => $label) {
    $l = $lat[$name];
    $report[] = sprintf('| %s | %.0f | %.2f | %.2f | %.1f | %d | %s |', $label, count($l) / $walls[$name], pct($l, 50), pct($l, 99), max($l),
        count(array_filter($l, fn ($x) => $x > 50)), implode(', ', array_map(fn ($x) => sprintf('%.2f', $x), $p99s[$name])));
}
foreach ($rb as $test => $runs) {
    if ($runs !== []) {
        $report[] = sprintf('| redis-benchmark `%s`, 8 clients | %.0f | %.3f | %.3f | %.1f | | %s |', $test === 'XADD' ? 'XADD' : 'PING', array_sum(array_column($runs, 'rps')) / count($runs),
            pct(array_column($runs, 'p50'), 50), pct(array_column($runs, 'p99'), 50), max(array_column($runs, 'max')), implode(', ', array_map(fn ($x) => sprintf('%.3f', $x), array_column($runs, 'p99'))));
    }
}
$report[] = "\nTarget for the binding on Redis: p99 ≤ 5 ms (#21). redis-benchmark rows: median of the rounds' p50 and p99.";

echo implode("\n", $report), "\n";
