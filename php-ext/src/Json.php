<?php

declare(strict_types=1);

namespace LmsRealtime;

use LmsRealtime\Exception\InvalidArgumentException;
use LmsRealtime\Exception\InvalidUtf8Exception;

/**
 * JSON to and from the library, with its failures mapped to the package's exceptions.
 *
 * @internal
 */
final class Json
{
    private const FLAGS = JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE
        | JSON_PRESERVE_ZERO_FRACTION;

    private function __construct()
    {
    }

    /**
     * `$value` as JSON; `$what` names it in error messages. `JSON_FORCE_OBJECT` in `$flags`
     * makes every array an object (settings documents have no lists, and `[]` must be `{}`).
     */
    public static function encode(mixed $value, string $what, int $flags = 0): string
    {
        try {
            return json_encode($value, self::FLAGS | $flags);
        } catch (\JsonException $e) {
            if ($e->getCode() === JSON_ERROR_UTF8) {
                throw new InvalidUtf8Exception("$what: a string is not valid UTF-8", Status::INVALID_UTF8, $e);
            }
            throw new InvalidArgumentException(
                "$what cannot be encoded as JSON: " . $e->getMessage(),
                Status::INVALID_ARGUMENT,
                $e
            );
        }
    }

    /** A document the library produced, as arrays. */
    public static function decode(string $json): mixed
    {
        return json_decode($json, true, 512, JSON_THROW_ON_ERROR);
    }
}
