<?php

declare(strict_types=1);

namespace LmsRealtime;

/**
 * The raw calls of the C ABI, one method per function, with PHP types.
 *
 * Each method returns the ABI status (`Status::OK` or a negative code) and writes its results
 * to the by-reference parameters only on success. `EventStore` turns statuses into exceptions
 * and documents into value objects; keeping the raw calls behind this interface lets that
 * mapping be unit-tested with a fake, without the native library. `FfiNative` is the real one.
 *
 * @internal
 */
interface Native
{
    /** @param-out mixed $handle */
    public function open(string $path, ?string $optionsJson, mixed &$handle): int;

    /** Closes and forgets `$handle` (sets it to null). */
    public function close(mixed &$handle): int;

    /** @param-out int $id */
    public function append(
        mixed $handle,
        string $type,
        int $priority,
        int $channelId,
        int $messageId,
        int $threadId,
        int $userId,
        ?string $dataJson,
        int $ttlMs,
        ?string $idempotencyKey,
        mixed &$id
    ): int;

    /** @param-out string $idsJson */
    public function appendBatch(mixed $handle, string $eventsJson, mixed &$idsJson): int;

    /** @param-out string $batchJson */
    public function fetch(mixed $handle, string $requestJson, mixed &$batchJson): int;

    /** @param-out string $batchJson */
    public function wait(mixed $handle, string $requestJson, int $timeoutMs, mixed &$batchJson): int;

    /** @param-out string $cursor */
    public function headCursor(mixed $handle, mixed &$cursor): int;

    /** @param-out int $deleted */
    public function purgeExpired(mixed $handle, int $maxRows, mixed &$deleted): int;

    public function commitCursor(mixed $handle, string $consumer, string $cursor): int;

    /** @param-out string|null $cursor null when the consumer has none */
    public function loadCursor(mixed $handle, string $consumer, mixed &$cursor): int;

    /**
     * `lmsrt_token_issue`: a token for the daemon (no store needed).
     *
     * @param-out string $token
     */
    public function tokenIssue(
        string $keyId,
        string $secret,
        int $userId,
        string $channelsJson,
        int $expiresAt,
        string $session,
        mixed &$token
    ): int;

    /** The calling thread's last error message. */
    public function lastError(): string;
}
