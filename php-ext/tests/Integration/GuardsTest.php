<?php

declare(strict_types=1);

namespace LmsRealtime\Tests\Integration;

use LmsRealtime\BreakerStatus;
use LmsRealtime\Exception;
use LmsRealtime\Lease;
use LmsRealtime\Rollout;
use LmsRealtime\Status;

/**
 * The guards against the real library: limiter budgets and refusals, breaker transitions and
 * modes, slot leases, rollout buckets identical to the Rust ones, metrics documents, bad input
 * and the closed state.
 */
final class GuardsTest extends IntegrationTestCase
{
    private const DAY_MS = 86_400_000;

    public function testTheLimiterAllowsTheBurstThenRefusesWithARetryHint(): void
    {
        $limiter = $this->guards(['limits' => [
            't' => ['rate' => 3, 'period_ms' => self::DAY_MS, 'adaptive' => false],
        ]])->limiter();
        for ($i = 2; $i >= 0; $i--) {
            $d = $limiter->check('t', 'user:7');
            self::assertTrue($d->allowed);
            self::assertSame($i, $d->remaining);
            self::assertSame(3, $d->limit);
            self::assertSame(1000, $d->reputation);
            self::assertTrue($d->tracked);
        }
        $d = $limiter->check('t', 'user:7');
        self::assertFalse($d->allowed);
        self::assertFalse($d->blocked);
        self::assertGreaterThan(28_000_000, $d->retryAfterMs); // a day / 3
        self::assertLessThanOrEqual(28_800_000, $d->retryAfterMs);
        self::assertSame(28_800, $d->retryAfterSeconds());
        self::assertTrue($limiter->check('t', 'user:8')->allowed, 'keys are independent');
        self::assertFalse($limiter->peek('t', 'user:7')->allowed);
        $limiter->reset('t', 'user:7');
        self::assertSame(3, $limiter->peek('t', 'user:7')->remaining);
        self::assertSame(0, $limiter->check('t', 'user:7', 3)->remaining);
    }

    public function testDefaultsApplyAndRefusalsCostReputation(): void
    {
        $limiter = $this->guards()->limiter();
        for ($i = 0; $i < 20; $i++) {
            self::assertTrue($limiter->check('post', 'user:1')->allowed, "post $i");
        }
        $d = $limiter->check('post', 'user:1');
        self::assertFalse($d->allowed);
        self::assertGreaterThan(2000, $d->retryAfterMs);
        self::assertLessThanOrEqual(3000, $d->retryAfterMs);
        self::assertSame(900, $d->reputation);
        self::assertTrue($limiter->check('poll', 'user:1')->allowed);
        self::assertTrue($limiter->check('ip', '10.0.0.1')->allowed);
    }

    public function testTheDdosGuardBlocksAKeyRefusedAtZeroReputation(): void
    {
        $limiter = $this->guards(['limits' => ['b' => [
            'rate' => 1, 'period_ms' => self::DAY_MS,
            'adaptive' => ['penalty_permille' => 1000], 'block' => ['base_ms' => 60_000],
        ]]])->limiter();
        self::assertTrue($limiter->check('b', '10.0.0.9')->allowed);
        $blocked = null;
        for ($i = 0; $i < 4 && $blocked === null; $i++) {
            $d = $limiter->check('b', '10.0.0.9');
            self::assertFalse($d->allowed);
            $blocked = $d->blocked ? $d : null;
        }
        self::assertNotNull($blocked, 'blocked within 4 refusals');
        self::assertGreaterThan(50_000, $blocked->retryAfterMs);
        self::assertLessThanOrEqual(60_000, $blocked->retryAfterMs);
        self::assertSame(0, $blocked->reputation);
    }

    public function testKeysAreBytesEmbeddedNulIncludedAndBadInputIsTyped(): void
    {
        $one = ['rate' => 1, 'period_ms' => self::DAY_MS, 'adaptive' => false];
        $limiter = $this->guards(['limits' => ['one' => $one]])->limiter();
        self::assertTrue($limiter->check('one', "a\0b")->allowed);
        self::assertTrue($limiter->check('one', 'a')->allowed, '"a\0b" is not cut at the NUL');
        self::assertFalse($limiter->check('one', "a\0b")->allowed);
        $bad = [
            [
                fn () => $limiter->check('nope', 'k'),
                Exception\InvalidArgumentException::class,
                'unknown rate-limit action',
            ],
            [fn () => $limiter->check('one', ''), Exception\InvalidArgumentException::class, 'empty'],
            [fn () => $limiter->check('one', 'k', 2), Exception\InvalidArgumentException::class, 'cost 2'],
            [fn () => $limiter->check('one', "\xff"), Exception\InvalidUtf8Exception::class, 'UTF-8'],
            [
                fn () => $limiter->check('one', str_repeat('k', 2000)),
                Exception\InvalidArgumentException::class,
                'longer than',
            ],
            [fn () => $limiter->reset('nope', 'k'), Exception\InvalidArgumentException::class, 'unknown'],
        ];
        foreach ($bad as [$call, $class, $message]) {
            try {
                $call();
                self::fail("no $class");
            } catch (Exception\LmsRealtimeException $e) {
                self::assertInstanceOf($class, $e);
                self::assertStringContainsString($message, $e->getMessage());
            }
        }
    }

    public function testBreakersOpenAdvertiseModesAndRecoverThroughAProbe(): void
    {
        $b = $this->guards(['breaker' => ['failure_threshold' => 2, 'open_ms' => 150]])->breakers();
        $s = $b->check('store');
        self::assertSame(
            [BreakerStatus::CLOSED, BreakerStatus::MODE_LONG, 30000, true],
            [$s->state, $s->mode, $s->waitMs, $s->allowed]
        );
        $s = $b->recordFailure('store');
        self::assertSame(
            [BreakerStatus::CLOSED, 'medium', 1, 1, 1],
            [$s->state, $s->mode, $s->consecutiveFailures, $s->windowFailures, $s->windowRequests]
        );
        $s = $b->recordFailure('store');
        self::assertSame(['open', 'emergency', 1000], [$s->state, $s->mode, $s->waitMs]);
        $s = $b->check('store');
        self::assertFalse($s->allowed, 'open: refused as an answer, not an exception');
        self::assertGreaterThan(0, $s->retryAfterMs);
        self::assertLessThanOrEqual(150, $s->retryAfterMs);
        self::assertSame(150, $s->openPeriodMs);
        self::assertTrue($b->check('other')->allowed);
        usleep(200_000);
        $s = $b->status('store');
        self::assertSame(['half_open', true, false], [$s->state, $s->allowed, $s->probe]);
        $s = $b->check('store');
        self::assertSame(
            ['half_open', 'short', 3000, true, true],
            [$s->state, $s->mode, $s->waitMs, $s->allowed, $s->probe]
        );
        self::assertFalse($b->check('store')->allowed, 'one probe at a time');
        $s = $b->recordSuccess('store');
        self::assertSame(['closed', 'long', true], [$s->state, $s->mode, $s->allowed]);
        self::assertSame('open', $b->forceOpen('store', 60_000)->state);
        self::assertGreaterThan(59_000, $b->check('store')->retryAfterMs);
        self::assertSame('closed', $b->reset('store')->state);
        $this->expectException(Exception\InvalidArgumentException::class);
        $b->check('');
    }

    public function testSlotsCapLeasesAndLeasesTravelBetweenHandles(): void
    {
        $slots = $this->guards(['slots' => ['max' => 2]])->slots();
        $a = $slots->acquire('user:7');
        $b = $slots->acquire('user:7');
        self::assertNotSame($a->token, $b->token);
        self::assertSame('user:7', $a->key);
        self::assertFalse($a->reclaimed);
        self::assertGreaterThan((int) (microtime(true) * 1000), $a->expiresAtMs);
        self::assertSame(2, $slots->count('user:7'));
        self::assertNull($slots->tryAcquire('user:7'));
        try {
            $slots->acquire('user:7');
            self::fail('a third slot');
        } catch (Exception\SlotsExhaustedException $e) {
            self::assertSame(Status::SLOTS_EXHAUSTED, $e->getCode());
        }
        self::assertTrue($slots->isHeld($a));
        $renewed = $slots->renew($a);
        self::assertNotNull($renewed);
        self::assertNotSame($a->token, $renewed->token);
        self::assertGreaterThanOrEqual($a->expiresAtMs, $renewed->expiresAtMs);
        self::assertFalse($slots->release($a), 'the pre-renewal lease no longer names the slot');
        self::assertNull($slots->renew($a));

        // Carried to another request (another handle) as an array: still releases.
        $other = $this->guards(['slots' => ['max' => 2]])->slots();
        $carried = Lease::fromArray(json_decode(json_encode($renewed->toArray()), true));
        self::assertTrue($other->release($carried));
        self::assertFalse($other->release($carried));
        self::assertFalse($slots->isHeld($renewed));
        self::assertSame(1, $slots->count('user:7'));
        self::assertTrue($slots->release($b));
        self::assertSame(0, $slots->count('user:7'));
        $this->expectException(Exception\InvalidArgumentException::class);
        $slots->count('');
    }

    public function testEvictOldestTakesOverAndTheHolderFindsOut(): void
    {
        $slots = $this->guards(['slots' => ['max' => 1, 'on_full' => 'evict_oldest']])->slots();
        $first = $slots->acquire('u');
        $second = $slots->acquire('u');
        self::assertTrue($second->reclaimed);
        self::assertFalse($slots->isHeld($first));
        self::assertNull($slots->renew($first));
        self::assertTrue($slots->release($second));
    }

    public function testRolloutBucketsAreTheRustOnes(): void
    {
        // The pinned values of src/guards/rollout.rs: a change would reshuffle live cohorts.
        $pinned = ['1' => 9532, '2' => 810, '42' => 3230, 'user-7' => 6887];
        foreach ($pinned as $user => $bucket) {
            self::assertSame($bucket, Rollout::bucket('lms', (string) $user));
            self::assertSame('control', Rollout::cohort(5, 'lms', [], (string) $user));
            self::assertSame('rollout', Rollout::cohort(100, 'lms', [], (string) $user));
        }
        self::assertSame('rollout', Rollout::cohort(33, 'lms', [], '42'));
        self::assertSame('control', Rollout::cohort(32, 'lms', [], '42'));
        self::assertSame('beta', Rollout::cohort(0, 'lms', [42, 'x'], '42'));
        self::assertTrue(Rollout::isEnabled(0, 'lms', ['x'], 'x'));
        self::assertFalse(Rollout::isEnabled(0, 'lms', ['x'], 'y'));
        self::assertNotSame(3230, Rollout::bucket('other', '42'));
        // Raising the percentage only adds users.
        for ($u = 0; $u < 200; $u++) {
            if (Rollout::isEnabled(20, 'canary', [], (string) $u)) {
                self::assertTrue(Rollout::isEnabled(50, 'canary', [], (string) $u));
            }
        }
        $this->expectException(Exception\InvalidUtf8Exception::class);
        Rollout::cohort(5, 'lms', [], "\xff");
    }

    public function testMetricsAreSharedDocumentsWithAHealthVerdict(): void
    {
        $g = $this->guards();
        $m = $g->metrics();
        $m->increment('appends', 5);
        $m->increment('deliveries');
        for ($i = 0; $i < 10; $i++) {
            $m->recordUs('append', 250);
        }
        $m->setGauge('connections', 10);
        $m->addGauge('connections', -3);
        $g->limiter()->check('post', 'm');
        $snap = $m->snapshot();
        self::assertSame(['total' => 5, 'window' => 5], $snap['counters']['appends']);
        self::assertSame(1, $snap['counters']['deliveries']['total']);
        self::assertSame(1, $snap['counters']['limiter_allowed']['total'], 'the guards count themselves');
        self::assertSame(7, $snap['gauges']['connections']);
        self::assertSame(10, $snap['histograms']['append']['count']);
        self::assertSame(2500, $snap['histograms']['append']['sum_us']);
        self::assertLessThanOrEqual(266, $snap['histograms']['append']['window']['p99_us']);
        self::assertSame(['status' => 'ok', 'reasons' => []], $snap['health']);
        self::assertSame(['status' => 'ok', 'reasons' => []], $m->health());
        $text = $m->prometheus();
        self::assertStringContainsString("lmsrt_appends_total 5\n", $text);
        self::assertStringContainsString("lmsrt_connections 7\n", $text);
        self::assertStringContainsString("lmsrt_healthy 1\n", $text);

        $m->increment('appends', 20);
        $m->increment('append_errors', 20);
        $h = $m->health();
        self::assertSame('degraded', $h['status']);
        self::assertStringContainsString('error rate', $h['reasons'][0]);
        // Another handle (another worker, in production) reads the same figures.
        self::assertSame(25, $this->guards()->metrics()->snapshot()['counters']['appends']['total']);

        $this->expectException(Exception\InvalidArgumentException::class);
        $this->expectExceptionMessage('unknown counter "nope"');
        $m->increment('nope');
    }

    public function testBadSettingsAndPathsAreTypedErrors(): void
    {
        $cases = [
            [['limit' => []], Exception\InvalidArgumentException::class, 'unknown field `limit`'],
            [['limits' => ['post' => ['rate' => 0]]], Exception\InvalidArgumentException::class, 'positive'],
            [
                ['limits' => ['post' => ['rate' => 1, 'adaptive' => 'yes']]],
                Exception\InvalidArgumentException::class,
                'limits.post.adaptive',
            ],
            [['slots' => ['max' => 16]], Exception\InvalidArgumentException::class, 'max_per_key 16'],
            [['slots' => ['on_full' => 'drop']], Exception\InvalidArgumentException::class, 'slots.on_full'],
            [['breaker' => ['open_ms' => 0]], Exception\InvalidArgumentException::class, 'breaker config'],
        ];
        foreach ($cases as [$config, $class, $message]) {
            try {
                $this->guards($config);
                self::fail('accepted ' . json_encode($config));
            } catch (Exception\LmsRealtimeException $e) {
                self::assertInstanceOf($class, $e);
                self::assertStringContainsString($message, $e->getMessage());
            }
        }
        $this->expectException(Exception\IoException::class);
        \LmsRealtime\Guards::open('/nonexistent-dir/x/y.db');
    }

    public function testAfterCloseEveryCallIsClosed(): void
    {
        $g = $this->guards();
        $lease = $g->slots()->acquire('u');
        $limiter = $g->limiter();
        $g->close();
        $g->close();
        $calls = [
            fn () => $limiter->check('post', 'k'),
            fn () => $g->slots()->release($lease),
            fn () => $g->metrics()->health(),
        ];
        foreach ($calls as $call) {
            try {
                $call();
                self::fail('no exception');
            } catch (Exception\StoreClosedException $e) {
                self::assertSame(Status::CLOSED, $e->getCode());
            }
        }
        // The lease outlived the handle: a new one releases it.
        self::assertTrue($this->guards()->slots()->release($lease));
    }
}
