<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * The native library could not be found or loaded (see the message for the paths tried).
 */
class LibraryNotFoundException extends \RuntimeException implements LmsRealtimeException
{
}
