<?php

declare(strict_types=1);

namespace LmsRealtime;

use LmsRealtime\Exception\InvalidArgumentException;
use LmsRealtime\Exception\LmsRealtimeException;

/**
 * The adaptive rate limiter shared by every process on the host (from `Guards::limiter()`).
 *
 * Each action (`post`, `poll`, `ip`, or one configured in `Guards::open()`) allows `rate`
 * requests per period per key, `burst` at once (GCRA, exact across processes). Refusals lower
 * the key's reputation, which shrinks its allowance until it behaves; actions configured with
 * `block` block keys refused at zero reputation (the DDoS guard).
 */
final class RateLimiter
{
    /** @internal use `Guards::limiter()` */
    public function __construct(private readonly Guards $guards, private readonly Native $native)
    {
    }

    /**
     * Decides one request of `$action` by `$key` (a user id, an IP…) worth `$cost` ordinary
     * ones, consuming allowance when allowed. A refusal is a `Decision` with `allowed` false,
     * not an exception.
     *
     * @throws LmsRealtimeException unknown action, empty key, cost outside 1..burst, closed
     */
    public function check(string $action, string $key, int $cost = 1): Decision
    {
        if ($cost < 1 || $cost > 0xFFFFFFFF) {
            throw new InvalidArgumentException(
                "cost $cost: expected 1 to the action's burst",
                Status::INVALID_ARGUMENT
            );
        }
        $decision = null;
        $status = $this->native->limiterCheck($this->guards->handle(), $action, $key, $cost, $decision);
        if ($status !== Status::OK) {
            throw Status::toException($status, $this->native->lastError());
        }
        return $decision;
    }

    /**
     * What `check()` would answer now, without consuming anything or counting a refusal.
     *
     * @throws LmsRealtimeException
     */
    public function peek(string $action, string $key): Decision
    {
        $decision = null;
        $status = $this->native->limiterPeek($this->guards->handle(), $action, $key, $decision);
        if ($status !== Status::OK) {
            throw Status::toException($status, $this->native->lastError());
        }
        return $decision;
    }

    /**
     * Forgets `$key`'s state for `$action` (allowance, reputation, block), for every process:
     * an administrator's unblock.
     *
     * @throws LmsRealtimeException
     */
    public function reset(string $action, string $key): void
    {
        $status = $this->native->limiterReset($this->guards->handle(), $action, $key);
        if ($status !== Status::OK) {
            throw Status::toException($status, $this->native->lastError());
        }
    }
}
