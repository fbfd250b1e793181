<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * The store was closed (`LMSRT_STATUS_CLOSED`): a call after `EventStore::close()`.
 */
class StoreClosedException extends \LogicException implements LmsRealtimeException
{
}
