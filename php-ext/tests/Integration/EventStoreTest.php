<?php

declare(strict_types=1);

namespace LmsRealtime\Tests\Integration;

use LmsRealtime\Batch;
use LmsRealtime\Event;
use LmsRealtime\EventStore;
use LmsRealtime\Exception;
use LmsRealtime\Library;
use LmsRealtime\Priority;

/** The whole public surface against the real library. */
final class EventStoreTest extends IntegrationTestCase
{
    public function testTheLibraryLoadsAndReportsItsVersion(): void
    {
        self::assertMatchesRegularExpression('/^\d+\.\d+\.\d+/', Library::version());
        self::assertNotSame('', Library::source());
        self::assertSame(Library::ABI_VERSION, Library::ffi()->lmsrt_abi_version());
        $ffi = Library::ffi();
        foreach ((new \ReflectionClass(\LmsRealtime\Status::class))->getConstants() as $name => $value) {
            if ($name !== 'EXCEPTIONS') {
                self::assertSame($value, $ffi->{'LMSRT_STATUS_' . $name}, $name);
            }
        }
    }

    public function testAppendFetchRoundTripWithPriorityOrderAndCursor(): void
    {
        $s = $this->open();
        $start = $s->headCursor();
        $stats = $s->append('statistics_update', 7, ['views' => 10]);
        $text = ['text' => 'héllo', 'tags' => ['a', 'b'], 'meta' => []];
        $msg = $s->append('message_create', 7, $text, messageId: 42, userId: 3);
        $react = $s->append('reaction_update', 7, messageId: 42, userId: 4, priority: Priority::HIGH, ttlMs: 60_000);
        self::assertGreaterThan($stats, $msg);

        $b = $s->fetch([7], $start);
        self::assertInstanceOf(Batch::class, $b);
        self::assertSame([$msg, $react, $stats], array_map(static fn (Event $e) => $e->id, $b->events));
        $e = $b->events[0];
        self::assertSame('message_create', $e->type);
        self::assertSame(Priority::CRITICAL, $e->priority);
        self::assertSame(['text' => 'héllo', 'tags' => ['a', 'b'], 'meta' => []], $e->data);
        self::assertSame([7, 42, null, 3], [$e->channelId, $e->messageId, $e->threadId, $e->userId]);
        self::assertEqualsWithDelta(microtime(true) * 1000, $e->timestamp, 60_000);
        self::assertSame($e->timestamp + 3_600_000, $e->expiresAt);
        self::assertSame($b->events[1]->timestamp + 60_000, $b->events[1]->expiresAt);
        self::assertFalse($b->gap);
        self::assertFalse($b->hasMore);

        // Nothing twice: the returned cursor is past everything.
        self::assertTrue($s->fetch([7], $b->cursor)->isEmpty());
        // Other channels see nothing.
        self::assertCount(0, $s->fetch([8], $start));
    }

    public function testLimitsFiltersOrderAndLegacyCursors(): void
    {
        $s = $this->open();
        $ids = [];
        for ($i = 0; $i < 5; $i++) {
            $ids[] = $s->append('message_create', 1, ['i' => $i], threadId: $i % 2 === 0 ? 9 : null);
        }
        $first = $s->fetch([1], limit: 2);
        self::assertCount(2, $first);
        self::assertTrue($first->hasMore);
        $rest = $s->fetch([1], $first->cursor, limit: 10);
        self::assertSame(array_slice($ids, 2), array_map(static fn (Event $e) => $e->id, $rest->events));

        self::assertCount(3, $s->fetch([1], threadId: 9));
        self::assertCount(0, $s->fetch([1], types: ['badge_update']));
        $legacy = $s->fetch([1], $ids[2], order: 'sequential');
        self::assertSame(array_slice($ids, 3), array_map(static fn (Event $e) => $e->id, $legacy->events));
        self::assertCount(5, $s->fetch([1], 0));
    }

    public function testAppendBatchIsAllOrNothing(): void
    {
        $s = $this->open();
        $ids = $s->appendBatch([
            ['type' => 'message_create', 'channel_id' => 2, 'data' => ['a' => 1], 'user_id' => 5],
            ['type' => 'badge_update', 'channel_id' => 2, 'data' => []],
            ['event_type' => 'thread_create', 'channel_id' => 2, 'thread_id' => 4, 'data' => '{"x":{}}'],
        ]);
        self::assertCount(3, $ids);
        self::assertSame([], $s->appendBatch([]));
        $b = $s->fetch([2], order: 'sequential');
        // Sequential: the next events by id, sorted by priority inside the batch.
        self::assertSame([$ids[0], $ids[2], $ids[1]], array_map(static fn (Event $e) => $e->id, $b->events));
        self::assertSame(['x' => []], $b->events[1]->data);
        self::assertSame(4, $b->events[1]->threadId);
        try {
            $s->appendBatch([
                ['type' => 'message_create', 'channel_id' => 2],
                ['type' => 'message_create', 'channel_id' => 2, 'priority' => 9],
            ]);
            self::fail('expected InvalidPriorityException');
        } catch (Exception\InvalidPriorityException $e) {
            self::assertStringContainsString('event 1', $e->getMessage());
        }
        self::assertCount(3, $s->fetch([2]), 'the refused batch appended nothing');
        $this->expectException(Exception\InvalidArgumentException::class);
        $s->appendBatch([['type' => 'x', 'channel_id' => 2, 'colour' => 'red']]);
    }

    public function testIdempotencyKeys(): void
    {
        $s = $this->open();
        $a = $s->append('message_create', 1, idempotencyKey: 'msg-9');
        self::assertSame($a, $s->append('message_create', 1, idempotencyKey: 'msg-9'));
        $this->expectException(Exception\IdempotencyConflictException::class);
        $s->append('message_delete', 1, idempotencyKey: 'msg-9');
    }

    public function testWaitReturnsPendingAtOnceAndTimesOutEmpty(): void
    {
        $s = $this->open();
        $head = $s->headCursor();
        $t = microtime(true);
        $b = $s->wait([3], $head, timeout: 0.2);
        self::assertTrue($b->isEmpty());
        self::assertGreaterThanOrEqual(0.18, microtime(true) - $t);
        $id = $s->append('message_create', 3);
        $t = microtime(true);
        $b = $s->wait([3], $b->cursor, timeout: 10.0);
        self::assertLessThan(2.0, microtime(true) - $t);
        self::assertSame([$id], array_map(static fn (Event $e) => $e->id, $b->events));
    }

    public function testConsumerCursors(): void
    {
        $s = $this->open();
        self::assertNull($s->loadCursor('mailer'));
        $s->append('message_create', 1);
        $head = $s->headCursor();
        $s->commitCursor('mailer', $head);
        self::assertSame($head, $s->loadCursor('mailer'));
        // Durable: another handle (another worker) sees it.
        $other = $this->open();
        self::assertSame($head, $other->loadCursor('mailer'));
        $s->commitCursor('mailer', '0');
        self::assertStringStartsWith('v1.', (string) $other->loadCursor('mailer'));
    }

    public function testPurgeExpiredReportsAGapToClientsThatMissedEvents(): void
    {
        $s = $this->open(['min_ttl_ms' => 1]);
        $s->append('message_create', 4, ttlMs: 1);
        $s->append('message_create', 4, ttlMs: 1);
        $live = $s->append('message_create', 4);
        usleep(20_000);
        self::assertSame(1, $s->purgeExpired(1));
        self::assertSame(1, $s->purgeExpired());
        self::assertSame(0, $s->purgeExpired());
        $b = $s->fetch([4]);
        self::assertTrue($b->gap);
        self::assertSame([$live], array_map(static fn (Event $e) => $e->id, $b->events));
    }

    public function testAdvanceIdsKeepsNewIdsAboveAFloorWithoutAGap(): void
    {
        $s = $this->open();
        $ids = [];
        for ($i = 0; $i < 3; $i++) {
            $ids[] = $s->append('message_create', 5, ['i' => $i]);
        }
        self::assertSame([1, 2, 3], $ids);
        $before = $s->headCursor();
        self::assertSame(1000, $s->advanceIds(1000));
        $after = $s->headCursor();
        $next = $s->append('message_create', 5, ['i' => 3]);
        self::assertGreaterThanOrEqual(1001, $next);

        // A client that had seen event 3 (a legacy last_event_id, or the cursor from before
        // the call) gets the new event, and no gap: nothing was lost.
        foreach ([3, $before] as $cursor) {
            $b = $s->fetch([5], $cursor);
            self::assertSame([$next], array_map(static fn (Event $e) => $e->id, $b->events));
            self::assertFalse($b->gap);
        }
        $b = $s->fetch([5], 3, order: 'sequential');
        self::assertSame([$next], array_map(static fn (Event $e) => $e->id, $b->events));
        self::assertFalse($b->gap);
        // A page rendered after the call starts past the floor.
        self::assertSame([$next], array_map(static fn (Event $e) => $e->id, $s->fetch([5], $after)->events));

        // Behind the head: a no-op that returns the head.
        self::assertSame($next, $s->advanceIds(5));
        self::assertSame($next + 1, $s->append('message_create', 5));
        try {
            $s->advanceIds(-1);
            self::fail('expected InvalidArgumentException');
        } catch (Exception\InvalidArgumentException $e) {
            self::assertSame(\LmsRealtime\Status::INVALID_ARGUMENT, $e->getCode());
        }
        self::assertSame($next + 1, $s->advanceIds(0), 'the refused call changed nothing');
    }

    public function testOptionsAreAppliedAndUnknownOnesRefused(): void
    {
        $s = $this->open([
            'max_data_bytes' => 64,
            'default_ttl_ms' => 5000,
            'durability' => 'power_loss',
            'purge_interval_ms' => 50,
        ]);
        $s->append('x', 1, ['a' => str_repeat('b', 40)]);
        try {
            $s->append('x', 1, ['a' => str_repeat('b', 100)]);
            self::fail('expected DataTooLargeException');
        } catch (Exception\DataTooLargeException $e) {
            self::assertSame(\LmsRealtime\Status::DATA_TOO_LARGE, $e->getCode());
        }
        $e = $s->fetch([1])->events[0];
        self::assertSame($e->timestamp + 5000, $e->expiresAt);
        $this->expectException(Exception\InvalidArgumentException::class);
        $this->expectExceptionMessage('unknown field');
        $this->open(['max_dat_bytes' => 1], 'other.db');
    }

    public function testTwoHandlesOnOneFileShareEverything(): void
    {
        $a = $this->open();
        $b = $this->open();
        $head = $b->headCursor();
        $id = $a->append('message_create', 1);
        self::assertSame($id, $b->wait([1], $head, timeout: 5.0)->events[0]->id);
        $a->close();
        self::assertCount(1, $b->fetch([1]));
    }
}
