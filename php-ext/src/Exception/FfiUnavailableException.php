<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * PHP cannot use FFI here: the extension is missing, or `ffi.enable` forbids loading the library
 * (in `preload` mode outside the CLI, the scope `LMSRT` must be preloaded: the message says why it
 * is not, with the settings that fix it).
 */
class FfiUnavailableException extends \RuntimeException implements LmsRealtimeException
{
}
