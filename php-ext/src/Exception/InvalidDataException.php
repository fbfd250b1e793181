<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * The event data is not a JSON object (`LMSRT_STATUS_INVALID_DATA`).
 */
class InvalidDataException extends InvalidArgumentException implements LmsRealtimeException
{
}
