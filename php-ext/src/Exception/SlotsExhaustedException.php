<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * All connection slots of the key are taken (`LMSRT_STATUS_SLOTS_EXHAUSTED`).
 */
class SlotsExhaustedException extends \RuntimeException implements LmsRealtimeException
{
}
