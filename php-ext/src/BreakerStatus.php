<?php

declare(strict_types=1);

namespace LmsRealtime;

/**
 * A circuit breaker's status (`Breakers::check()` and friends). An open breaker is an answer,
 * not an exception: look at `allowed`, and advertise `mode` (with `waitMs`) to clients.
 */
final class BreakerStatus
{
    public const CLOSED = 'closed';
    public const OPEN = 'open';
    public const HALF_OPEN = 'half_open';

    public const MODE_LONG = 'long';
    public const MODE_MEDIUM = 'medium';
    public const MODE_SHORT = 'short';
    public const MODE_EMERGENCY = 'emergency';

    /** `lmsrt_breaker_state` values (`LMSRT_BREAKER_STATE_*`) to `state` strings. */
    public const STATES = [0 => self::CLOSED, 1 => self::OPEN, 2 => self::HALF_OPEN];
    /** `lmsrt_mode` values (`LMSRT_MODE_*`) to `mode` strings. */
    public const MODES = [
        0 => self::MODE_LONG,
        1 => self::MODE_MEDIUM,
        2 => self::MODE_SHORT,
        3 => self::MODE_EMERGENCY,
    ];

    public function __construct(
        /** 'closed', 'open' or 'half_open' (an open breaker whose period is over). */
        public readonly string $state,
        /** The polling mode clients should use: 'long', 'medium', 'short' or 'emergency'. */
        public readonly string $mode,
        /** The wait (or polling interval) of `mode`, in ms: 30000, 10000, 3000 or 1000. */
        public readonly int $waitMs,
        /** Whether the call may go ahead (for peek/record/reset: whether a check would). */
        public readonly bool $allowed,
        /** When refused, ms until a call may be admitted again; 0 when allowed. */
        public readonly int $retryAfterMs,
        /** The call was admitted as a half-open probe: report its outcome. */
        public readonly bool $probe,
        /** Consecutive failures (closed state). */
        public readonly int $consecutiveFailures,
        /** Outcomes reported in the failure window since the breaker last closed. */
        public readonly int $windowRequests,
        /** Failures among them. */
        public readonly int $windowFailures,
        /** The open period the breaker is in, or would use next, in ms. */
        public readonly int $openPeriodMs,
        /** False when the shared table was full and the breaker is not tracked. */
        public readonly bool $tracked,
    ) {
    }
}
