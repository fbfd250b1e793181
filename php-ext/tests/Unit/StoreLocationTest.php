<?php

declare(strict_types=1);

namespace LmsRealtime\Tests\Unit;

use LmsRealtime\EventStore;
use LmsRealtime\Exception\EngineUnavailableException;
use LmsRealtime\Exception\InvalidArgumentException;
use LmsRealtime\Guards;
use LmsRealtime\Status;
use LmsRealtime\StoreLocation;
use PHPUnit\Framework\TestCase;

/**
 * A store named by a Redis URL: told from a path by the library's rule, opened only by a
 * library that has the engine, its password kept out of messages, and its host-local files
 * named as the daemon names them (never a `redis:` directory).
 */
final class StoreLocationTest extends TestCase
{
    public function testRedisUrlsAreToldFromPathsAsTheLibraryDoes(): void
    {
        foreach (['redis://h:1/0', 'REDIS://h', 'rediss://u:p@h:6380/2?store=a'] as $url) {
            self::assertTrue(StoreLocation::isRedis($url), $url);
            self::assertSame('redis', StoreLocation::engine($url));
        }
        foreach (['/var/lib/lms/events.db', 'events.db', 'redis.db', 'redis:/x', 'http://h/'] as $path) {
            self::assertFalse(StoreLocation::isRedis($path), $path);
        }
        self::assertSame('sqlite', StoreLocation::engine('/x/e.db'));
    }

    public function testThePasswordIsTakenOutOfTheShownUrl(): void
    {
        self::assertSame('redis://h:1/0', StoreLocation::redacted('redis://u:secret@h:1/0'));
        self::assertSame('redis://h:1/0', StoreLocation::redacted('redis://:p@ss@h:1/0'));
        self::assertSame('redis://h:1/0', StoreLocation::redacted('redis://h:1/0'));
        self::assertSame('/x/a@b.db', StoreLocation::redacted('/x/a@b.db'));
    }

    public function testLocalFilesAreBesideAFileAndInTheStateDirectoryForRedisUnderTheDaemonsName(): void
    {
        self::assertSame('/x/events.db', StoreLocation::localFilesBase('/x/events.db', '/state'));
        // The daemon's `local_files_base`: `redis-` and the URL without its password, every
        // character but a letter or digit made `_`.
        self::assertSame(
            '/state/redis-redis___127_0_0_1_6379_0_store_lms',
            StoreLocation::localFilesBase('redis://u:pw@127.0.0.1:6379/0?store=lms', '/state/')
        );
        self::assertSame('/st/redis-redis___h_', StoreLocation::localFilesBase('redis://hé', '/st'));
        $env = getenv('LMSRT_STATE_DIR');
        try {
            putenv('LMSRT_STATE_DIR');
            $tmp = rtrim(sys_get_temp_dir(), '/');
            self::assertSame("$tmp/redis-redis___h", StoreLocation::localFilesBase('redis://h'));
            putenv('LMSRT_STATE_DIR=/var/lib/lms');
            self::assertSame('/var/lib/lms/redis-redis___h', StoreLocation::localFilesBase('redis://h'));
        } finally {
            putenv($env === false ? 'LMSRT_STATE_DIR' : "LMSRT_STATE_DIR=$env");
        }
    }

    public function testARedisUrlWithALibraryWithoutTheEngineIsATypedExceptionAndOpensNothing(): void
    {
        $native = new FakeNative();
        $native->engines = 'sqlite';
        try {
            EventStore::openWith($native, 'redis://u:secret@127.0.0.1:6379/0');
            self::fail('opened a Redis store with a library without the engine');
        } catch (EngineUnavailableException $e) {
            self::assertInstanceOf(InvalidArgumentException::class, $e);
            self::assertSame(Status::INVALID_ARGUMENT, $e->getCode());
            self::assertStringContainsString('--features redis', $e->getMessage());
            self::assertStringContainsString('redis://127.0.0.1:6379/0', $e->getMessage());
            self::assertStringNotContainsString('secret', $e->getMessage());
        }
        self::assertSame([], $native->calls);
        // A file needs no engine check.
        $store = EventStore::openWith($native, '/x/events.db');
        self::assertSame('sqlite', $store->engine());
    }

    public function testARedisUrlIsOpenedByALibraryWithTheEngine(): void
    {
        $native = new FakeNative();
        $store = EventStore::openWith($native, 'redis://127.0.0.1:6379/0');
        self::assertSame('redis', $store->engine());
        self::assertSame(['open', ['redis://127.0.0.1:6379/0', null]], $native->calls[0]);
    }

    public function testCheckAndSalvageRefuseARedisStore(): void
    {
        $native = new FakeNative();
        foreach (
            [
                static fn () => EventStore::checkWith($native, 'redis://h:1/0'),
                static fn () => EventStore::salvageWith($native, 'redis://h:1/0', '/x/new.db'),
                static fn () => EventStore::salvageWith($native, '/x/e.db', 'redis://h:1/0'),
            ] as $call
        ) {
            try {
                $call();
                self::fail('a Redis store was checked or salvaged');
            } catch (InvalidArgumentException $e) {
                self::assertStringContainsString('not a Redis store', $e->getMessage());
            }
        }
        self::assertSame([], $native->calls);
    }

    public function testGuardsOfARedisStoreOpenTheirFilesInTheStateDirectory(): void
    {
        $native = new FakeNative();
        $guards = Guards::openWith($native, 'redis://h:1/0', [], '/state');
        self::assertSame(['guardsOpen', ['/state/redis-redis___h_1_0', null]], $native->lastCall());
        self::assertSame('redis://h:1/0', $guards->path());
        self::assertSame('/state/redis-redis___h_1_0', $guards->filesBase());
        $file = Guards::openWith($native, '/x/events.db', [], '/state');
        self::assertSame('/x/events.db', $file->filesBase());
    }
}
