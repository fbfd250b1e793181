<?php

declare(strict_types=1);

namespace LmsRealtime\Tests\Integration;

/**
 * PHP processes share one store, on each engine (a file; a Redis server): one blocks in
 * wait(), another appends, and the waiter wakes within milliseconds having used (almost) no CPU
 * while blocked; several append at once while another waits, and it gets every event exactly
 * once, in order.
 */
final class CrossProcessTest extends IntegrationTestCase
{
    /** @dataProvider engines */
    public function testAWaitingProcessWakesWhenAnotherProcessAppends(string $engine): void
    {
        $db = $this->location($engine, 'shared.db');
        $store = $this->openAt($db);
        $cursor = $store->headCursor();

        $proc = proc_open(
            [self::php(), '-d', 'ffi.enable=1', self::fixture('waiter.php'), $db, $cursor, '20'],
            [1 => ['pipe', 'w'], 2 => ['pipe', 'w']],
            $pipes,
            null,
            self::childEnv()
        );
        self::assertIsResource($proc);
        try {
            $ready = fgets($pipes[1]);
            if ($ready !== "ready\n") {
                self::fail('the child did not start: ' . stream_get_contents($pipes[2]));
            }
            // Let the child get into wait() (it is fine if it is not there yet: nothing is lost).
            usleep(300_000);
            $appendedAt = microtime(true) * 1000;
            $id = $store->append('message_create', 5, ['from' => 'parent']);
            $line = fgets($pipes[1]);
            $stderr = stream_get_contents($pipes[2]);
        } finally {
            fclose($pipes[1]);
            fclose($pipes[2]);
            $exit = proc_close($proc);
        }
        self::assertSame(0, $exit, (string) $stderr);
        self::assertIsString($line, (string) $stderr);
        $r = json_decode($line, true, 512, JSON_THROW_ON_ERROR);
        self::assertSame([$id], $r['ids']);
        self::assertGreaterThan(200, $r['waited_ms'], 'the child was blocked before the append');
        self::assertLessThan(10_000, $r['waited_ms'], 'the child did not sleep to its timeout');
        // Woken promptly (generous bound for a loaded 2-core machine) and idle while blocked.
        self::assertLessThan(1000, $r['woke_at_ms'] - $appendedAt);
        self::assertLessThan(50, $r['cpu_ms'], 'CPU used while blocked in wait()');
    }

    /** @dataProvider engines */
    public function testProcessesAppendingAtOnceReachAWaitingProcessExactlyOnceInOrder(string $engine): void
    {
        $writers = 4;
        $each = 50;
        $location = $this->location($engine, 'shared.db');
        $store = $this->openAt($location);
        $start = $store->headCursor();
        $reader = $this->spawn('reader.php', [$location, '9', $start, (string) ($writers * $each), '60']);
        self::assertSame("ready\n", fgets($reader['pipes'][1]), 'the reader did not start');
        $appenders = [];
        for ($w = 0; $w < $writers; $w++) {
            $appenders[] = $this->spawn('appender.php', [$location, '9', (string) $w, (string) $each]);
        }
        foreach ($appenders as $a) {
            [$out, $err, $exit] = self::finish($a);
            self::assertSame(0, $exit, $err);
            self::assertSame("done $each\n", $out, $err);
        }
        [$out, $err, $exit] = self::finish($reader);
        self::assertSame(0, $exit, $err);
        $r = json_decode($out, true, 512, JSON_THROW_ON_ERROR);
        self::assertFalse($r['gap']);
        self::assertExactlyOnceInOrder($r['events'], $writers, $each);

        // Fetching from the same start in this process gives the same events, in the same order.
        $fetched = [];
        $cursor = $start;
        do {
            $batch = $store->fetch([9], $cursor, limit: 37);
            foreach ($batch as $e) {
                $fetched[] = [$e->id, $e->data['w'], $e->data['n']];
            }
            $cursor = $batch->cursor;
        } while ($batch->hasMore || count($batch) > 0);
        self::assertSame($r['events'], $fetched);
    }

    /**
     * Every writer's events, each once, in the order it appended them, in increasing ids.
     *
     * @param list<array{0: int, 1: int, 2: int}> $events
     */
    private static function assertExactlyOnceInOrder(array $events, int $writers, int $each): void
    {
        self::assertCount($writers * $each, $events, 'every event, none twice');
        $ids = array_column($events, 0);
        self::assertSame(count($ids), count(array_unique($ids)), 'no id twice');
        $sorted = $ids;
        sort($sorted);
        self::assertSame($sorted, $ids, 'in id order');
        $next = array_fill(0, $writers, 0);
        foreach ($events as [, $w, $n]) {
            self::assertSame($next[$w], $n, "writer $w's events in the order it appended them");
            $next[$w]++;
        }
    }

    /**
     * A child PHP running a fixture, its stdout and stderr piped.
     *
     * @param list<string> $args
     * @return array{proc: resource, pipes: array<int, resource>}
     */
    private function spawn(string $fixture, array $args): array
    {
        $proc = proc_open(
            array_merge([self::php(), '-d', 'ffi.enable=1', self::fixture($fixture)], $args),
            [1 => ['pipe', 'w'], 2 => ['pipe', 'w']],
            $pipes,
            null,
            self::childEnv()
        );
        self::assertIsResource($proc);
        return ['proc' => $proc, 'pipes' => $pipes];
    }

    /**
     * Waits for a child (its own deadline bounds it) and returns its stdout, stderr and exit code.
     *
     * @param array{proc: resource, pipes: array<int, resource>} $child
     * @return array{0: string, 1: string, 2: int}
     */
    private static function finish(array $child): array
    {
        $out = (string) stream_get_contents($child['pipes'][1]);
        $err = (string) stream_get_contents($child['pipes'][2]);
        fclose($child['pipes'][1]);
        fclose($child['pipes'][2]);
        return [$out, $err, proc_close($child['proc'])];
    }

    public function testFfiDisabledIsAClearException(): void
    {
        $out = shell_exec(implode(' ', array_map('escapeshellarg', [
            self::php(), '-d', 'ffi.enable=0', self::fixture('ffi_disabled.php'), $this->dir . '/x.db',
        ])) . ' 2>&1');
        self::assertStringStartsWith('FfiUnavailableException: FFI is disabled', (string) $out);
    }
}
