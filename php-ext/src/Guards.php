<?php

declare(strict_types=1);

namespace LmsRealtime;

use LmsRealtime\Exception\LmsRealtimeException;
use LmsRealtime\Exception\StoreClosedException;

/**
 * The guards shared by every PHP worker (and the daemon) using one database: rate limiter,
 * circuit breakers, connection slots and metrics, kept in small shared files beside the
 * database (`<db>-lmsrt-limits`, `-lmsrt-breakers`, `-lmsrt-slots`, `-lmsrt-metrics`), or, for a
 * store on Redis, in a host-local state directory (`StoreLocation::localFilesBase()`): they
 * are per host, as for a store file.
 *
 * ```php
 * $guards = Guards::open('/var/lib/lms/events.db', ['limits' => ['post' => ['rate' => 20]]]);
 * $limiter = $guards->limiter();
 * $d = $limiter->check('post', 'user:7');
 * if (!$d->allowed) { header('Retry-After: ' . $d->retryAfterSeconds()); ... }
 * $mode = $guards->breakers()->check('store')->mode;     // 'long', 'medium', 'short', 'emergency'
 * $lease = $guards->slots()->acquire('user:7');          // SlotsExhaustedException when all taken
 * $guards->metrics()->recordUs('append', 250);
 * ```
 *
 * Refusals (rate limited, breaker open) are answers in the returned value objects, not
 * exceptions; only a full set of connection slots throws, from `Slots::acquire()`. Keep the
 * facades (`limiter()`, …) in a variable when making many calls. `close()` is idempotent and
 * runs on destruction (once no facade refers to this object); calls after it throw
 * `StoreClosedException`.
 */
final class Guards
{
    private mixed $handle;

    private function __construct(
        private readonly Native $native,
        private readonly string $path,
        private readonly string $filesBase,
        mixed $handle
    ) {
        $this->handle = $handle;
    }

    /**
     * Opens the guards of the database at `$path` (the database itself is not opened; the
     * files beside it are created if missing). For a Redis URL the files are
     * `<$stateDir>/redis-<the URL made a file name>-lmsrt-*` (`StoreLocation::localFilesBase()`;
     * `$stateDir` defaults to `LMSRT_STATE_DIR` in the environment, else `sys_get_temp_dir()`,
     * and must exist): give the daemon of the
     * host the same directory (`--state-dir`) so that its metrics are these. `$stateDir` is
     * not used for a store file.
     *
     * `$config` mirrors the library's settings; every key is optional, unknown keys are refused:
     * `limits` (per action: `rate`, `period_ms` (60000), `burst` (= rate), `adaptive` (true,
     * false, or `penalty_permille`/`min_allowance_permille`/`recovery_ms`), `block` (false,
     * true, or `base_ms`/`max_ms`/`forget_ms`); added to the defaults `post` 20/min,
     * `poll` 180/min, `ip` 600/min with blocks), `limiter` (`capacity`), `breaker`
     * (`failure_threshold` 5, `failure_ratio_permille` 500, `min_requests` 20, `window_ms`
     * 10000, `open_ms` 5000, `max_open_ms` 120000, `half_open_probes` 1, `probe_timeout_ms`
     * 10000, `capacity`), `slots` (`max` 3, `lease_ms` 35000, `on_full` 'refuse' or
     * 'evict_oldest', `check_pid` true, `capacity`), `metrics` (`p99_ms` 100,
     * `error_rate_permille` 50, `min_samples` 20). Every process should pass the same settings.
     *
     * @param array<string, mixed> $config
     * @throws LmsRealtimeException
     */
    public static function open(
        string $path,
        array $config = [],
        ?string $library = null,
        ?string $stateDir = null
    ): self {
        return self::openWith(new FfiNative(Library::ffi($library)), $path, $config, $stateDir);
    }

    /**
     * `open()` over a given `Native` (tests use a fake).
     *
     * @internal
     * @param array<string, mixed> $config
     */
    public static function openWith(Native $native, string $path, array $config = [], ?string $stateDir = null): self
    {
        // The settings hold no lists, and PHP's [] must reach the library as {}.
        $json = $config === [] ? null : Json::encode($config, 'guards config', JSON_FORCE_OBJECT);
        $base = StoreLocation::localFilesBase($path, $stateDir);
        $handle = null;
        $status = $native->guardsOpen($base, $json, $handle);
        if ($status !== Status::OK) {
            throw Status::toException($status, $native->lastError());
        }
        return new self($native, $path, $base, $handle);
    }

    /** The rate limiter (a new facade on this handle; keep it for repeated calls). */
    public function limiter(): RateLimiter
    {
        return new RateLimiter($this, $this->native);
    }

    /** The circuit breakers. */
    public function breakers(): Breakers
    {
        return new Breakers($this, $this->native);
    }

    /** The connection slots. */
    public function slots(): Slots
    {
        return new Slots($this, $this->native);
    }

    /** The host-wide metrics. */
    public function metrics(): Metrics
    {
        return new Metrics($this, $this->native);
    }

    /**
     * Closes the handle. Idempotent; runs on destruction. Leases stay held until released
     * (by any `Guards` on the database) or expired.
     */
    public function close(): void
    {
        if ($this->handle === null) {
            return;
        }
        $status = $this->native->guardsClose($this->handle);
        $this->handle = null;
        if ($status !== Status::OK && $status !== Status::CLOSED) {
            throw Status::toException($status, $this->native->lastError());
        }
    }

    public function isClosed(): bool
    {
        return $this->handle === null;
    }

    /** The database path (or Redis URL) the guards belong to. */
    public function path(): string
    {
        return $this->path;
    }

    /** What the guards' files are named after: `<this>-lmsrt-limits` and so on. */
    public function filesBase(): string
    {
        return $this->filesBase;
    }

    /**
     * The native handle, for the facades.
     *
     * @internal
     * @throws StoreClosedException
     */
    public function handle(): mixed
    {
        return $this->handle ?? throw new StoreClosedException('the guards are closed', Status::CLOSED);
    }

    public function __destruct()
    {
        try {
            $this->close();
        } catch (\Throwable) {
            // A destructor must not throw; close() failing leaves nothing to clean up.
        }
    }

    /** A handle cannot be duplicated: two objects would close it twice. */
    private function __clone()
    {
    }

    /** @return never */
    public function __serialize(): array
    {
        throw new \LogicException('Guards cannot be serialized; open them again instead');
    }

    /**
     * @param array<mixed> $data
     * @SuppressWarnings(PHPMD.UnusedFormalParameter) PHP's signature; nothing is restored.
     */
    public function __unserialize(array $data): void
    {
        throw new \LogicException('Guards cannot be unserialized; open them instead');
    }
}
