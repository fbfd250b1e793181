<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * A bug in the library: an internal invariant failed or a panic was caught at the C boundary
 * (`LMSRT_STATUS_INTERNAL`, `LMSRT_STATUS_PANIC`). The process is still sound; please report it.
 */
class InternalException extends \RuntimeException implements LmsRealtimeException
{
}
