<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * A channel id is not positive (`LMSRT_STATUS_INVALID_CHANNEL`).
 */
class InvalidChannelException extends InvalidArgumentException implements LmsRealtimeException
{
}
