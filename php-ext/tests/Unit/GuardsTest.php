<?php

declare(strict_types=1);

namespace LmsRealtime\Tests\Unit;

use LmsRealtime\BreakerStatus;
use LmsRealtime\Decision;
use LmsRealtime\Exception;
use LmsRealtime\Guards;
use LmsRealtime\Lease;
use LmsRealtime\Library;
use LmsRealtime\Rollout;
use LmsRealtime\Status;
use PHPUnit\Framework\TestCase;

/**
 * How Guards and its facades (RateLimiter, Breakers, Slots, Metrics) and Rollout map PHP calls
 * to the raw ABI and back, with a fake Native: arguments, value objects, statuses to
 * exceptions, refusals as answers, and the closed state.
 */
final class GuardsTest extends TestCase
{
    private FakeNative $native;

    protected function setUp(): void
    {
        $this->native = new FakeNative();
    }

    protected function tearDown(): void
    {
        Rollout::useNative(null);
    }

    private function guards(array $config = []): Guards
    {
        return Guards::openWith($this->native, '/x/events.db', $config);
    }

    private static function decision(bool $allowed = true, int $remaining = 19, int $retry = 0): Decision
    {
        return new Decision($allowed, $remaining, $retry, 3000, 20, 1000, false, true);
    }

    private static function status(string $state = 'closed', string $mode = 'long', bool $allowed = true): BreakerStatus
    {
        return new BreakerStatus($state, $mode, 30000, $allowed, $allowed ? 0 : 4000, false, 0, 0, 0, 5000, true);
    }

    private static function lease(string $key = 'user:7', int $token = 42): Lease
    {
        return new Lease($key, 12, 1, $token, 1_700_000_035_000, false, -5);
    }

    public function testOpenSendsThePathAndTheSettingsAsAJsonObject(): void
    {
        $g1 = $this->guards();
        self::assertSame(['guardsOpen', ['/x/events.db', null]], $this->native->lastCall());
        $g2 = $this->guards([
            'limits' => ['post' => ['rate' => 10, 'adaptive' => false, 'block' => []]],
            'slots' => ['max' => 2, 'on_full' => 'evict_oldest'],
            'breaker' => [],
        ]);
        self::assertSame(
            '{"limits":{"post":{"rate":10,"adaptive":false,"block":{}}},'
            . '"slots":{"max":2,"on_full":"evict_oldest"},"breaker":{}}',
            $this->native->lastCall()[1][1]
        );
    }

    public function testOpenFailuresBecomeTypedExceptionsWithTheLibrarysMessage(): void
    {
        $this->native->answer(Status::INVALID_ARGUMENT, null, 'guards config: unknown field `limit`');
        try {
            $this->guards(['limit' => []]);
            self::fail('no exception');
        } catch (Exception\InvalidArgumentException $e) {
            self::assertSame(Status::INVALID_ARGUMENT, $e->getCode());
            self::assertSame('guards config: unknown field `limit`', $e->getMessage());
        }
        $this->native->answer(Status::IO, null, 'cannot map');
        $this->expectException(Exception\IoException::class);
        $this->guards();
    }

    public function testInvalidUtf8InTheSettingsIsRefusedBeforeTheLibrary(): void
    {
        $this->expectException(Exception\InvalidUtf8Exception::class);
        try {
            $this->guards(['limits' => ["\xff" => ['rate' => 1]]]);
        } finally {
            self::assertSame([], $this->native->calls);
        }
    }

    public function testLimiterCheckReturnsTheDecisionAndRefusalsAreAnswers(): void
    {
        $g = $this->guards();
        $limiter = $g->limiter();
        $this->native->answer(Status::OK, self::decision());
        $d = $limiter->check('post', 'user:7');
        self::assertTrue($d->allowed);
        self::assertSame(['limiterCheck', ['guards', 'post', 'user:7', 1]], $this->native->lastCall());

        $this->native->answer(Status::OK, self::decision(false, 0, 2500));
        $d = $limiter->check('post', 'user:7', 3);
        self::assertFalse($d->allowed);
        self::assertSame(2500, $d->retryAfterMs);
        self::assertSame(3, $d->retryAfterSeconds());
        self::assertSame(3, $this->native->lastCall()[1][3]);
        self::assertSame(0, self::decision()->retryAfterSeconds());
    }

    public function testLimiterErrorsAndBadCosts(): void
    {
        $limiter = $this->guards()->limiter();
        $this->native->answer(Status::INVALID_ARGUMENT, null, 'unknown rate-limit action "nope"');
        try {
            $limiter->check('nope', 'k');
            self::fail('no exception');
        } catch (Exception\InvalidArgumentException $e) {
            self::assertStringContainsString('unknown rate-limit action', $e->getMessage());
        }
        $calls = count($this->native->calls);
        foreach ([0, -1, 0x1_0000_0000] as $cost) {
            try {
                $limiter->check('post', 'k', $cost);
                self::fail("cost $cost accepted");
            } catch (Exception\InvalidArgumentException $e) {
                self::assertSame(Status::INVALID_ARGUMENT, $e->getCode());
            }
        }
        self::assertCount($calls, $this->native->calls, 'bad costs never reach the library (no uint32 wrap)');
        $this->native->answer(Status::INVALID_UTF8, null, 'key is not valid UTF-8');
        $this->expectException(Exception\InvalidUtf8Exception::class);
        $limiter->check('post', "\xff");
    }

    public function testLimiterPeekAndReset(): void
    {
        $limiter = $this->guards()->limiter();
        $this->native->answer(Status::OK, self::decision(true, 20));
        self::assertSame(20, $limiter->peek('post', 'k')->remaining);
        self::assertSame(['limiterPeek', ['guards', 'post', 'k']], $this->native->lastCall());
        $limiter->reset('ip', '10.0.0.1');
        self::assertSame(['limiterReset', ['guards', 'ip', '10.0.0.1']], $this->native->lastCall());
        $this->native->answer(Status::INVALID_ARGUMENT, null, 'rate-limit key is empty');
        $this->expectException(Exception\InvalidArgumentException::class);
        $limiter->reset('ip', '');
    }

    public function testEveryBreakerCallMapsToItsFunction(): void
    {
        $b = $this->guards()->breakers();
        $calls = [
            'check' => 'breakerCheck',
            'status' => 'breakerPeek',
            'recordSuccess' => 'breakerRecordSuccess',
            'recordFailure' => 'breakerRecordFailure',
            'reset' => 'breakerReset',
        ];
        foreach ($calls as $method => $native) {
            $want = self::status('open', 'emergency', false);
            $this->native->answer(Status::OK, $want);
            self::assertSame($want, $b->$method('store'));
            self::assertSame([$native, ['guards', 'store']], $this->native->lastCall());
        }
        $this->native->answer(Status::OK, self::status('open', 'emergency', false));
        self::assertSame('open', $b->forceOpen('store', 60000)->state);
        self::assertSame(['breakerForceOpen', ['guards', 'store', 60000]], $this->native->lastCall());
        foreach (array_keys($calls) as $method) {
            $this->native->answer(Status::INVALID_ARGUMENT, null, 'breaker name is empty');
            try {
                $b->$method('');
                self::fail("$method('') did not throw");
            } catch (Exception\InvalidArgumentException $e) {
                self::assertSame('breaker name is empty', $e->getMessage());
            }
        }
        $this->expectException(Exception\InvalidArgumentException::class);
        $b->forceOpen('store', -1);
    }

    public function testSlotsAcquireThrowsWhenFullAndTryAcquireReturnsNull(): void
    {
        $slots = $this->guards()->slots();
        $lease = self::lease();
        $this->native->answer(Status::OK, $lease);
        self::assertSame($lease, $slots->acquire('user:7'));
        self::assertSame(['slotAcquire', ['guards', 'user:7']], $this->native->lastCall());
        $this->native->answer(Status::OK, null);
        try {
            $slots->acquire('user:7');
            self::fail('no exception');
        } catch (Exception\SlotsExhaustedException $e) {
            self::assertSame(Status::SLOTS_EXHAUSTED, $e->getCode());
            self::assertSame('all connection slots of "user:7" are taken', $e->getMessage());
        }
        $this->native->answer(Status::OK, null);
        self::assertNull($slots->tryAcquire('user:7'));
        $this->native->answer(Status::INVALID_ARGUMENT, null, 'empty key');
        $this->expectException(Exception\InvalidArgumentException::class);
        $slots->acquire('');
    }

    public function testSlotsReleaseRenewIsHeldAndCount(): void
    {
        $slots = $this->guards()->slots();
        $lease = self::lease();
        $this->native->answer(Status::OK, true);
        self::assertTrue($slots->release($lease));
        self::assertSame(['slotRelease', ['guards', $lease]], $this->native->lastCall());
        $this->native->answer(Status::OK, false);
        self::assertFalse($slots->isHeld($lease));
        $renewed = self::lease('user:7', 43);
        $this->native->answer(Status::OK, $renewed);
        self::assertSame($renewed, $slots->renew($lease));
        $this->native->answer(Status::OK, null);
        self::assertNull($slots->renew($lease), 'a lost lease renews to null');
        $this->native->answer(Status::OK, 2);
        self::assertSame(2, $slots->count('user:7'));
        self::assertSame(['slotCount', ['guards', 'user:7']], $this->native->lastCall());
    }

    public function testLeasesSurviveASerialisationRoundTrip(): void
    {
        $lease = new Lease('user:7', 3, 2, PHP_INT_MIN + 5, 1_700_000_000_000, true, -1);
        self::assertEquals($lease, Lease::fromArray($lease->toArray()));
        self::assertEquals($lease, Lease::fromArray(json_decode(json_encode($lease->toArray()), true)));
    }

    public function testMetricsCallsAndDocuments(): void
    {
        $m = $this->guards()->metrics();
        $m->increment('appends');
        self::assertSame(['metricsIncr', ['guards', 'appends', 1]], $this->native->lastCall());
        $m->increment('deliveries', 50);
        self::assertSame(['metricsIncr', ['guards', 'deliveries', 50]], $this->native->lastCall());
        $m->recordUs('append', 250);
        self::assertSame(['metricsRecordUs', ['guards', 'append', 250]], $this->native->lastCall());
        $m->setGauge('connections', -3);
        self::assertSame(['metricsSetGauge', ['guards', 'connections', -3]], $this->native->lastCall());
        $m->addGauge('active_waits', -1);
        self::assertSame(['metricsAddGauge', ['guards', 'active_waits', -1]], $this->native->lastCall());
        $this->native->answer(Status::OK, '{"counters":{"appends":{"total":1,"window":1}},"error_rate":null}');
        self::assertSame(
            ['counters' => ['appends' => ['total' => 1, 'window' => 1]], 'error_rate' => null],
            $m->snapshot()
        );
        $this->native->answer(Status::OK, "lmsrt_appends_total 1\n");
        self::assertSame("lmsrt_appends_total 1\n", $m->prometheus());
        $this->native->answer(Status::OK, '{"status":"degraded","reasons":["error rate"]}');
        self::assertSame(['status' => 'degraded', 'reasons' => ['error rate']], $m->health());

        $calls = count($this->native->calls);
        foreach ([fn () => $m->increment('appends', -1), fn () => $m->recordUs('append', -5)] as $bad) {
            try {
                $bad();
                self::fail('negative accepted');
            } catch (Exception\InvalidArgumentException) {
            }
        }
        self::assertCount($calls, $this->native->calls);
        $this->native->answer(Status::INVALID_ARGUMENT, null, 'unknown counter "x": expected one of appends, ...');
        $this->expectExceptionMessage('unknown counter "x"');
        $m->increment('x');
    }

    public function testCloseIsIdempotentAndFacadesThenThrowClosed(): void
    {
        $g = $this->guards();
        $limiter = $g->limiter();
        $g->close();
        $g->close();
        self::assertTrue($g->isClosed());
        self::assertSame(['guardsClose', ['guards']], $this->native->lastCall());
        self::assertCount(2, $this->native->calls, 'one open, one close');
        $calls = [
            fn () => $limiter->check('post', 'k'),
            fn () => $g->breakers()->check('store'),
            fn () => $g->slots()->acquire('k'),
            fn () => $g->slots()->release(self::lease()),
            fn () => $g->metrics()->increment('appends'),
            fn () => $g->metrics()->snapshot(),
        ];
        foreach ($calls as $call) {
            try {
                $call();
                self::fail('a call after close went through');
            } catch (Exception\StoreClosedException $e) {
                self::assertSame(Status::CLOSED, $e->getCode());
                self::assertSame('the guards are closed', $e->getMessage());
            }
        }
        self::assertCount(2, $this->native->calls);
    }

    public function testTheDestructorClosesOnceNoFacadeIsLeft(): void
    {
        $g = $this->guards();
        $limiter = $g->limiter();
        unset($g);
        self::assertSame('guardsOpen', $this->native->lastCall()[0], 'the facade keeps the handle open');
        unset($limiter);
        self::assertSame('guardsClose', $this->native->lastCall()[0]);
        // A CLOSED answer (closed elsewhere) is not worth an exception.
        $g = $this->guards();
        $this->native->answer(Status::CLOSED);
        $g->close();
        self::assertTrue($g->isClosed());
    }

    public function testGuardsCannotBeClonedOrSerialized(): void
    {
        $g = $this->guards();
        try {
            serialize($g);
            self::fail('serialized');
        } catch (\LogicException) {
        }
        $this->expectException(\Error::class);
        $copy = clone $g;
    }

    public function testRolloutSendsBetaIdsAsStringsAndMapsCohorts(): void
    {
        Rollout::useNative($this->native);
        $this->native->answer(Status::OK, [2, 3230]);
        self::assertSame('beta', Rollout::cohort(20, 'longpoll', [42, '7'], '42'));
        self::assertSame(['rolloutCohort', [20, 'longpoll', '["42","7"]', '42']], $this->native->lastCall());
        $this->native->answer(Status::OK, [1, 810]);
        self::assertTrue(Rollout::isEnabled(20, 'longpoll', [], '2'));
        self::assertNull($this->native->lastCall()[1][2], 'no beta list: NULL');
        $this->native->answer(Status::OK, [0, 9532]);
        self::assertSame('control', Rollout::cohort(5, 'lms', [], '1'));
        $this->native->answer(Status::OK, [0, 9532]);
        self::assertSame(9532, Rollout::bucket('lms', '1'));
        self::assertSame([0, 'lms', null, '1'], $this->native->lastCall()[1]);

        $calls = count($this->native->calls);
        foreach ([[-1, []], [101, []], [5, [1.5]], [5, [null]]] as [$percent, $beta]) {
            try {
                Rollout::cohort($percent, 'lms', $beta, '1');
                self::fail('accepted ' . json_encode([$percent, $beta]));
            } catch (Exception\InvalidArgumentException $e) {
                self::assertSame(Status::INVALID_ARGUMENT, $e->getCode());
            }
        }
        self::assertCount($calls, $this->native->calls);
        $this->native->answer(Status::INVALID_UTF8, null, 'user is not valid UTF-8');
        $this->expectException(Exception\InvalidUtf8Exception::class);
        Rollout::cohort(5, 'lms', [], "\xff");
    }

    /** @return array<string, int> enum constant name => value, from the PHP header */
    private static function headerEnum(string $prefix): array
    {
        $header = (string) file_get_contents(Library::HEADER);
        preg_match_all('/^\s*' . $prefix . '([A-Z0-9_]+) = (-?\d+),/m', $header, $m, PREG_SET_ORDER);
        $out = [];
        foreach ($m as [, $name, $value]) {
            $out[strtolower($name)] = (int) $value;
        }
        return $out;
    }

    public function testTheStringMapsAgreeWithTheHeadersEnums(): void
    {
        self::assertSame(array_flip(BreakerStatus::STATES), self::headerEnum('LMSRT_BREAKER_STATE_'));
        self::assertSame(array_flip(BreakerStatus::MODES), self::headerEnum('LMSRT_MODE_'));
        self::assertSame(array_flip(Rollout::COHORTS), self::headerEnum('LMSRT_COHORT_'));
    }
}
