<?php

declare(strict_types=1);

namespace LmsRealtime\Tests\Integration;

use LmsRealtime\EventStore;
use LmsRealtime\Exception;
use LmsRealtime\Status;

/**
 * Bad input from PHP reaches the library as it is (byte strings with their length, embedded
 * NULs included) and comes back as a typed exception, never a crash: wrong types, invalid
 * UTF-8, oversized data, malformed cursors and use after close.
 */
final class BadInputTest extends IntegrationTestCase
{
    /**
     * @param class-string<\Throwable> $class
     */
    private static function assertThrows(string $class, callable $call, ?int $code = null): void
    {
        try {
            $call();
        } catch (\Throwable $e) {
            self::assertInstanceOf($class, $e, get_class($e) . ': ' . $e->getMessage());
            if ($code !== null) {
                self::assertSame($code, $e->getCode(), $e->getMessage());
            }
            return;
        }
        self::fail("expected $class");
    }

    public function testWrongPhpTypesAreTypeErrors(): void
    {
        $s = $this->open();
        $bad = [
            fn () => $s->append(['message_create'], 1),
            fn () => $s->append('message_create', '1'),
            fn () => $s->append('message_create', 1, 42),
            fn () => $s->append('message_create', 1, messageId: 'x'),
            fn () => $s->fetch('1'),
            fn () => $s->fetch([1], limit: '10'),
            fn () => $s->wait([1], timeout: 'soon'),
            fn () => $s->commitCursor('w', null),
            fn () => $s->purgeExpired('all'),
            fn () => $s->advanceIds('1000'),
        ];
        foreach ($bad as $call) {
            self::assertThrows(\TypeError::class, $call);
        }
        self::assertThrows(
            Exception\InvalidArgumentException::class,
            fn () => $s->fetch(['1']),
            Status::INVALID_ARGUMENT
        );
        self::assertThrows(
            Exception\InvalidArgumentException::class,
            fn () => $s->appendBatch([42]),
            Status::INVALID_ARGUMENT
        );
    }

    public function testLibraryValidationErrorsKeepTheirCodes(): void
    {
        $s = $this->open();
        self::assertThrows(
            Exception\InvalidEventTypeException::class,
            fn () => $s->append('Message-Create', 1),
            Status::INVALID_EVENT_TYPE
        );
        self::assertThrows(
            Exception\InvalidEventTypeException::class,
            fn () => $s->append(str_repeat('a', 100_000), 1),
            Status::INVALID_EVENT_TYPE
        );
        self::assertThrows(
            Exception\InvalidChannelException::class,
            fn () => $s->append('x', 0),
            Status::INVALID_CHANNEL
        );
        self::assertThrows(Exception\InvalidChannelException::class, fn () => $s->fetch([-5]), Status::INVALID_CHANNEL);
        self::assertThrows(
            Exception\InvalidDataException::class,
            fn () => $s->append('x', 1, '[1,2]'),
            Status::INVALID_DATA
        );
        self::assertThrows(
            Exception\InvalidDataException::class,
            fn () => $s->append('x', 1, '{"a":'),
            Status::INVALID_DATA
        );
        self::assertThrows(
            Exception\InvalidTtlException::class,
            fn () => $s->append('x', 1, ttlMs: 10),
            Status::INVALID_TTL
        );
        self::assertThrows(
            Exception\InvalidTtlException::class,
            fn () => $s->append('x', 1, ttlMs: PHP_INT_MAX),
            Status::INVALID_TTL
        );
        self::assertThrows(
            Exception\InvalidCursorException::class,
            fn () => $s->fetch([1], 'v1.garbage'),
            Status::INVALID_CURSOR
        );
        self::assertThrows(
            Exception\InvalidCursorException::class,
            fn () => $s->fetch([1], -1),
            Status::INVALID_CURSOR
        );
        self::assertThrows(
            Exception\InvalidCursorException::class,
            fn () => $s->commitCursor('w', str_repeat('1', 200)),
            Status::INVALID_CURSOR
        );
        self::assertThrows(
            Exception\InvalidArgumentException::class,
            fn () => $s->fetch([1], limit: 0),
            Status::INVALID_ARGUMENT
        );
        self::assertThrows(
            Exception\InvalidArgumentException::class,
            fn () => $s->fetch([1], order: 'random'),
            Status::INVALID_ARGUMENT
        );
        self::assertThrows(Exception\InvalidArgumentException::class, fn () => $s->fetch([]), Status::INVALID_ARGUMENT);
        self::assertThrows(
            Exception\InvalidArgumentException::class,
            fn () => $s->commitCursor('', '1'),
            Status::INVALID_ARGUMENT
        );
        self::assertThrows(
            Exception\InvalidArgumentException::class,
            fn () => $s->loadCursor(str_repeat('c', 300)),
            Status::INVALID_ARGUMENT
        );
        self::assertThrows(
            Exception\InvalidArgumentException::class,
            fn () => $s->append('x', 1, idempotencyKey: ''),
            Status::INVALID_ARGUMENT
        );
        self::assertCount(0, $s->fetch([1]), 'nothing was appended by the refused calls');
    }

    public function testEmbeddedNulsAreSentWithTheirLengthNotCutShort(): void
    {
        $s = $this->open();
        // Cut at the NUL, "message_create" would be valid: the whole string is checked.
        self::assertThrows(
            Exception\InvalidEventTypeException::class,
            fn () => $s->append("message_create\0evil", 1),
            Status::INVALID_EVENT_TYPE
        );
        self::assertThrows(
            Exception\InvalidDataException::class,
            fn () => $s->append('x', 1, "{\"a\":1}\0garbage"),
            Status::INVALID_DATA
        );
        self::assertThrows(
            Exception\InvalidCursorException::class,
            fn () => $s->commitCursor('w', "5\0"),
            Status::INVALID_CURSOR
        );
        // Inside JSON strings a NUL is data like any other.
        $s->append('x', 1, ['nul' => "a\0b"]);
        self::assertSame("a\0b", $s->fetch([1])->events[0]->data['nul']);
        $s->commitCursor("con\0sumer", '3');
        self::assertNull($s->loadCursor('con'));
        self::assertNotNull($s->loadCursor("con\0sumer"));
    }

    public function testInvalidUtf8IsRefusedWherePhpOrTheLibrarySeesIt(): void
    {
        $s = $this->open();
        $bad = "caf\xe9";
        self::assertThrows(Exception\InvalidUtf8Exception::class, fn () => $s->append($bad, 1), Status::INVALID_UTF8);
        self::assertThrows(
            Exception\InvalidUtf8Exception::class,
            fn () => $s->append('x', 1, "{\"a\":\"$bad\"}"),
            Status::INVALID_UTF8
        );
        self::assertThrows(
            Exception\InvalidUtf8Exception::class,
            fn () => $s->append('x', 1, ['a' => $bad]),
            Status::INVALID_UTF8
        );
        self::assertThrows(
            Exception\InvalidUtf8Exception::class,
            fn () => $s->append('x', 1, idempotencyKey: $bad),
            Status::INVALID_UTF8
        );
        self::assertThrows(
            Exception\InvalidUtf8Exception::class,
            fn () => $s->commitCursor($bad, '1'),
            Status::INVALID_UTF8
        );
        self::assertThrows(Exception\InvalidUtf8Exception::class, fn () => $s->loadCursor($bad), Status::INVALID_UTF8);
        self::assertThrows(Exception\InvalidUtf8Exception::class, fn () => $s->fetch([1], $bad), Status::INVALID_UTF8);
        self::assertThrows(
            Exception\InvalidUtf8Exception::class,
            fn () => $s->fetch([1], types: [$bad]),
            Status::INVALID_UTF8
        );
        self::assertThrows(
            Exception\InvalidUtf8Exception::class,
            fn () => $s->appendBatch([['type' => 'x', 'channel_id' => 1, 'data' => ['k' => $bad]]]),
            Status::INVALID_UTF8
        );
        self::assertThrows(
            Exception\InvalidUtf8Exception::class,
            fn () => EventStore::open($this->dir . "/$bad.db"),
            Status::INVALID_UTF8
        );
    }

    public function testOversizedInputIsRefusedBeforeItIsRead(): void
    {
        $s = $this->open(['max_data_bytes' => 1024]);
        $big = ['blob' => str_repeat('x', 2048)];
        self::assertThrows(
            Exception\DataTooLargeException::class,
            fn () => $s->append('x', 1, $big),
            Status::DATA_TOO_LARGE
        );
        self::assertThrows(
            Exception\DataTooLargeException::class,
            fn () => $s->append('x', 1, json_encode($big)),
            Status::DATA_TOO_LARGE
        );
        self::assertThrows(
            Exception\DataTooLargeException::class,
            fn () => $s->appendBatch([['type' => 'x', 'channel_id' => 1, 'data' => $big]]),
            Status::DATA_TOO_LARGE
        );
        // A request over 1 MiB (200k channels) and a path over 4 KiB.
        self::assertThrows(
            Exception\InvalidArgumentException::class,
            fn () => $s->fetch(range(1, 200_000)),
            Status::INVALID_ARGUMENT
        );
        self::assertThrows(
            Exception\InvalidArgumentException::class,
            fn () => $s->fetch(range(1, 2000)),
            Status::INVALID_ARGUMENT
        );
        self::assertThrows(
            Exception\InvalidArgumentException::class,
            fn () => EventStore::open('/tmp/' . str_repeat('p', 5000)),
            Status::INVALID_ARGUMENT
        );
        self::assertThrows(
            Exception\InvalidArgumentException::class,
            fn () => $s->appendBatch(array_fill(0, 10_001, ['type' => 'x', 'channel_id' => 1])),
            Status::INVALID_ARGUMENT
        );
    }

    public function testOpenFailuresAreTyped(): void
    {
        self::assertThrows(
            Exception\IoException::class,
            fn () => EventStore::open($this->dir . '/no/such/dir/e.db'),
            Status::IO
        );
        self::assertThrows(
            Exception\InvalidArgumentException::class,
            fn () => EventStore::open(''),
            Status::INVALID_ARGUMENT
        );
        self::assertThrows(
            Exception\InvalidArgumentException::class,
            fn () => EventStore::open($this->dir . "/a\0b.db"),
            Status::INVALID_ARGUMENT
        );
        self::assertThrows(
            Exception\InvalidArgumentException::class,
            fn () => $this->open(['durability' => 'sometimes']),
            Status::INVALID_ARGUMENT
        );
        self::assertThrows(
            Exception\InvalidArgumentException::class,
            fn () => $this->open(['min_ttl_ms' => 10_000, 'default_ttl_ms' => 5]),
            Status::INVALID_ARGUMENT
        );
        file_put_contents($this->dir . '/not-a-db.db', str_repeat('garbage!', 1000));
        self::assertThrows(
            Exception\StorageException::class,
            fn () => EventStore::open($this->dir . '/not-a-db.db'),
            Status::STORAGE
        );
    }

    public function testEveryMethodAfterCloseThrowsStoreClosed(): void
    {
        $s = $this->open();
        $s->close();
        $s->close();
        $calls = [
            fn () => $s->append('x', 1),
            fn () => $s->appendBatch([['type' => 'x', 'channel_id' => 1]]),
            fn () => $s->fetch([1]),
            fn () => $s->wait([1], timeout: 1.0),
            fn () => $s->headCursor(),
            fn () => $s->purgeExpired(),
            fn () => $s->commitCursor('w', '1'),
            fn () => $s->loadCursor('w'),
        ];
        foreach ($calls as $call) {
            self::assertThrows(Exception\StoreClosedException::class, $call, Status::CLOSED);
        }
    }

    public function testAStaleNativeHandleIsRefusedByTheLibraryItself(): void
    {
        // Below EventStore: the raw binding with a handle closed through a copy.
        $native = new \LmsRealtime\FfiNative();
        $h = null;
        self::assertSame(Status::OK, $native->open($this->dir . '/raw.db', null, $h));
        $copy = \LmsRealtime\Library::ffi()->cast('lmsrt_store*', $h);
        self::assertSame(Status::OK, $native->close($h));
        $out = null;
        self::assertSame(Status::CLOSED, $native->headCursor($copy, $out));
        self::assertStringContainsString('closed', $native->lastError());
        self::assertNull($out);
        self::assertSame(Status::CLOSED, $native->close($copy));
    }
}
