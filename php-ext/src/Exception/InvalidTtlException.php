<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * The time-to-live is outside the store's bounds (`LMSRT_STATUS_INVALID_TTL`).
 */
class InvalidTtlException extends InvalidArgumentException implements LmsRealtimeException
{
}
