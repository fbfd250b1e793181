<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * The database file was written by a newer version of the library (`LMSRT_STATUS_SCHEMA_TOO_NEW`).
 */
class SchemaTooNewException extends StorageException implements LmsRealtimeException
{
}
