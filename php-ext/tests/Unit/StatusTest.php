<?php

declare(strict_types=1);

namespace LmsRealtime\Tests\Unit;

use LmsRealtime\Exception;
use LmsRealtime\Library;
use LmsRealtime\Status;
use PHPUnit\Framework\TestCase;

/**
 * The PHP side of the status table agrees with the generated header: same names, same values,
 * an exception for every failure status, and the same ABI version.
 */
final class StatusTest extends TestCase
{
    /** @return array<string, int> status name (without the prefix) => value, from the PHP header */
    private static function headerStatuses(): array
    {
        $header = (string) file_get_contents(Library::HEADER);
        preg_match_all('/^\s*LMSRT_STATUS_([A-Z0-9_]+) = (-?\d+),/m', $header, $m, PREG_SET_ORDER);
        $out = [];
        foreach ($m as [, $name, $value]) {
            $out[$name] = (int) $value;
        }
        return $out;
    }

    public function testEveryHeaderStatusIsAStatusConstantWithTheSameValue(): void
    {
        $statuses = self::headerStatuses();
        self::assertGreaterThanOrEqual(22, count($statuses));
        $constants = (new \ReflectionClass(Status::class))->getConstants();
        foreach ($statuses as $name => $value) {
            self::assertArrayHasKey($name, $constants, "Status::$name is missing");
            self::assertSame($value, $constants[$name], "Status::$name");
        }
        // And no PHP constant that the header does not have.
        unset($constants['EXCEPTIONS']);
        self::assertSame([], array_diff_key($constants, $statuses));
    }

    public function testEveryFailureStatusMapsToAnExceptionOfTheFamily(): void
    {
        foreach (self::headerStatuses() as $name => $value) {
            if ($value === 0) {
                continue;
            }
            self::assertArrayHasKey($value, Status::EXCEPTIONS, "no exception for LMSRT_STATUS_$name");
            $e = Status::toException($value, "msg $name");
            self::assertInstanceOf(Exception\LmsRealtimeException::class, $e);
            self::assertSame($value, $e->getCode());
            self::assertSame("msg $name", $e->getMessage());
            self::assertInstanceOf(Status::EXCEPTIONS[$value], $e);
        }
    }

    /** @return iterable<string, array{int, class-string}> */
    public static function splParents(): iterable
    {
        yield 'invalid argument' => [Status::INVALID_ARGUMENT, \InvalidArgumentException::class];
        yield 'event type' => [Status::INVALID_EVENT_TYPE, \InvalidArgumentException::class];
        yield 'data too large' => [Status::DATA_TOO_LARGE, Exception\InvalidArgumentException::class];
        yield 'utf8' => [Status::INVALID_UTF8, \InvalidArgumentException::class];
        yield 'closed' => [Status::CLOSED, \LogicException::class];
        yield 'busy' => [Status::BUSY, \RuntimeException::class];
        yield 'storage' => [Status::STORAGE, \RuntimeException::class];
        yield 'io' => [Status::IO, Exception\StorageException::class];
        yield 'schema' => [Status::SCHEMA_TOO_NEW, Exception\StorageException::class];
        yield 'rate limited' => [Status::RATE_LIMITED, \RuntimeException::class];
        yield 'panic' => [Status::PANIC, Exception\InternalException::class];
    }

    /**
     * @dataProvider splParents
     * @param class-string $parent
     */
    public function testExceptionsExtendTheMatchingSplType(int $status, string $parent): void
    {
        self::assertInstanceOf($parent, Status::toException($status, 'm'));
    }

    public function testAnUnknownStatusIsAnInternalExceptionThatNamesIt(): void
    {
        $e = Status::toException(-1234, 'from a newer library');
        self::assertInstanceOf(Exception\InternalException::class, $e);
        self::assertSame(-1234, $e->getCode());
        self::assertStringContainsString('-1234', $e->getMessage());
        self::assertStringContainsString('lms-realtime status -3', Status::toException(-3, '')->getMessage());
    }

    public function testAbiVersionMatchesTheCHeader(): void
    {
        $c = (string) file_get_contents(dirname(__DIR__, 3) . '/include/lms_realtime.h');
        self::assertMatchesRegularExpression('/^#define LMSRT_ABI_VERSION ' . Library::ABI_VERSION . '$/m', $c);
    }

    public function testThePhpHeaderHasNoPreprocessorLinesButFfiScopeAndLib(): void
    {
        $lines = preg_grep('/^\s*#/', file(Library::HEADER, FILE_IGNORE_NEW_LINES) ?: []);
        self::assertSame(
            ['#define FFI_SCOPE "LMSRT"', '#define FFI_LIB "liblms_realtime.so"'],
            array_values($lines ?: [])
        );
    }
}
