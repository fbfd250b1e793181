<?php

/**
 * Benchmarks of the guards from PHP, through the package's public API (Guards and its facades,
 * value objects included), with the raw FFI call measured in the same run as the floor.
 *
 *   LMSRT_LIBRARY=target/release/liblms_realtime.so php -d ffi.enable=1 benches/php/guards.php [quick]
 *
 * Prints a Markdown report (keep it in a benches/journal/ file; today's figure goes to benches/README.md). The scenarios, each a median of
 * three rounds:
 *
 *  1. shared limiter decisions/s from one process: `RateLimiter::check()` on 10,000 keys in
 *     turn (mostly allowed), on one hot key (mostly refused: the adaptive path), and the raw
 *     `lmsrt_limiter_check` FFI call with no PHP wrapper;
 *  2. the same from 2 processes at once on the shared table (one per core), total;
 *  3. `Breakers::check()` on a closed breaker, per second;
 *  4. `Slots::acquire()` + `Slots::release()` pairs per second;
 *  5. for reference: `Metrics::increment()`, `Metrics::recordUs()` and `Rollout::cohort()`;
 *  6. what a PHP-FPM request pays to use them: `Guards::open()` of existing files + one
 *     `check()` + `close()` (four files mapped and unmapped), p50/p99.
 */

declare(strict_types=1);

require __DIR__ . '/../../php-ext/tests/bootstrap.php';

use LmsRealtime\Guards;
use LmsRealtime\Library;
use LmsRealtime\Rollout;

const CONFIG = [
    // A budget no run exhausts (the "wide" action) and the default adaptive `post` limit.
    'limits' => ['wide' => ['rate' => 1_000_000_000, 'period_ms' => 86_400_000, 'burst' => 1_000_000]],
];

function tmpdir(): string
{
    $d = sys_get_temp_dir() . '/lmsrt-gbench-' . getmypid() . '-' . bin2hex(random_bytes(3));
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

/** @param list<float> $xs */
function median(array $xs): float
{
    sort($xs);
    return $xs[intdiv(count($xs), 2)];
}

/**
 * Runs `$body($n)` three times and returns the median rate per second and the rounds.
 *
 * @param callable(int): void $body
 * @return array{float, list<float>}
 */
function rate(int $n, callable $body): array
{
    $body(min($n, 10_000)); // warm-up: structs allocated, opcache and caches warm
    $rounds = [];
    for ($r = 0; $r < 3; $r++) {
        $t = hrtime(true);
        $body($n);
        $rounds[] = $n / ((hrtime(true) - $t) / 1e9);
    }
    return [median($rounds), $rounds];
}

/** @return list<string> */
function keys(int $n): array
{
    $keys = [];
    for ($i = 0; $i < $n; $i++) {
        $keys[] = "user:$i";
    }
    return $keys;
}

function fmt(float $x): string
{
    return number_format($x, 0, '.', ',');
}

// ---- child mode: one of the processes of scenario 2 ------------------------------------------

if (($argv[1] ?? '') === 'worker') {
    // worker <db> <n> <start_at_unix_float> <key offset>
    [, , $db, $n, $startAt, $offset] = $argv;
    $limiter = Guards::open($db, CONFIG)->limiter();
    $keys = keys(10_000);
    $off = (int) $offset;
    for ($i = 0; $i < 10_000; $i++) {
        $limiter->check('wide', $keys[$i]);
    }
    while (microtime(true) < (float) $startAt) {
        usleep(100);
    }
    $t = hrtime(true);
    for ($i = 0, $n = (int) $n; $i < $n; $i++) {
        $limiter->check('wide', $keys[($i + $off) % 10_000]);
    }
    echo json_encode(['n' => $n, 's' => (hrtime(true) - $t) / 1e9, 'end' => microtime(true)]);
    exit(0);
}

// ---- the run ---------------------------------------------------------------------------------

$quick = ($argv[1] ?? '') === 'quick';
$n = $quick ? 100_000 : 1_000_000;
$lib = Library::resolvePath();
$ffi = Library::ffi($lib);
$d = tmpdir();
$db = "$d/e.db";
$guards = Guards::open($db, CONFIG);
$limiter = $guards->limiter();
$keys = keys(10_000);
$report = [];
$report[] = sprintf('Library: `%s` (%s), PHP %s, %d decisions per round.', basename(dirname($lib)) . '/' . basename($lib), Library::version(), PHP_VERSION, $n);

// 1. one process
[$many, $manyR] = rate($n, static function (int $n) use ($limiter, $keys): void {
    for ($i = 0; $i < $n; $i++) {
        $limiter->check('wide', $keys[$i % 10_000]);
    }
});
$allowedShare = 0;
for ($i = 0; $i < 1000; $i++) {
    $allowedShare += (int) $limiter->check('post', 'hot')->allowed;
}
[$hot, $hotR] = rate($n, static function (int $n) use ($limiter): void {
    for ($i = 0; $i < $n; $i++) {
        $limiter->check('post', 'hot');
    }
});
// The floor: the bare FFI call into the library, no PHP objects.
$h = $ffi->new('lmsrt_guards*');
$ffi->lmsrt_guards_open($db, strlen($db), $cfg = json_encode(CONFIG), strlen($cfg), FFI::addr($h));
$out = $ffi->new('lmsrt_decision');
$outPtr = FFI::addr($out);
[$raw, $rawR] = rate($n, static function (int $n) use ($ffi, $h, $keys, $outPtr): void {
    for ($i = 0; $i < $n; $i++) {
        $k = $keys[$i % 10_000];
        $ffi->lmsrt_limiter_check($h, 'wide', 4, $k, strlen($k), 1, $outPtr);
    }
});
$ffi->lmsrt_guards_close(FFI::addr($h));
$rounds = static fn (array $r): string => implode(', ', array_map('fmt', $r));
$report[] = "\n#### 1. Shared limiter decisions from one PHP process\n";
$report[] = '| | decisions/s | µs/decision | rounds |';
$report[] = '|---|---:|---:|---|';
$report[] = sprintf('| `RateLimiter::check()`, 10,000 keys in turn (allowed) | %s | %.2f | %s |', fmt($many), 1e6 / $many, $rounds($manyR));
$report[] = sprintf('| `RateLimiter::check()`, one hot key over its 20/min `post` limit (refused, adaptive) | %s | %.2f | %s |', fmt($hot), 1e6 / $hot, $rounds($hotR));
$report[] = sprintf('| floor: raw `$ffi->lmsrt_limiter_check()`, no PHP wrapper or `Decision` | %s | %.2f | %s |', fmt($raw), 1e6 / $raw, $rounds($rawR));

// 2. two processes at once
$per = $quick ? 200_000 : 2_000_000;
$startAt = microtime(true) + 1.5;
$procs = [];
for ($w = 0; $w < 2; $w++) {
    $procs[] = proc_open([PHP_BINARY, '-d', 'ffi.enable=1', __FILE__, 'worker', $db, (string) $per, (string) $startAt, (string) ($w * 5000)], [1 => ['pipe', 'w']], $pipes2[$w]);
}
$res = [];
foreach ($procs as $w => $pr) {
    $res[] = json_decode((string) stream_get_contents($pipes2[$w][1]), true);
    fclose($pipes2[$w][1]);
    proc_close($pr);
}
$wall = max(array_column($res, 'end')) - $startAt;
$report[] = "\n#### 2. Shared limiter decisions from 2 PHP processes at once (one table, 10,000 keys)\n";
$report[] = '| | decisions/s |';
$report[] = '|---|---:|';
foreach ($res as $w => $r) {
    $report[] = sprintf('| process %d (%s decisions in %.2f s) | %s |', $w + 1, fmt($r['n']), $r['s'], fmt($r['n'] / $r['s']));
}
$report[] = sprintf('| total (all decisions over the wall time from the common start) | %s |', fmt(array_sum(array_column($res, 'n')) / $wall));

// 3. breakers
$breakers = $guards->breakers();
[$brk, $brkR] = rate($n, static function (int $n) use ($breakers): void {
    for ($i = 0; $i < $n; $i++) {
        $breakers->check('store');
    }
});
// 4. slots
$slots = $guards->slots();
$ns = intdiv($n, 2);
[$slt, $sltR] = rate($ns, static function (int $n) use ($slots, $keys): void {
    for ($i = 0; $i < $n; $i++) {
        $slots->release($slots->acquire($keys[$i % 10_000]));
    }
});
// 5. reference
$metrics = $guards->metrics();
[$inc, $incR] = rate($n, static function (int $n) use ($metrics): void {
    for ($i = 0; $i < $n; $i++) {
        $metrics->increment('deliveries');
    }
});
[$rec, $recR] = rate($n, static function (int $n) use ($metrics): void {
    for ($i = 0; $i < $n; $i++) {
        $metrics->recordUs('fetch', 100 + $i % 900);
    }
});
$nr = intdiv($n, 4);
$beta = ['1', '2', '3', '42', '99'];
[$coh, $cohR] = rate($nr, static function (int $n) use ($keys, $beta): void {
    for ($i = 0; $i < $n; $i++) {
        Rollout::cohort(20, 'longpoll', $beta, $keys[$i % 10_000]);
    }
});
$report[] = "\n#### 3–5. Breakers, slots and the rest, one PHP process\n";
$report[] = '| | calls/s | µs/call | rounds |';
$report[] = '|---|---:|---:|---|';
$report[] = sprintf('| `Breakers::check()` on a closed breaker | %s | %.2f | %s |', fmt($brk), 1e6 / $brk, $rounds($brkR));
$report[] = sprintf('| `Slots::acquire()` + `Slots::release()` (pairs), 10,000 keys in turn | %s | %.2f | %s |', fmt($slt), 1e6 / $slt, $rounds($sltR));
$report[] = sprintf('| `Metrics::increment()` | %s | %.2f | %s |', fmt($inc), 1e6 / $inc, $rounds($incR));
$report[] = sprintf('| `Metrics::recordUs()` | %s | %.2f | %s |', fmt($rec), 1e6 / $rec, $rounds($recR));
$report[] = sprintf('| `Rollout::cohort()` with 5 beta users (JSON-encoded per call) | %s | %.2f | %s |', fmt($coh), 1e6 / $coh, $rounds($cohR));

// 6. per request
$times = [];
for ($i = 0; $i < ($quick ? 500 : 5000) + 50; $i++) {
    $t = hrtime(true);
    $g = Guards::open($db, CONFIG);
    $g->limiter()->check('wide', 'user:1');
    $g->close();
    $times[] = (hrtime(true) - $t) / 1e3;
}
$times = array_slice($times, 50);
sort($times);
$pct = static fn (float $p): float => $times[max(0, (int) ceil($p / 100 * count($times)) - 1)];
$report[] = sprintf("\n#### 6. Per request: `Guards::open()` of the existing files + one `check()` + `close()` (%s requests)\n", fmt(count($times)));
$report[] = '| mean µs | p50 µs | p99 µs | max µs |';
$report[] = '|---:|---:|---:|---:|';
$report[] = sprintf('| %.1f | %.1f | %.1f | %.1f |', array_sum($times) / count($times), $pct(50), $pct(99), max($times));

$snap = $metrics->snapshot();
$report[] = sprintf("\nCounted by the shared metrics during the run: %s limiter decisions allowed, %s denied; %s slots acquired.", fmt($snap['counters']['limiter_allowed']['total']), fmt($snap['counters']['limiter_denied']['total']), fmt($snap['counters']['slots_acquired']['total']));
$guards->close();
rmtree($d);
echo implode("\n", $report), "\n";
