<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * A rate limit refused the request (`LMSRT_STATUS_RATE_LIMITED`): retry after the advertised delay.
 */
class RateLimitedException extends \RuntimeException implements LmsRealtimeException
{
}
