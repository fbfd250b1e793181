<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * An idempotency key was reused for a different event (`LMSRT_STATUS_IDEMPOTENCY_CONFLICT`).
 */
class IdempotencyConflictException extends \LogicException implements LmsRealtimeException
{
}
