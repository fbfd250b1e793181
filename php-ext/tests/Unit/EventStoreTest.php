<?php

declare(strict_types=1);

namespace LmsRealtime\Tests\Unit;

use LmsRealtime\Batch;
use LmsRealtime\Event;
use LmsRealtime\EventStore;
use LmsRealtime\Exception;
use LmsRealtime\Priority;
use LmsRealtime\Status;
use PHPUnit\Framework\TestCase;

/**
 * How EventStore maps PHP calls to the raw ABI and back, with a fake Native: argument
 * conventions, JSON shapes, statuses to exceptions, and the closed state.
 */
final class EventStoreTest extends TestCase
{
    private FakeNative $native;

    protected function setUp(): void
    {
        $this->native = new FakeNative();
    }

    private function store(array $options = []): EventStore
    {
        return EventStore::openWith($this->native, '/x/events.db', $options);
    }

    private static function batchJson(int ...$ids): string
    {
        $events = array_map(static fn (int $id): array => [
            'id' => $id, 'event_type' => 'message_create', 'priority' => 1, 'channel_id' => 7,
            'message_id' => 40 + $id, 'thread_id' => null, 'user_id' => 3, 'data' => ['n' => $id],
            'timestamp' => 1000, 'expires_at' => 2000,
        ], $ids);
        return json_encode([
            'events' => $events,
            'cursor' => 'v1.00000001.5.5.5.5',
            'gap' => false,
            'has_more' => true,
        ]);
    }

    public function testCheckAndSalvagePassPathsAndDecodeTheReports(): void
    {
        $this->native->answer(Status::OK, '{"path":"/x/e.db","ok":false,"problems":["bad page"],"page_count":9}');
        $r = EventStore::checkWith($this->native, '/x/e.db');
        self::assertFalse($r['ok']);
        self::assertSame(['bad page'], $r['problems']);
        $this->native->answer(Status::OK, '{"events_copied":5,"events_lost":2,"lost_ranges":[[3,4]],"dest_ok":true}');
        $r = EventStore::salvageWith($this->native, '/x/e.db', '/x/new.db');
        self::assertSame([[3, 4]], $r['lost_ranges']);
        self::assertSame(
            [['storeCheck', ['/x/e.db']], ['storeSalvage', ['/x/e.db', '/x/new.db']]],
            $this->native->calls
        );
        $this->native->answer(Status::CORRUPT, null, 'the database is corrupt: malformed');
        try {
            EventStore::checkWith($this->native, '/x/e.db');
            self::fail('expected CorruptException');
        } catch (Exception\CorruptException $e) {
            self::assertInstanceOf(Exception\StorageException::class, $e);
            self::assertSame(Status::CORRUPT, $e->getCode());
        }
    }

    public function testOpenPassesOptionsAsJsonOrNull(): void
    {
        $first = $this->store();
        self::assertSame(['open', ['/x/events.db', null]], $this->native->lastCall());
        $s = $this->store(['max_data_bytes' => 100, 'durability' => 'power_loss']);
        self::assertSame('{"max_data_bytes":100,"durability":"power_loss"}', $this->native->lastCall()[1][1]);
        self::assertSame('/x/events.db', $s->path());
    }

    public function testOpenFailureThrowsTheMappedExceptionWithTheLibraryMessage(): void
    {
        $this->native->answer(Status::IO, null, 'i/o error on /x/events.db-lmsrt-writer: No such file');
        try {
            $this->store();
            self::fail('expected an exception');
        } catch (Exception\IoException $e) {
            self::assertSame(Status::IO, $e->getCode());
            self::assertSame('i/o error on /x/events.db-lmsrt-writer: No such file', $e->getMessage());
            self::assertInstanceOf(Exception\StorageException::class, $e);
        }
    }

    public function testAppendMapsNullsToTheAbiDefaultsAndDataToAJsonObject(): void
    {
        $s = $this->store();
        $this->native->answer(Status::OK, 41);
        self::assertSame(41, $s->append('message_create', 7));
        self::assertSame(
            ['append', ['handle', 'message_create', 0, 7, 0, 0, 0, '{}', 0, null]],
            $this->native->lastCall()
        );
        $this->native->answer(Status::OK, 42);
        $s->append(
            'reaction_update',
            8,
            ['emoji' => '👍', 'path' => 'a/b'],
            messageId: 5,
            threadId: 6,
            userId: 9,
            priority: Priority::HIGH,
            ttlMs: 60000,
            idempotencyKey: 'k'
        );
        self::assertSame(
            ['append', ['handle', 'reaction_update', 2, 8, 5, 6, 9, '{"emoji":"👍","path":"a/b"}', 60000, 'k']],
            $this->native->lastCall()
        );
        $this->native->answer(Status::OK, 43)->answer(Status::OK, 44);
        $s->append('x', 1, (object) ['a' => []]);
        self::assertSame('{"a":[]}', $this->native->lastCall()[1][7]);
        $s->append('x', 1, '{"raw":true}');
        self::assertSame('{"raw":true}', $this->native->lastCall()[1][7]);
    }

    public function testAppendRefusesListsPrioritiesAndTtlsTheAbiWouldMisreadWithoutCallingIt(): void
    {
        $s = $this->store();
        $calls = count($this->native->calls);
        $cases = [
            [fn () => $s->append('x', 1, [1, 2]), Exception\InvalidDataException::class],
            [fn () => $s->append('x', 1, priority: 0), Exception\InvalidPriorityException::class],
            [fn () => $s->append('x', 1, priority: 5), Exception\InvalidPriorityException::class],
            [fn () => $s->append('x', 1, ttlMs: 0), Exception\InvalidTtlException::class],
            [fn () => $s->append('x', 1, ['bad' => "\xff"]), Exception\InvalidUtf8Exception::class],
            [fn () => $s->append('x', 1, ['f' => NAN]), Exception\InvalidDataException::class],
        ];
        foreach ($cases as [$call, $class]) {
            try {
                $call();
                self::fail("expected $class");
            } catch (Exception\InvalidArgumentException $e) {
                self::assertInstanceOf($class, $e);
            }
        }
        self::assertCount($calls, $this->native->calls);
    }

    public function testAppendBatchEncodesEventsAndDecodesIds(): void
    {
        $s = $this->store();
        $this->native->answer(Status::OK, '[5,6,7]');
        $ids = $s->appendBatch([
            ['type' => 'message_create', 'channel_id' => 1, 'data' => []],
            ['type' => 'x', 'channel_id' => 2, 'data' => '{}', 'message_id' => 3],
            ['type' => 'y', 'channel_id' => 3, 'data' => ['a' => 1]],
        ]);
        self::assertSame([5, 6, 7], $ids);
        self::assertSame(
            '[{"type":"message_create","channel_id":1,"data":{}},'
            . '{"type":"x","channel_id":2,"data":{},"message_id":3},'
            . '{"type":"y","channel_id":3,"data":{"a":1}}]',
            $this->native->lastCall()[1][1]
        );
        $this->expectException(Exception\InvalidDataException::class);
        $s->appendBatch([['type' => 'x', 'channel_id' => 1, 'data' => '[1]']]);
    }

    public function testAppendBatchRefusesNonArrayEventsAndBadData(): void
    {
        $s = $this->store();
        $batches = [
            ['nope'],
            [['type' => 'x', 'channel_id' => 1, 'data' => 5]],
            [['type' => 'x', 'channel_id' => 1, 'data' => [1]]],
            [['type' => 'x', 'channel_id' => 1, 'data' => '{']],
        ];
        foreach ($batches as $events) {
            try {
                $s->appendBatch($events);
                self::fail('expected an InvalidArgumentException');
            } catch (Exception\InvalidArgumentException $e) {
                self::assertStringContainsString('event 0', $e->getMessage());
            }
        }
    }

    public function testFetchBuildsTheRequestAndReturnsValueObjects(): void
    {
        $s = $this->store();
        $this->native->answer(Status::OK, self::batchJson(1, 2));
        $b = $s->fetch(
            [7, 8],
            'v1.00000001.0.0.0.0',
            limit: 10,
            order: 'sequential',
            threadId: 4,
            types: ['message_create']
        );
        self::assertSame(
            '{"channels":[7,8],"limit":10,"order":"sequential","cursor":"v1.00000001.0.0.0.0",'
            . '"thread_id":4,"types":["message_create"],"data_as_text":true}',
            $this->native->lastCall()[1][1]
        );
        self::assertInstanceOf(Batch::class, $b);
        self::assertCount(2, $b);
        self::assertFalse($b->isEmpty());
        self::assertTrue($b->hasMore);
        self::assertFalse($b->gap);
        self::assertSame('v1.00000001.5.5.5.5', $b->cursor);
        $e = $b->events[1];
        self::assertInstanceOf(Event::class, $e);
        self::assertSame(
            [2, 'message_create', 1, 7, 42, null, 3, ['n' => 2], 1000, 2000],
            [
                $e->id,
                $e->type,
                $e->priority,
                $e->channelId,
                $e->messageId,
                $e->threadId,
                $e->userId,
                $e->data,
                $e->timestamp,
                $e->expiresAt,
            ]
        );
        self::assertSame([1, 2], array_map(static fn (Event $e) => $e->id, iterator_to_array($b)));
        self::assertSame('message_create', $b->toArray()['events'][0]['type']);
        // A legacy integer cursor and no cursor.
        $this->native->answer(Status::OK, self::batchJson());
        $s->fetch([1], 17);
        self::assertSame(
            '{"channels":[1],"limit":50,"order":"priority","cursor":17,"data_as_text":true}',
            $this->native->lastCall()[1][1]
        );
        $this->native->answer(Status::OK, self::batchJson());
        self::assertTrue($s->fetch([1], '')->isEmpty());
        self::assertSame(
            '{"channels":[1],"limit":50,"order":"priority","data_as_text":true}',
            $this->native->lastCall()[1][1]
        );
    }

    /**
     * The library sends each event's data as JSON text (`data_as_text`); one that PHP cannot
     * decode is skipped, logged and counted, never thrown, and the batch keeps its cursor.
     */
    public function testUndecodableEventDataIsSkippedLoggedAndCountedNotThrown(): void
    {
        $s = $this->store();
        $event = static fn (int $id, mixed $data): array => [
            'id' => $id, 'event_type' => 'message_create', 'priority' => 1, 'channel_id' => 7,
            'message_id' => null, 'thread_id' => null, 'user_id' => 3, 'data' => $data,
            'timestamp' => 1000, 'expires_at' => 2000,
        ];
        $deep = str_repeat('[', 600) . str_repeat(']', 600);
        $batch = json_encode([
            'events' => [
                $event(1, '{"n":1}'),
                $event(2, '{"a":"\\ud800"}'),   // an unpaired surrogate
                $event(3, '{"a":' . $deep . '}'), // deeper than json_decode's 512
                $event(4, '[1,2]'),               // not an object
                $event(5, 'nope'),                // not JSON
                $event(6, '{}'),
                $event(7, ['n' => 7]),            // an object as it is (older library)
            ],
            'cursor' => 'v1.00000001.9.9.9.9', 'gap' => false, 'has_more' => true,
        ], JSON_THROW_ON_ERROR);
        $log = tempnam(sys_get_temp_dir(), 'lmsrt-log');
        $previous = ini_set('error_log', $log);
        $before = EventStore::skippedEvents();
        try {
            $this->native->answer(Status::OK, $batch);
            $b = $s->fetch([7], limit: 1);
            $this->native->answer(Status::OK, $batch);
            $w = $s->wait([7], timeout: 1.0);
        } finally {
            ini_set('error_log', $previous === false ? '' : $previous);
        }
        $logged = (string) file_get_contents($log);
        unlink($log);
        foreach ([$b, $w] as $got) {
            self::assertSame([1, 6, 7], array_map(static fn (Event $e) => $e->id, $got->events));
            self::assertSame([['n' => 1], [], ['n' => 7]], array_map(static fn (Event $e) => $e->data, $got->events));
            self::assertSame('v1.00000001.9.9.9.9', $got->cursor, 'the cursor still moves past them');
            self::assertTrue($got->gap, 'a skipped event is a gap');
            self::assertTrue($got->hasMore);
            self::assertSame(4, $got->skipped);
        }
        self::assertSame($before + 8, EventStore::skippedEvents());
        self::assertSame(8, substr_count($logged, 'lms-realtime: skipped event'), $logged);
        self::assertStringContainsString('skipped event 2 of channel 7', $logged);
    }

    public function testFetchRefusesNonIntegerChannelsAndNonStringTypes(): void
    {
        $s = $this->store();
        foreach ([fn () => $s->fetch(['7']), fn () => $s->fetch([1.5]), fn () => $s->fetch([1], types: [3])] as $call) {
            try {
                $call();
                self::fail('expected InvalidArgumentException');
            } catch (Exception\InvalidArgumentException $e) {
                self::assertSame(Status::INVALID_ARGUMENT, $e->getCode());
            }
        }
    }

    public function testWaitConvertsSecondsToMillisecondsAndBoundsThem(): void
    {
        $s = $this->store();
        $this->native->answer(Status::OK, self::batchJson());
        $s->wait([1], null, 2.5);
        self::assertSame(2500, $this->native->lastCall()[1][2]);
        $this->native->answer(Status::OK, self::batchJson());
        $s->wait([1], timeout: 0.0001);
        self::assertSame(1, $this->native->lastCall()[1][2]);
        foreach ([-1.0, NAN, EventStore::MAX_TIMEOUT + 1] as $bad) {
            try {
                $s->wait([1], timeout: $bad);
                self::fail('expected InvalidArgumentException');
            } catch (Exception\InvalidArgumentException) {
                self::addToAssertionCount(1);
            }
        }
    }

    public function testCursorsAndPurge(): void
    {
        $s = $this->store();
        $this->native->answer(Status::OK, 'v1.0000abcd.1.2.3.4');
        self::assertSame('v1.0000abcd.1.2.3.4', $s->headCursor());
        $s->commitCursor('worker', 'v1.0000abcd.1.2.3.4');
        self::assertSame(['commitCursor', ['handle', 'worker', 'v1.0000abcd.1.2.3.4']], $this->native->lastCall());
        $this->native->answer(Status::OK, null);
        self::assertNull($s->loadCursor('nobody'));
        $this->native->answer(Status::OK, 'v1.0000abcd.1.2.3.4');
        self::assertSame('v1.0000abcd.1.2.3.4', $s->loadCursor('worker'));
        $this->native->answer(Status::OK, 12);
        self::assertSame(12, $s->purgeExpired());
        self::assertSame(PHP_INT_MAX, $this->native->lastCall()[1][1]);
        $this->expectException(Exception\InvalidArgumentException::class);
        $s->purgeExpired(-1);
    }

    public function testAdvanceIdsPassesThePastAndReturnsTheHead(): void
    {
        $s = $this->store();
        $this->native->answer(Status::OK, 1000);
        self::assertSame(1000, $s->advanceIds(1000));
        self::assertSame(['advanceIds', ['handle', 1000]], $this->native->lastCall());
        // The library decides what is out of range (negative, PHP_INT_MAX): PHP passes it on.
        $this->native->answer(
            Status::INVALID_ARGUMENT,
            null,
            'invalid argument: advance_ids: past must be 0 to 9223372036854775806, not -1'
        );
        try {
            $s->advanceIds(-1);
            self::fail('expected InvalidArgumentException');
        } catch (Exception\InvalidArgumentException $e) {
            self::assertSame(Status::INVALID_ARGUMENT, $e->getCode());
            self::assertStringContainsString('past must be', $e->getMessage());
        }
        self::assertSame(['advanceIds', ['handle', -1]], $this->native->lastCall());
        $this->native->answer(Status::BUSY, null, 'database busy');
        $this->expectException(Exception\StorageBusyException::class);
        $s->advanceIds(5);
    }

    public function testEveryStatusBecomesItsExceptionFromEveryMethod(): void
    {
        $s = $this->store();
        $this->native->answer(Status::BUSY, null, 'database busy');
        try {
            $s->fetch([1]);
            self::fail('expected StorageBusyException');
        } catch (Exception\StorageBusyException $e) {
            self::assertSame('database busy', $e->getMessage());
        }
        $this->native->answer(Status::INVALID_CURSOR, null, 'invalid cursor: x');
        $this->expectException(Exception\InvalidCursorException::class);
        $s->commitCursor('w', 'x');
    }

    public function testCloseIsIdempotentAndEverythingAfterItThrowsStoreClosed(): void
    {
        $s = $this->store();
        $s->close();
        $s->close();
        self::assertTrue($s->isClosed());
        self::assertSame(1, count(array_filter($this->native->calls, static fn ($c) => $c[0] === 'close')));
        $before = count($this->native->calls);
        $calls = [
            fn () => $s->append('x', 1),
            fn () => $s->appendBatch([]),
            fn () => $s->fetch([1]),
            fn () => $s->wait([1]),
            fn () => $s->headCursor(),
            fn () => $s->purgeExpired(),
            fn () => $s->advanceIds(1),
            fn () => $s->commitCursor('a', 'b'),
            fn () => $s->loadCursor('a'),
        ];
        foreach ($calls as $call) {
            try {
                $call();
                self::fail('expected StoreClosedException');
            } catch (Exception\StoreClosedException $e) {
                self::assertSame(Status::CLOSED, $e->getCode());
                self::assertInstanceOf(\LogicException::class, $e);
            }
        }
        self::assertCount($before, $this->native->calls, 'nothing reaches the library after close');
    }

    public function testTheDestructorClosesAndAStoreCannotBeClonedOrSerialized(): void
    {
        $s = $this->store();
        try {
            $copy = clone $s;
            self::fail('cloning should fail');
        } catch (\Error) {
            self::addToAssertionCount(1);
        }
        try {
            serialize($s);
            self::fail('serializing should fail');
        } catch (\LogicException) {
            self::addToAssertionCount(1);
        }
        unset($s);
        self::assertSame('close', $this->native->lastCall()[0]);
    }
}
