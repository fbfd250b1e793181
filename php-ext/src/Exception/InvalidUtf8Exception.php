<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * A string is not valid UTF-8 (`LMSRT_STATUS_INVALID_UTF8`).
 */
class InvalidUtf8Exception extends InvalidArgumentException implements LmsRealtimeException
{
}
