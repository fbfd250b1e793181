<?php

declare(strict_types=1);

namespace LmsRealtime\Tests\Integration;

use LmsRealtime\EventStore;
use LmsRealtime\Exception\InvalidArgumentException;
use LmsRealtime\Exception\StorageException;
use LmsRealtime\Guards;
use LmsRealtime\Library;
use LmsRealtime\StoreLocation;

/**
 * `EventStore::open()` on a Redis URL, against a redis-server these tests start: the store's
 * calls, the host-local files of the guards, and Redis going away (a typed storage exception
 * within the library's I/O timeout, nothing hanging) and coming back (no reopen needed).
 */
final class RedisStoreTest extends IntegrationTestCase
{
    public function testTheLibraryPhpLoadsOpensRedisStores(): void
    {
        self::assertSame(['sqlite', 'redis'], Library::engines());
    }

    public function testAStoreOnRedisAppendsFetchesWaitsAndKeepsConsumerCursors(): void
    {
        $url = self::redis()->url();
        $store = $this->openAt($url);
        self::assertSame('redis', $store->engine());
        self::assertSame($url, $store->path());
        $start = $store->headCursor();
        $a = $store->append('message_create', 3, ['text' => 'héllo'], messageId: 10, userId: 4);
        $ids = $store->appendBatch([
            ['type' => 'reaction_update', 'channel_id' => 3, 'message_id' => 10, 'data' => ['emoji' => '+1']],
            ['event_type' => 'message_delete', 'channel_id' => 3, 'message_id' => 10],
        ]);
        self::assertSame([$a + 1, $a + 2], $ids);
        self::assertSame($a + 3, $store->append('message_create', 3, ['text' => 'x'], idempotencyKey: 'k1'));

        // A second process's view: another handle on the same URL sees the same log.
        $other = $this->openAt($url);
        $batch = $other->fetch([3], $start);
        $ids = array_map(static fn ($e) => $e->id, $batch->events);
        sort($ids); // a batch comes urgent lanes first
        self::assertSame([$a, $a + 1, $a + 2, $a + 3], $ids);
        self::assertSame('héllo', $batch->events[0]->data['text']);
        self::assertFalse($batch->gap);
        // A retry with the same key from the other handle is the first append, not a second one.
        self::assertSame($a + 3, $other->append('message_create', 3, ['text' => 'x'], idempotencyKey: 'k1'));

        $empty = $other->wait([3], $batch->cursor, timeout: 0.2);
        self::assertCount(0, $empty);
        $store->commitCursor('digest', $batch->cursor);
        self::assertSame($batch->cursor, $other->loadCursor('digest'));
        self::assertNull($other->loadCursor('nobody'));
    }

    public function testGuardsOfARedisStoreKeepTheirFilesInTheStateDirectory(): void
    {
        $url = 'redis://user:secret@127.0.0.1:' . self::redis()->port() . '/0?store=g';
        $cwd = (string) getcwd();
        $guards = Guards::open($url, [], null, $this->dir);
        try {
            $base = $this->dir . '/redis-redis___127_0_0_1_' . self::redis()->port() . '_0_store_g';
            self::assertSame($base, $guards->filesBase());
            self::assertSame($base, StoreLocation::localFilesBase($url, $this->dir));
            self::assertTrue($guards->limiter()->check('post', 'user:1')->allowed);
            $guards->metrics()->increment('appends');
            foreach (['limits', 'breakers', 'slots', 'metrics'] as $file) {
                self::assertFileExists("$base-lmsrt-$file");
            }
            self::assertDirectoryDoesNotExist($cwd . '/redis:');
            self::assertDirectoryDoesNotExist($cwd . '/redis:/');
        } finally {
            $guards->close();
        }
    }

    public function testRedisDownIsAStorageExceptionAtOnceAndBackIsServiceAgain(): void
    {
        $server = new RedisServer();
        $url = $server->url();
        $store = $this->openAt($url);
        $cursor = $store->headCursor();
        $id = $store->append('message_create', 1, ['n' => 1]);
        $server->kill();

        foreach (
            [
                'append' => static fn () => $store->append('message_create', 1, ['n' => 2]),
                'fetch' => static fn () => $store->fetch([1], $cursor),
                'wait' => static fn () => $store->wait([1], $cursor, timeout: 20.0),
                'headCursor' => static fn () => $store->headCursor(),
                'open' => static fn () => EventStore::open($url),
            ] as $call => $f
        ) {
            $t0 = microtime(true);
            try {
                $f();
                self::fail("$call succeeded with Redis down");
            } catch (StorageException $e) {
                self::assertStringNotContainsString('secret', $e->getMessage());
            }
            // The library's I/O timeout is 2 s; a refused connection fails at once.
            self::assertLessThan(5.0, microtime(true) - $t0, "$call with Redis down took too long");
        }

        $server->start(); // empty: the log restarts, and the old cursor answers gap
        $next = $store->append('message_create', 1, ['n' => 3]);
        self::assertGreaterThan(0, $next);
        $batch = $store->fetch([1], $cursor);
        self::assertTrue($batch->gap, 'a Redis that came back empty is a gap, never silent loss');
        self::assertSame([$next], array_map(static fn ($e) => $e->id, $batch->events));
        self::assertGreaterThan(0, $id);
    }

    public function testAUrlOfAnotherSchemeAndCheckOfARedisStoreAreRefused(): void
    {
        try {
            EventStore::open('http://127.0.0.1/');
            self::fail('an http:// store was opened');
        } catch (InvalidArgumentException $e) {
            self::assertStringContainsString('scheme', $e->getMessage());
        }
        $this->expectException(InvalidArgumentException::class);
        EventStore::check(self::redis()->url());
    }
}
