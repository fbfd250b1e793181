<?php

declare(strict_types=1);

namespace LmsRealtime\Tests\Integration;

/**
 * Two PHP processes share one store: one blocks in wait(), the other appends, and the waiter
 * wakes within milliseconds having used (almost) no CPU while blocked.
 */
final class CrossProcessTest extends IntegrationTestCase
{
    public function testAWaitingProcessWakesWhenAnotherProcessAppends(): void
    {
        $db = $this->dir . '/shared.db';
        $store = $this->open([], 'shared.db');
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

    public function testFfiDisabledIsAClearException(): void
    {
        $out = shell_exec(implode(' ', array_map('escapeshellarg', [
            self::php(), '-d', 'ffi.enable=0', self::fixture('ffi_disabled.php'), $this->dir . '/x.db',
        ])) . ' 2>&1');
        self::assertStringStartsWith('FfiUnavailableException: FFI is disabled', (string) $out);
    }
}
