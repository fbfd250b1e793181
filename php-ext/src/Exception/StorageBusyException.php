<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * The database stayed locked by another writer for too long (`LMSRT_STATUS_BUSY`): retry later.
 */
class StorageBusyException extends \RuntimeException implements LmsRealtimeException
{
}
