<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * A file beside the database (lock file, shared memory) could not be used, or the directory does
 * not exist (`LMSRT_STATUS_IO`).
 */
class IoException extends StorageException implements LmsRealtimeException
{
}
