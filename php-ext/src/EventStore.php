<?php

declare(strict_types=1);

namespace LmsRealtime;

use LmsRealtime\Exception\EngineUnavailableException;
use LmsRealtime\Exception\InvalidArgumentException;
use LmsRealtime\Exception\InvalidDataException;
use LmsRealtime\Exception\InvalidUtf8Exception;
use LmsRealtime\Exception\LmsRealtimeException;
use LmsRealtime\Exception\StoreClosedException;

/**
 * The event log over one SQLite file, shared by every PHP worker (and the daemon) on the host,
 * or in a Redis server shared by every host (`EventStore::open('redis://…')`).
 *
 * ```php
 * $store = EventStore::open('/var/lib/lms/events.db');
 * $cursor = $store->headCursor();               // render the page, then poll from here
 * $store->append('message_create', channelId: 7, data: ['text' => 'hi'], messageId: 42, userId: 3);
 * $batch = $store->wait([7], $cursor, timeout: 25.0);
 * foreach ($batch as $event) { ... $event->data['text'] ... }
 * $cursor = $batch->cursor;                     // pass it back next time
 * ```
 *
 * Every failure is an exception implementing `Exception\LmsRealtimeException`, whose
 * `getCode()` is the library's status (`Status::*`). `close()` is idempotent and runs on
 * destruction; any call after it throws `StoreClosedException`.
 */
final class EventStore
{
    private const JSON_FLAGS = JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE
        | JSON_PRESERVE_ZERO_FRACTION;
    /** The longest wait the ABI takes (a `uint32_t` of milliseconds), in seconds. */
    public const MAX_TIMEOUT = 4294967.295;

    /** Events this process skipped because their data could not be decoded (see `batch()`). */
    private static int $skipped = 0;

    private mixed $handle;

    private function __construct(private readonly Native $native, private readonly string $path, mixed $handle)
    {
        $this->handle = $handle;
    }

    /**
     * Opens (creating if needed) the store at `$path`: a SQLite file, or a Redis URL,
     * `redis://[user:password@]host[:port][/db][?store=NAME]` (or `rediss://` for TLS), whose
     * store every host that opens the same URL shares (`?store=` keeps several apart on one
     * server). A Redis store needs a library built with the cargo feature `redis`
     * (`Library::engines()`); with another one, `EngineUnavailableException`. Redis
     * unreachable: `StorageException` (each call waits at most about 2 s for an answer).
     *
     * `$options` (all optional): `durability` ('process_crash' default, or 'power_loss'),
     * `max_data_bytes` (65536), `default_ttl_ms` (3600000), `min_ttl_ms` (1000),
     * `max_ttl_ms` (2592000000), `purge_interval_ms` (0: no background purge), `purge_chunk`
     * (500), `live_tail_window` (256). Unknown keys are refused.
     *
     * `$library` is the path of `liblms_realtime.so` when it is neither preloaded, nor in
     * `LMSRT_LIBRARY`, nor in the crate's build output (see `Library`).
     *
     * @param array<string, int|string> $options
     * @throws LmsRealtimeException
     */
    public static function open(string $path, array $options = [], ?string $library = null): self
    {
        return self::openWith(new FfiNative(Library::ffi($library)), $path, $options);
    }

    /**
     * `open()` over a given `Native` (tests use a fake).
     *
     * @internal
     * @param array<string, int|string> $options
     */
    public static function openWith(Native $native, string $path, array $options = []): self
    {
        $json = $options === [] ? null : self::encode($options, 'options');
        $engines = StoreLocation::isRedis($path) ? explode(' ', $native->engines()) : [];
        if ($engines !== [] && !in_array(StoreLocation::ENGINE_REDIS, $engines, true)) {
            throw new EngineUnavailableException(
                'this lms-realtime library cannot open a Redis store (' . StoreLocation::redacted($path)
                . '): it was built without the cargo feature `redis`; build it with '
                . '`cargo build --release --lib --features redis`',
                Status::INVALID_ARGUMENT
            );
        }
        $handle = null;
        self::ensureOk($native, $native->open($path, $json, $handle));
        return new self($native, $path, $handle);
    }

    /**
     * Appends one event and returns its id once it is committed and visible to every process.
     *
     * @param string $type       `[a-z][a-z0-9_]{0,63}`, e.g. 'message_create'
     * @param int    $channelId  > 0
     * @param array<array-key, mixed>|object|string $data a JSON object: an associative array
     *        (`[]` is `{}`), an object, or JSON text
     * @param int|null $priority `Priority::*`, or null for the type's default
     * @param int|null $ttlMs    time to live in milliseconds, or null for the store's default
     * @param string|null $idempotencyKey a retry with the same key returns the first id
     * @throws LmsRealtimeException
     */
    public function append(
        string $type,
        int $channelId,
        array|object|string $data = [],
        ?int $messageId = null,
        ?int $threadId = null,
        int $userId = 0,
        ?int $priority = null,
        ?int $ttlMs = null,
        ?string $idempotencyKey = null,
    ): int {
        $handle = $this->handle();
        $dataJson = self::dataJson($data);
        if ($priority !== null && ($priority < 1 || $priority > 4)) {
            // 0 would mean "default" to the ABI; only null means that here.
            throw Status::toException(
                Status::INVALID_PRIORITY,
                "invalid priority $priority: expected 1 (critical) to 4 (low)"
            );
        }
        if ($ttlMs !== null && $ttlMs <= 0) {
            throw Status::toException(
                Status::INVALID_TTL,
                "invalid ttl $ttlMs ms: expected a positive number of milliseconds"
            );
        }
        $id = 0;
        self::ensureOk($this->native, $this->native->append(
            $handle,
            $type,
            $priority ?? 0,
            $channelId,
            $messageId ?? 0,
            $threadId ?? 0,
            $userId,
            $dataJson,
            $ttlMs ?? 0,
            $idempotencyKey,
            $id
        ));
        return $id;
    }

    /**
     * Appends several events in one transaction, all or nothing; returns their ids in order.
     *
     * Each event is an array with the keys of `append()` in snake_case: `type` (or
     * `event_type`) and `channel_id` required; `data`, `message_id`, `thread_id`, `user_id`,
     * `priority`, `ttl_ms`, `idempotency_key` optional. Unknown keys are refused.
     *
     * @param list<array<string, mixed>> $events
     * @return list<int>
     * @throws LmsRealtimeException
     */
    public function appendBatch(array $events): array
    {
        $handle = $this->handle();
        $rows = [];
        foreach ($events as $i => $event) {
            if (!is_array($event)) {
                throw new InvalidArgumentException(
                    sprintf('event %s: expected an array, got %s', (string) $i, get_debug_type($event)),
                    Status::INVALID_ARGUMENT
                );
            }
            if (array_key_exists('data', $event)) {
                $event['data'] = self::dataObject($event['data'], (string) $i);
            }
            $rows[] = $event;
        }
        $json = self::encode(array_values($rows), 'events');
        $ids = '';
        self::ensureOk($this->native, $this->native->appendBatch($handle, $json, $ids));
        /** @var list<int> */
        return self::decode($ids);
    }

    /**
     * The next batch for `$channels` after `$cursor`, without waiting.
     *
     * @param list<int> $channels 1 to 1024 channel ids
     * @param string|int|null $cursor the cursor of the previous batch, a legacy `last_event_id`
     *        integer, or null/'' for the start of the log
     * @param string $order 'priority' (urgent lanes first, no starvation) or 'sequential'
     * @param list<string> $types only these event types (empty: all)
     * @throws LmsRealtimeException
     */
    public function fetch(
        array $channels,
        string|int|null $cursor = null,
        int $limit = 50,
        string $order = 'priority',
        ?int $threadId = null,
        array $types = [],
    ): Batch {
        $handle = $this->handle();
        $request = self::request($channels, $cursor, $limit, $order, $threadId, $types);
        $json = '';
        self::ensureOk($this->native, $this->native->fetch($handle, $request, $json));
        return self::batch($json);
    }

    /**
     * Like `fetch()`, but when nothing is pending, blocks until a matching event is appended by
     * any process on the host (waking within milliseconds, using no CPU meanwhile) or
     * `$timeout` seconds pass; then returns an empty batch whose cursor is still valid.
     *
     * @param list<int> $channels
     * @param list<string> $types
     * @throws LmsRealtimeException
     */
    public function wait(
        array $channels,
        string|int|null $cursor = null,
        float $timeout = 30.0,
        int $limit = 50,
        string $order = 'priority',
        ?int $threadId = null,
        array $types = [],
    ): Batch {
        $handle = $this->handle();
        if (!($timeout >= 0.0 && $timeout <= self::MAX_TIMEOUT)) {
            throw new InvalidArgumentException(
                sprintf('timeout must be 0 to %.3f seconds, not %s', self::MAX_TIMEOUT, var_export($timeout, true)),
                Status::INVALID_ARGUMENT
            );
        }
        $request = self::request($channels, $cursor, $limit, $order, $threadId, $types);
        $json = '';
        self::ensureOk($this->native, $this->native->wait($handle, $request, (int) ceil($timeout * 1000), $json));
        return self::batch($json);
    }

    /**
     * A cursor at the current end of the log: render the page, then poll from here, and
     * nothing committed after the render is missed.
     *
     * @throws LmsRealtimeException
     */
    public function headCursor(): string
    {
        $handle = $this->handle();
        $cursor = '';
        self::ensureOk($this->native, $this->native->headCursor($handle, $cursor));
        return $cursor;
    }

    /**
     * Makes every event appended from now on (by any process) get an id greater than `$past`,
     * and returns the head id afterwards: `$past`, or the current head when the store's ids
     * are already at or beyond it (then nothing changes, so calling it again is harmless).
     *
     * For a site moving its events from another backend (the plugin's own table) to this
     * store: browsers keep the `last_event_id` the old backend gave them, so pass the highest
     * id it ever issued before switching, and no new event gets an id those clients would
     * take as already seen. The skipped ids are never assigned; nothing was lost, so a client
     * whose cursor is before the jump gets the later events with `gap` false. It is one
     * transaction under the writer lock every append takes: atomic, and ordered with the
     * appends of every process.
     *
     * @param int $past 0 to PHP_INT_MAX - 1
     * @throws InvalidArgumentException when `$past` is out of range (nothing changes)
     * @throws LmsRealtimeException
     */
    public function advanceIds(int $past): int
    {
        $handle = $this->handle();
        $head = 0;
        self::ensureOk($this->native, $this->native->advanceIds($handle, $past, $head));
        return $head;
    }

    /**
     * Deletes up to `$maxRows` expired events (in short transactions) and returns how many.
     *
     * @throws LmsRealtimeException
     */
    public function purgeExpired(int $maxRows = PHP_INT_MAX): int
    {
        $handle = $this->handle();
        if ($maxRows < 0) {
            throw new InvalidArgumentException("maxRows must not be negative, got $maxRows", Status::INVALID_ARGUMENT);
        }
        $deleted = 0;
        self::ensureOk($this->native, $this->native->purgeExpired($handle, $maxRows, $deleted));
        return $deleted;
    }

    /**
     * Stores `$cursor` durably as the position of `$consumer` (1 to 255 bytes).
     *
     * @throws LmsRealtimeException
     */
    public function commitCursor(string $consumer, string $cursor): void
    {
        $handle = $this->handle();
        self::ensureOk($this->native, $this->native->commitCursor($handle, $consumer, $cursor));
    }

    /**
     * The cursor `$consumer` last committed, or null if it has none.
     *
     * @throws LmsRealtimeException
     */
    public function loadCursor(string $consumer): ?string
    {
        $handle = $this->handle();
        $cursor = null;
        self::ensureOk($this->native, $this->native->loadCursor($handle, $consumer, $cursor));
        return $cursor;
    }

    /**
     * Checks the store file at `$path` for damage (SQLite's integrity check): `['path' => ...,
     * 'ok' => bool, 'problems' => list<string> (at most 100), 'page_count' => int]`.
     *
     * A damaged file is a successful check with `ok` false; it reads only and is safe while
     * the store is in use. Run it when a call threw `CorruptException`; then `salvage()`.
     *
     * @return array<string, mixed>
     * @throws LmsRealtimeException
     */
    public static function check(string $path, ?string $library = null): array
    {
        return self::checkWith(new FfiNative(Library::ffi($library)), $path);
    }

    /**
     * `check()` over a given `Native` (tests use a fake).
     *
     * @internal
     * @return array<string, mixed>
     */
    public static function checkWith(Native $native, string $path): array
    {
        self::refuseUrl($path, 'check()');
        $json = '';
        self::ensureOk($native, $native->storeCheck($path, $json));
        return self::report($json);
    }

    /**
     * Copies every readable row of the store file at `$path` into a new store file at `$dest`
     * (which must not exist), keeping event ids, the id sequence and the epoch (old cursors
     * stay valid), consumer cursors, idempotency keys and purge records; events that could not
     * be read are recorded as purged, so readers whose cursors cross them get `gap`.
     *
     * Returns the report: `events_copied`, `events_lost` (exact when `lost_exact`),
     * `lost_ranges` (inclusive `[lo, hi]` id ranges), `idempotency_keys_copied`,
     * `cursors_copied`, `cursors_complete`, `purged_copied`, `purged_complete`, `sequence`,
     * `epoch`, `epoch_kept`, `dest_ok`, `source`, `dest`. Run it with the daemon stopped and
     * writes offline, then move `$dest` over `$path` and delete `$path`'s `-wal` and `-shm`.
     *
     * @return array<string, mixed>
     * @throws LmsRealtimeException
     */
    public static function salvage(string $path, string $dest, ?string $library = null): array
    {
        return self::salvageWith(new FfiNative(Library::ffi($library)), $path, $dest);
    }

    /**
     * `salvage()` over a given `Native` (tests use a fake).
     *
     * @internal
     * @return array<string, mixed>
     */
    public static function salvageWith(Native $native, string $path, string $dest): array
    {
        self::refuseUrl($path, 'salvage()');
        self::refuseUrl($dest, 'salvage()');
        $json = '';
        self::ensureOk($native, $native->storeSalvage($path, $dest, $json));
        return self::report($json);
    }

    /** `check()` and `salvage()` read a SQLite file: a Redis store has none to repair. */
    private static function refuseUrl(string $path, string $what): void
    {
        if (StoreLocation::isRedis($path)) {
            throw new InvalidArgumentException(
                "$what works on a store file, not a Redis store (" . StoreLocation::redacted($path) . ')',
                Status::INVALID_ARGUMENT
            );
        }
    }

    /** @return array<string, mixed> */
    private static function report(string $json): array
    {
        $report = json_decode($json, true, 16, JSON_THROW_ON_ERROR);
        if (!is_array($report)) {
            throw new Exception\InternalException(
                'the library returned a report that is not an object',
                Status::INTERNAL
            );
        }
        return $report;
    }

    /**
     * How many events this process has skipped, across every store, because their data could
     * not be decoded.
     *
     * The library refuses such data at append and skips such rows itself, so this stays 0
     * unless a store file holds rows written by another (older or foreign) writer, or damaged.
     * Each skip is also written to the error log, and the batch that skipped it says `gap`
     * (and counts it in `Batch::$skipped`): the reader resynchronises and goes on, its cursor
     * past the row, instead of failing on every fetch until the row expires.
     */
    public static function skippedEvents(): int
    {
        return self::$skipped;
    }

    /**
     * Closes the store. Idempotent; runs on destruction. Afterwards every method throws
     * `StoreClosedException`.
     */
    public function close(): void
    {
        if ($this->handle === null) {
            return;
        }
        $status = $this->native->close($this->handle);
        $this->handle = null;
        // Closing a handle the library already closed is not worth an exception here.
        if ($status !== Status::OK && $status !== Status::CLOSED) {
            self::ensureOk($this->native, $status);
        }
    }

    public function isClosed(): bool
    {
        return $this->handle === null;
    }

    /** The database file or the Redis URL this store was opened on, as given. */
    public function path(): string
    {
        return $this->path;
    }

    /** The engine the store runs on: `StoreLocation::ENGINE_SQLITE` or `ENGINE_REDIS`. */
    public function engine(): string
    {
        return StoreLocation::engine($this->path);
    }

    public function __destruct()
    {
        try {
            $this->close();
        } catch (\Throwable) {
            // A destructor must not throw; close() failing leaves nothing to clean up.
        }
    }

    /** A store handle cannot be duplicated: two objects would close one store twice. */
    private function __clone()
    {
    }

    /** @return never */
    public function __serialize(): array
    {
        throw new \LogicException('an EventStore cannot be serialized; open it again instead');
    }

    /**
     * @param array<mixed> $data
     * @SuppressWarnings(PHPMD.UnusedFormalParameter) PHP's signature; nothing is restored.
     */
    public function __unserialize(array $data): void
    {
        throw new \LogicException('an EventStore cannot be unserialized; open it instead');
    }

    private function handle(): mixed
    {
        if ($this->handle === null) {
            throw new StoreClosedException('the store is closed', Status::CLOSED);
        }
        return $this->handle;
    }

    /** @throws LmsRealtimeException */
    private static function ensureOk(Native $native, int $status): void
    {
        if ($status !== Status::OK) {
            throw Status::toException($status, $native->lastError());
        }
    }

    /**
     * @param array<array-key, mixed>|object|string $data
     */
    private static function dataJson(array|object|string $data): string
    {
        if (is_string($data)) {
            return $data;
        }
        if ($data === []) {
            return '{}';
        }
        if (is_array($data) && array_is_list($data)) {
            throw new InvalidDataException(
                'event data must be a JSON object: an associative array or an object, not a list',
                Status::INVALID_DATA
            );
        }
        return self::encode($data, 'data');
    }

    /**
     * The `data` of one batch event as a value that encodes to a JSON object: PHP's `[]` and
     * JSON text `{}` become `{}` (not `[]`).
     */
    private static function dataObject(mixed $data, string $index): array|object
    {
        if (is_string($data)) {
            try {
                $data = json_decode($data, false, 512, JSON_THROW_ON_ERROR);
            } catch (\JsonException $e) {
                throw self::jsonError($e, "event $index: data");
            }
            if (!is_object($data)) {
                throw new InvalidDataException("event $index: data must be a JSON object", Status::INVALID_DATA);
            }
            return $data;
        }
        if (is_array($data)) {
            if ($data === []) {
                return new \stdClass();
            }
            if (array_is_list($data)) {
                throw new InvalidDataException(
                    "event $index: data must be a JSON object: an associative array or an object, not a list",
                    Status::INVALID_DATA
                );
            }
            return $data;
        }
        if (is_object($data)) {
            return $data;
        }
        throw new InvalidDataException(
            sprintf('event %s: data must be an array, an object or JSON text, got %s', $index, get_debug_type($data)),
            Status::INVALID_DATA
        );
    }

    /**
     * @param list<mixed> $channels
     * @param list<mixed> $types
     */
    private static function request(
        array $channels,
        string|int|null $cursor,
        int $limit,
        string $order,
        ?int $threadId,
        array $types,
    ): string {
        foreach ($channels as $c) {
            if (!is_int($c)) {
                throw new InvalidArgumentException(
                    'channel ids must be integers, got ' . get_debug_type($c),
                    Status::INVALID_ARGUMENT
                );
            }
        }
        foreach ($types as $t) {
            if (!is_string($t)) {
                throw new InvalidArgumentException(
                    'event types must be strings, got ' . get_debug_type($t),
                    Status::INVALID_ARGUMENT
                );
            }
        }
        $r = ['channels' => array_values($channels), 'limit' => $limit, 'order' => $order];
        if ($cursor !== null && $cursor !== '') {
            $r['cursor'] = $cursor;
        }
        if ($threadId !== null) {
            $r['thread_id'] = $threadId;
        }
        if ($types !== []) {
            $r['types'] = array_values($types);
        }
        // Each event's data comes as its own JSON text: one the decoder refuses then costs
        // that event (see `batch()`), not the whole batch.
        $r['data_as_text'] = true;
        return self::encode($r, 'request');
    }

    private static function encode(mixed $value, string $what): string
    {
        try {
            return json_encode($value, self::JSON_FLAGS);
        } catch (\JsonException $e) {
            throw self::jsonError($e, $what);
        }
    }

    private static function jsonError(\JsonException $e, string $what): LmsRealtimeException
    {
        if ($e->getCode() === JSON_ERROR_UTF8) {
            return new InvalidUtf8Exception("$what: a string is not valid UTF-8", Status::INVALID_UTF8, $e);
        }
        $code = str_ends_with($what, 'data') ? Status::INVALID_DATA : Status::INVALID_ARGUMENT;
        return Status::toException($code, "$what is not valid JSON: " . $e->getMessage());
    }

    private static function decode(string $json): mixed
    {
        return json_decode($json, true, 512, JSON_THROW_ON_ERROR);
    }

    /**
     * A batch from the library's JSON, each event's data decoded on its own.
     *
     * An event whose data cannot be decoded (too deep for `json_decode`, an unpaired
     * surrogate, not an object) must not make the whole batch throw: every later fetch of the
     * channel would throw too, and a reader could never step past it. It is skipped instead,
     * logged and counted (`skippedEvents()`, `Batch::$skipped`); the batch's cursor, which the
     * library already moved past it, is kept, and the batch says `gap` so the reader
     * resynchronises.
     */
    private static function batch(string $json): Batch
    {
        /** @var array{events: list<array<string, mixed>>, cursor: string, gap: bool, has_more: bool} $b */
        $b = self::decode($json);
        $events = [];
        $skipped = 0;
        foreach ($b['events'] as $e) {
            $data = $e['data'] ?? null;
            if (is_string($data)) {
                try {
                    // As arrays, `{}` and `[]` look alike: the text tells an object.
                    $object = str_starts_with(ltrim($data), '{');
                    $data = json_decode($data, true, 512, JSON_THROW_ON_ERROR);
                    $why = $object && is_array($data) ? null : 'not a JSON object';
                } catch (\JsonException $x) {
                    $why = $x->getMessage();
                }
            } else {
                $why = is_array($data) ? null : 'not a JSON object';
            }
            if ($why !== null) {
                $skipped++;
                self::$skipped++;
                error_log(sprintf(
                    'lms-realtime: skipped event %s of channel %s: its data cannot be decoded (%s)',
                    var_export($e['id'] ?? null, true),
                    var_export($e['channel_id'] ?? null, true),
                    $why
                ));
                continue;
            }
            $e['data'] = $data;
            /** @phpstan-ignore-next-line argument.type (the library's JSON shape) */
            $events[] = Event::fromArray($e);
        }
        return new Batch($events, $b['cursor'], $b['gap'] || $skipped > 0, $b['has_more'], $skipped);
    }
}
