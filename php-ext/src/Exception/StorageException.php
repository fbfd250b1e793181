<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * The database failed: I/O error, full disk, corruption (`LMSRT_STATUS_STORAGE`). The more
 * specific storage errors extend it.
 */
class StorageException extends \RuntimeException implements LmsRealtimeException
{
}
