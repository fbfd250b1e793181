<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * The event data is larger than the store's `max_data_bytes` (`LMSRT_STATUS_DATA_TOO_LARGE`).
 */
class DataTooLargeException extends InvalidArgumentException implements LmsRealtimeException
{
}
