<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * An argument is out of range or malformed (`LMSRT_STATUS_INVALID_ARGUMENT`, and
 * `LMSRT_STATUS_NULL_POINTER`, which the binding never causes). The more specific argument errors
 * extend it.
 */
class InvalidArgumentException extends \InvalidArgumentException implements LmsRealtimeException
{
}
