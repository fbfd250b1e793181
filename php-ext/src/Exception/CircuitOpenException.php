<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * A circuit breaker is open (`LMSRT_STATUS_CIRCUIT_OPEN`): back off.
 */
class CircuitOpenException extends \RuntimeException implements LmsRealtimeException
{
}
