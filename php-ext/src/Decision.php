<?php

declare(strict_types=1);

namespace LmsRealtime;

/**
 * The answer to one rate-limit check (`RateLimiter::check()`). A refusal is an answer, not an
 * exception: look at `allowed`, and send `retryAfterMs` as the `Retry-After`.
 */
final class Decision
{
    public function __construct(
        /** Whether the request may go ahead. */
        public readonly bool $allowed,
        /** Requests of cost 1 that would be allowed right after this decision. */
        public readonly int $remaining,
        /** When refused, ms until a retry can succeed; 0 when allowed. */
        public readonly int $retryAfterMs,
        /** Ms until the key's allowance is full again. */
        public readonly int $resetAfterMs,
        /**
         * The key's current allowance: requests a rested key could make at once at its present
         * reputation (the configured burst at full reputation).
         */
        public readonly int $limit,
        /** The key's reputation, 0 to 1000 per mille: refusals lower it, time restores it. */
        public readonly int $reputation,
        /** Refused by the DDoS guard: the key is blocked for `retryAfterMs`. */
        public readonly bool $blocked,
        /** False when the shared table was full and the request was allowed untracked. */
        public readonly bool $tracked,
    ) {
    }

    /** `Retry-After` in whole seconds (rounded up), 0 when allowed. */
    public function retryAfterSeconds(): int
    {
        return intdiv($this->retryAfterMs + 999, 1000);
    }
}
