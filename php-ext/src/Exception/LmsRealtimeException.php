<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * Marker for every exception this package throws: `catch (LmsRealtimeException $e)` catches
 * them all. Exceptions raised from a library status have `getCode()` equal to the ABI status
 * (a negative `Status::*` constant) and the library's message; loader failures have code 0.
 */
interface LmsRealtimeException extends \Throwable
{
}
