<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * The store or the guards were closed (`LMSRT_STATUS_CLOSED`): a call after `EventStore::close()`
 * or `Guards::close()`.
 */
class StoreClosedException extends \LogicException implements LmsRealtimeException
{
}
