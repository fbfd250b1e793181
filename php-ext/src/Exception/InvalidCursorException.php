<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * The cursor string cannot be parsed (`LMSRT_STATUS_INVALID_CURSOR`).
 */
class InvalidCursorException extends InvalidArgumentException implements LmsRealtimeException
{
}
