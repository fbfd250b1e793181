<?php

declare(strict_types=1);

namespace LmsRealtime;

use LmsRealtime\Exception;

/**
 * The ABI's status codes (`LMSRT_STATUS_*` in the header) and the exception each one becomes.
 *
 * The values are the core's stable `ErrorCode` table; a unit test checks them, and the mapping,
 * against the header, so a new status cannot ship without an exception.
 */
final class Status
{
    public const OK = 0;
    public const INVALID_ARGUMENT = -1;
    public const INVALID_EVENT_TYPE = -2;
    public const INVALID_PRIORITY = -3;
    public const INVALID_CHANNEL = -4;
    public const INVALID_DATA = -5;
    public const DATA_TOO_LARGE = -6;
    public const INVALID_TTL = -7;
    public const INVALID_CURSOR = -8;
    public const CLOSED = -9;
    public const BUSY = -10;
    public const STORAGE = -11;
    public const SCHEMA_TOO_NEW = -12;
    public const IO = -13;
    public const RATE_LIMITED = -14;
    public const CIRCUIT_OPEN = -15;
    public const SLOTS_EXHAUSTED = -16;
    public const PANIC = -17;
    public const NULL_POINTER = -18;
    public const INVALID_UTF8 = -19;
    public const IDEMPOTENCY_CONFLICT = -20;
    public const CORRUPT = -21;
    public const INTERNAL = -99;

    /** Exception class per failure status. */
    public const EXCEPTIONS = [
        self::INVALID_ARGUMENT => Exception\InvalidArgumentException::class,
        self::INVALID_EVENT_TYPE => Exception\InvalidEventTypeException::class,
        self::INVALID_PRIORITY => Exception\InvalidPriorityException::class,
        self::INVALID_CHANNEL => Exception\InvalidChannelException::class,
        self::INVALID_DATA => Exception\InvalidDataException::class,
        self::DATA_TOO_LARGE => Exception\DataTooLargeException::class,
        self::INVALID_TTL => Exception\InvalidTtlException::class,
        self::INVALID_CURSOR => Exception\InvalidCursorException::class,
        self::CLOSED => Exception\StoreClosedException::class,
        self::BUSY => Exception\StorageBusyException::class,
        self::STORAGE => Exception\StorageException::class,
        self::SCHEMA_TOO_NEW => Exception\SchemaTooNewException::class,
        self::IO => Exception\IoException::class,
        self::RATE_LIMITED => Exception\RateLimitedException::class,
        self::CIRCUIT_OPEN => Exception\CircuitOpenException::class,
        self::SLOTS_EXHAUSTED => Exception\SlotsExhaustedException::class,
        self::PANIC => Exception\InternalException::class,
        self::NULL_POINTER => Exception\InvalidArgumentException::class,
        self::INVALID_UTF8 => Exception\InvalidUtf8Exception::class,
        self::IDEMPOTENCY_CONFLICT => Exception\IdempotencyConflictException::class,
        self::CORRUPT => Exception\CorruptException::class,
        self::INTERNAL => Exception\InternalException::class,
    ];

    private function __construct()
    {
    }

    /**
     * The exception for a failure status; an unknown status (a newer library) becomes an
     * `InternalException` that names it.
     */
    public static function toException(int $status, string $message): Exception\LmsRealtimeException
    {
        $class = self::EXCEPTIONS[$status] ?? null;
        if ($class === null) {
            return new Exception\InternalException(
                sprintf('unknown status %d from the library: %s', $status, $message),
                $status
            );
        }
        if ($message === '') {
            $message = sprintf('lms-realtime status %d', $status);
        }
        return new $class($message, $status);
    }
}
