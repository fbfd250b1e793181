<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * The priority is not 1 (critical) to 4 (low) (`LMSRT_STATUS_INVALID_PRIORITY`).
 */
class InvalidPriorityException extends InvalidArgumentException implements LmsRealtimeException
{
}
