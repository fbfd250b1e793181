<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * The loaded native library implements another ABI version than this package was written for.
 */
class AbiMismatchException extends \RuntimeException implements LmsRealtimeException
{
}
