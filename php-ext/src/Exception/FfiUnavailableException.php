<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * PHP cannot use FFI here: the extension is missing, or `ffi.enable` forbids loading the library (in `preload` mode outside the CLI, configure `opcache.preload` with `preload.php`).
 */
class FfiUnavailableException extends \RuntimeException implements LmsRealtimeException
{
}
