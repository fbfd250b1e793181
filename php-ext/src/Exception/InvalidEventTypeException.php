<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * The event type does not match `[a-z][a-z0-9_]{0,63}` (`LMSRT_STATUS_INVALID_EVENT_TYPE`).
 */
class InvalidEventTypeException extends InvalidArgumentException implements LmsRealtimeException
{
}
