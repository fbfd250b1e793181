<?php

declare(strict_types=1);

namespace LmsRealtime;

use LmsRealtime\Exception\InvalidArgumentException;
use LmsRealtime\Exception\LmsRealtimeException;

/**
 * Named circuit breakers shared by every process on the host (from `Guards::breakers()`):
 * closed → open after repeated failures → half-open after the open period (which doubles on
 * each re-open) → closed after a successful probe. Each status carries the client polling
 * mode to advertise: 'long' (healthy), 'medium' (failures showing), 'short' (half-open),
 * 'emergency' (open). Use a fixed set of names (`store`, `daemon`, …).
 */
final class Breakers
{
    /** @internal use `Guards::breakers()` */
    public function __construct(private readonly Guards $guards, private readonly Native $native)
    {
    }

    /**
     * Asks whether a call guarded by `$name` may go ahead. Refused (open) is a status with
     * `allowed` false, not an exception. When half-open the call may be admitted as a probe
     * (`probe`): report its outcome with `recordSuccess()` or `recordFailure()`.
     *
     * @throws LmsRealtimeException empty name, closed
     */
    public function check(string $name): BreakerStatus
    {
        $s = null;
        $status = $this->native->breakerCheck($this->guards->handle(), $name, $s);
        if ($status !== Status::OK) {
            throw Status::toException($status, $this->native->lastError());
        }
        return $s;
    }

    /**
     * The breaker's status without admitting anything (for status pages).
     *
     * @throws LmsRealtimeException
     */
    public function status(string $name): BreakerStatus
    {
        $s = null;
        $status = $this->native->breakerPeek($this->guards->handle(), $name, $s);
        if ($status !== Status::OK) {
            throw Status::toException($status, $this->native->lastError());
        }
        return $s;
    }

    /**
     * Reports a successful call: resets the consecutive failures; closes a half-open breaker.
     *
     * @throws LmsRealtimeException
     */
    public function recordSuccess(string $name): BreakerStatus
    {
        $s = null;
        $status = $this->native->breakerRecordSuccess($this->guards->handle(), $name, $s);
        if ($status !== Status::OK) {
            throw Status::toException($status, $this->native->lastError());
        }
        return $s;
    }

    /**
     * Reports a failed call: may open a closed breaker; re-opens a half-open one.
     *
     * @throws LmsRealtimeException
     */
    public function recordFailure(string $name): BreakerStatus
    {
        $s = null;
        $status = $this->native->breakerRecordFailure($this->guards->handle(), $name, $s);
        if ($status !== Status::OK) {
            throw Status::toException($status, $this->native->lastError());
        }
        return $s;
    }

    /**
     * Closes the breaker and forgets its failures and backoff (an operator's reset).
     *
     * @throws LmsRealtimeException
     */
    public function reset(string $name): BreakerStatus
    {
        $s = null;
        $status = $this->native->breakerReset($this->guards->handle(), $name, $s);
        if ($status !== Status::OK) {
            throw Status::toException($status, $this->native->lastError());
        }
        return $s;
    }

    /**
     * Opens the breaker for `$durationMs` (an operator's switch), keeping its backoff.
     *
     * @throws LmsRealtimeException
     */
    public function forceOpen(string $name, int $durationMs): BreakerStatus
    {
        if ($durationMs < 0) {
            throw new InvalidArgumentException(
                "durationMs must not be negative, got $durationMs",
                Status::INVALID_ARGUMENT
            );
        }
        $s = null;
        $status = $this->native->breakerForceOpen($this->guards->handle(), $name, $durationMs, $s);
        if ($status !== Status::OK) {
            throw Status::toException($status, $this->native->lastError());
        }
        return $s;
    }
}
