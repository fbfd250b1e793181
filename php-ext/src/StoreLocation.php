<?php

declare(strict_types=1);

namespace LmsRealtime;

/**
 * Where a store lives, read from the one string `EventStore::open()` and `Guards::open()` take:
 * a SQLite file path, or a Redis URL (`redis://…`, `rediss://…`), by the library's own rule
 * (`StoreLocation::parse` in the crate): a Redis scheme, case-insensitively, is Redis; anything
 * else is a path (the library refuses other `scheme://` text).
 *
 * A store on Redis has no directory for the files PHP and the daemon keep per host (the guards'
 * `-lmsrt-limits`, `-lmsrt-breakers`, `-lmsrt-slots`, `-lmsrt-metrics`): they go to a state
 * directory instead, under the name the daemon gives them (`redis-<URL without password, every
 * character but a letter or digit made _>` in its `--state-dir`), so the PHP workers and the
 * daemon of one host share them when both use the same directory.
 */
final class StoreLocation
{
    public const ENGINE_SQLITE = 'sqlite';
    public const ENGINE_REDIS = 'redis';

    private function __construct()
    {
    }

    /** Whether `$location` is a Redis URL (`redis://` or `rediss://`, any case). */
    public static function isRedis(string $location): bool
    {
        $scheme = strtolower(substr($location, 0, 9));
        return str_starts_with($scheme, 'redis://') || str_starts_with($scheme, 'rediss://');
    }

    /** The engine a store at `$location` runs on: `ENGINE_REDIS` or `ENGINE_SQLITE`. */
    public static function engine(string $location): string
    {
        return self::isRedis($location) ? self::ENGINE_REDIS : self::ENGINE_SQLITE;
    }

    /** `$location` without a URL's `user:password@` (for messages and status pages). */
    public static function redacted(string $location): string
    {
        $scheme = strpos($location, '://');
        $at = strrpos($location, '@');
        if ($scheme === false || $at === false || $at < $scheme) {
            return $location;
        }
        return substr($location, 0, $scheme + 3) . substr($location, $at + 1);
    }

    /**
     * The name the host-local files of the store at `$location` are made from (the guards add
     * `-lmsrt-limits` and so on): the store file itself; for a Redis store,
     * `<state dir>/redis-<its URL made a file name>`, as the daemon names it.
     *
     * `$stateDir` defaults to the environment's `LMSRT_STATE_DIR` (the daemon's variable for
     * its `--state-dir`), else `sys_get_temp_dir()` (the daemon's default is its temporary
     * directory): give both the same directory, one that is not shared with other hosts.
     */
    public static function localFilesBase(string $location, ?string $stateDir = null): string
    {
        if (!self::isRedis($location)) {
            return $location;
        }
        $env = getenv('LMSRT_STATE_DIR');
        $dir = rtrim($stateDir ?? (is_string($env) && $env !== '' ? $env : sys_get_temp_dir()), '/');
        $url = self::redacted($location);
        // Per character, as the daemon does; bytes when the text is not UTF-8.
        $name = preg_replace('/[^A-Za-z0-9]/u', '_', $url) ?? preg_replace('/[^A-Za-z0-9]/', '_', $url);
        return $dir . '/redis-' . $name;
    }
}
