<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * A page of the database file is damaged (`LMSRT_STATUS_CORRUPT`). Retrying does not help:
 * check the file with `EventStore::check()` and salvage it with `EventStore::salvage()`.
 * Extends `StorageException`, so code that catches storage failures still catches it.
 */
class CorruptException extends StorageException
{
}
