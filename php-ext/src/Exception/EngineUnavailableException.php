<?php

declare(strict_types=1);

namespace LmsRealtime\Exception;

/**
 * The loaded library cannot open a store on this engine: a Redis URL given to a library built
 * without the cargo feature `redis`. Nothing was opened; the code is
 * `LMSRT_STATUS_INVALID_ARGUMENT`, as the library itself answers.
 */
class EngineUnavailableException extends InvalidArgumentException
{
}
