<?php

declare(strict_types=1);

namespace LmsRealtime\Tests\Integration;

use LmsRealtime\EventStore;
use LmsRealtime\Guards;
use PHPUnit\Framework\TestCase;

/**
 * Integration tests load the real library (LMSRT_LIBRARY, or the crate's target/) and work in a
 * fresh temporary directory each.
 */
abstract class IntegrationTestCase extends TestCase
{
    protected string $dir;
    /** @var list<EventStore|Guards> */
    private array $stores = [];

    protected function setUp(): void
    {
        $this->dir = sys_get_temp_dir() . '/lmsrt-php-' . getmypid() . '-' . bin2hex(random_bytes(4));
        mkdir($this->dir, 0777);
        chmod($this->dir, 0777); // child processes may run as another user (preload test)
    }

    protected function tearDown(): void
    {
        foreach ($this->stores as $s) {
            $s->close();
        }
        $this->stores = [];
        self::removeTree($this->dir);
    }

    private static function removeTree(string $dir): void
    {
        foreach (scandir($dir) ?: [] as $f) {
            if ($f === '.' || $f === '..') {
                continue;
            }
            $p = "$dir/$f";
            is_dir($p) ? self::removeTree($p) : unlink($p);
        }
        rmdir($dir);
    }

    /** @param array<string, int|string> $options */
    protected function open(array $options = [], string $name = 'events.db'): EventStore
    {
        return $this->openAt($this->dir . '/' . $name, $options);
    }

    /**
     * The store at `$location` (a file or a Redis URL), closed after the test.
     *
     * @param array<string, int|string> $options
     */
    protected function openAt(string $location, array $options = []): EventStore
    {
        $s = EventStore::open($location, $options);
        $this->stores[] = $s;
        return $s;
    }

    /**
     * The engines the store tests run against, for data providers.
     *
     * @return array<string, array{0: string}>
     */
    public static function engines(): array
    {
        return ['sqlite' => ['sqlite'], 'redis' => ['redis']];
    }

    /**
     * A fresh store's location on `$engine`: a file in the test's directory, or a store of its
     * own on the tests' shared Redis server.
     */
    protected function location(string $engine, string $name = 'events.db'): string
    {
        return $engine === 'redis' ? self::redis()->url() : $this->dir . '/' . $name;
    }

    /**
     * The redis-server the tests of this process share (started on first use, killed when
     * PHP exits). Fails, not skips, when the library cannot open a Redis store.
     */
    protected static function redis(): RedisServer
    {
        static $server = null;
        if ($server === null) {
            self::assertContains(
                'redis',
                \LmsRealtime\Library::engines(),
                'the library was built without the cargo feature `redis`: build it with --features redis '
                . '(php-ext/run-tests.sh does)'
            );
            $server = new RedisServer();
        }
        return $server;
    }

    /** @param array<string, mixed> $config */
    protected function guards(array $config = [], string $name = 'events.db'): Guards
    {
        $g = Guards::open($this->dir . '/' . $name, $config);
        $this->stores[] = $g;
        return $g;
    }

    /** The PHP binary running the tests, for child processes. */
    protected static function php(): string
    {
        return PHP_BINARY;
    }

    /** Environment for child processes: the library the parent found. */
    protected static function childEnv(): array
    {
        $env = getenv();
        $env['LMSRT_LIBRARY'] = \LmsRealtime\Library::resolvePath();
        return $env;
    }

    protected static function fixture(string $name): string
    {
        return dirname(__DIR__) . '/fixtures/' . $name;
    }
}
