<?php

declare(strict_types=1);

namespace LmsRealtime;

/**
 * A held connection slot (`Slots::acquire()`). Keep it to release or renew the slot; it names a
 * slot in the shared table, not memory, so any `Guards` on the same database (in any process,
 * e.g. a later request) can release it. `toArray()`/`fromArray()` carry it across requests.
 */
final class Lease
{
    public function __construct(
        /** The key the slot belongs to (e.g. the user id). */
        public readonly string $key,
        /** The record in the shared table. */
        public readonly int $record,
        /** The slot within the record (0-based). */
        public readonly int $index,
        /** Identifies this lease exactly (an unsigned 64-bit value, so it may read negative). */
        public readonly int $token,
        /** When the lease expires unless renewed (ms since the Unix epoch). */
        public readonly int $expiresAtMs,
        /** The lease took over one whose holder was dead or, with evict_oldest, the oldest. */
        public readonly bool $reclaimed = false,
        /** Hash of the key (an unsigned 64-bit value, so it may read negative). */
        public readonly int $keyHash = 0,
    ) {
    }

    /**
     * @return array{key: string, record: int, index: int, token: int, expires_at_ms: int, reclaimed: bool,
     *     key_hash: int}
     */
    public function toArray(): array
    {
        return [
            'key' => $this->key,
            'record' => $this->record,
            'index' => $this->index,
            'token' => $this->token,
            'expires_at_ms' => $this->expiresAtMs,
            'reclaimed' => $this->reclaimed,
            'key_hash' => $this->keyHash,
        ];
    }

    /**
     * @param array{key: string, record: int, index: int, token: int, expires_at_ms: int, reclaimed?: bool,
     *     key_hash?: int} $a
     */
    public static function fromArray(array $a): self
    {
        return new self(
            (string) $a['key'],
            (int) $a['record'],
            (int) $a['index'],
            (int) $a['token'],
            (int) $a['expires_at_ms'],
            (bool) ($a['reclaimed'] ?? false),
            (int) ($a['key_hash'] ?? 0),
        );
    }
}
