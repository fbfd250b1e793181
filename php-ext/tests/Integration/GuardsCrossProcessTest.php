<?php

declare(strict_types=1);

namespace LmsRealtime\Tests\Integration;

/**
 * The guards are shared by PHP processes: two processes hammering one limiter key are allowed
 * exactly the budget between them; a breaker opened in one process is open in the other (and
 * a reset in one is seen by the other); a connection slot held by one process counts in the
 * other and is reclaimed once its holder is gone.
 */
final class GuardsCrossProcessTest extends IntegrationTestCase
{
    private const CONFIG = [
        'limits' => ['budget' => ['rate' => 500, 'period_ms' => 86_400_000, 'adaptive' => false]],
        'breaker' => ['failure_threshold' => 3, 'open_ms' => 60_000],
        'slots' => ['max' => 1],
    ];

    /** @var list<array{0: resource, 1: array<int, resource>}> */
    private array $children = [];

    protected function tearDown(): void
    {
        foreach ($this->children as [$proc, $pipes]) {
            foreach ($pipes as $p) {
                if (is_resource($p)) {
                    fclose($p);
                }
            }
            proc_close($proc);
        }
        $this->children = [];
        parent::tearDown();
    }

    /**
     * @param list<string> $args
     * @return array{0: resource, 1: array<int, resource>}
     */
    private function spawn(string $mode, array $args): array
    {
        $cmd = array_merge(
            [
                self::php(),
                '-d',
                'ffi.enable=1',
                self::fixture('guards_worker.php'),
                $mode,
                $this->dir . '/shared.db',
                json_encode(self::CONFIG),
            ],
            $args
        );
        $io = [0 => ['pipe', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']];
        $proc = proc_open($cmd, $io, $pipes, null, self::childEnv());
        self::assertIsResource($proc);
        $this->children[] = [$proc, $pipes];
        return [$proc, $pipes];
    }

    /** @param array<int, resource> $pipes */
    private static function line(array $pipes): string
    {
        $line = fgets($pipes[1]);
        if ($line === false) {
            self::fail('the child wrote nothing: ' . stream_get_contents($pipes[2]));
        }
        return rtrim($line, "\n");
    }

    public function testTwoProcessesHammeringOneKeyAreAllowedExactlyTheBudget(): void
    {
        $kids = [
            $this->spawn('hammer', ['budget', 'user:7', '20000']),
            $this->spawn('hammer', ['budget', 'user:7', '20000']),
        ];
        foreach ($kids as [, $pipes]) {
            self::assertSame('ready', self::line($pipes));
        }
        $startAt = sprintf("%.6f\n", microtime(true) + 0.2);
        foreach ($kids as [, $pipes]) {
            fwrite($pipes[0], $startAt);
            fflush($pipes[0]);
        }
        $allowed = [];
        foreach ($kids as [, $pipes]) {
            $allowed[] = json_decode(self::line($pipes), true, 512, JSON_THROW_ON_ERROR)['allowed'];
        }
        // Both started together (three runs split 249+251, 246+254, 250+250): the budget is
        // contended, and compare-and-swap on the shared word keeps it exact.
        self::assertSame(500, array_sum($allowed), 'allowed per process: ' . implode(' + ', $allowed));
        $d = $this->guards(self::CONFIG, 'shared.db')->limiter()->check('budget', 'user:7');
        self::assertFalse($d->allowed, 'and the parent finds the budget spent');
    }

    public function testABreakerOpenedInOneProcessIsOpenInTheOther(): void
    {
        [, $pipes] = $this->spawn('breaker', ['store', 'trip']);
        self::assertSame(
            ['state' => 'open', 'mode' => 'emergency', 'allowed' => false],
            json_decode(self::line($pipes), true)
        );
        $breakers = $this->guards(self::CONFIG, 'shared.db')->breakers();
        $s = $breakers->check('store');
        self::assertSame(['open', 'emergency', false], [$s->state, $s->mode, $s->allowed]);
        self::assertGreaterThan(50_000, $s->retryAfterMs);
        $breakers->reset('store');
        [, $pipes] = $this->spawn('breaker', ['store', 'peek']);
        self::assertSame(
            ['state' => 'closed', 'mode' => 'long', 'allowed' => true],
            json_decode(self::line($pipes), true)
        );
    }

    public function testASlotHeldByAnotherProcessCountsAndIsReclaimedWhenItIsGone(): void
    {
        [$proc, $pipes] = $this->spawn('slot', ['user:9']);
        $held = json_decode(self::line($pipes), true, 512, JSON_THROW_ON_ERROR);
        $slots = $this->guards(self::CONFIG, 'shared.db')->slots();
        self::assertSame(1, $slots->count('user:9'));
        self::assertNull($slots->tryAcquire('user:9'), 'max 1: the child holds it');
        fwrite($pipes[0], "exit\n");
        fflush($pipes[0]);
        // Wait for the child to be gone.
        $deadline = microtime(true) + 10;
        while (proc_get_status($proc)['running'] && microtime(true) < $deadline) {
            usleep(10_000);
        }
        self::assertFalse(proc_get_status($proc)['running']);
        $lease = $slots->acquire('user:9');
        self::assertTrue($lease->reclaimed, 'taken over from the dead holder');
        self::assertSame($held['record'], $lease->record);
        self::assertTrue($slots->release($lease));
    }
}
