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

    /** @param-out int $head */
    public function advanceIds(mixed $handle, int $past, mixed &$head): int;

    public function commitCursor(mixed $handle, string $consumer, string $cursor): int;

    /** @param-out string|null $cursor null when the consumer has none */
    public function loadCursor(mixed $handle, string $consumer, mixed &$cursor): int;

    /**
     * `lmsrt_store_check` (no handle: a file path).
     *
     * @param-out string $reportJson
     */
    public function storeCheck(string $path, mixed &$reportJson): int;

    /**
     * `lmsrt_store_salvage` (no handle: file paths).
     *
     * @param-out string $reportJson
     */
    public function storeSalvage(string $path, string $dest, mixed &$reportJson): int;

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

    /** The engines the library can open, separated by spaces (`lmsrt_engines`). */
    public function engines(): string;

    // ---- guards (one `lmsrt_guards` handle per `Guards`) ------------------------------------

    /** @param-out mixed $handle */
    public function guardsOpen(string $path, ?string $configJson, mixed &$handle): int;

    /** Closes and forgets `$handle` (sets it to null). */
    public function guardsClose(mixed &$handle): int;

    /** @param-out Decision $decision */
    public function limiterCheck(mixed $handle, string $action, string $key, int $cost, mixed &$decision): int;

    /** @param-out Decision $decision */
    public function limiterPeek(mixed $handle, string $action, string $key, mixed &$decision): int;

    public function limiterReset(mixed $handle, string $action, string $key): int;

    /** @param-out BreakerStatus $status */
    public function breakerCheck(mixed $handle, string $name, mixed &$status): int;

    /** @param-out BreakerStatus $status */
    public function breakerPeek(mixed $handle, string $name, mixed &$status): int;

    /** @param-out BreakerStatus $status */
    public function breakerRecordSuccess(mixed $handle, string $name, mixed &$status): int;

    /** @param-out BreakerStatus $status */
    public function breakerRecordFailure(mixed $handle, string $name, mixed &$status): int;

    /** @param-out BreakerStatus $status */
    public function breakerReset(mixed $handle, string $name, mixed &$status): int;

    /** @param-out BreakerStatus $status */
    public function breakerForceOpen(mixed $handle, string $name, int $durationMs, mixed &$status): int;

    /** @param-out Lease|null $lease null when every slot is taken (a refusal, status OK) */
    public function slotAcquire(mixed $handle, string $key, mixed &$lease): int;

    /** @param-out bool $held whether the lease was still held */
    public function slotRelease(mixed $handle, Lease $lease, mixed &$held): int;

    /** @param-out Lease|null $renewed the renewed lease, or null when it was lost */
    public function slotRenew(mixed $handle, Lease $lease, mixed &$renewed): int;

    /** @param-out bool $held */
    public function slotIsHeld(mixed $handle, Lease $lease, mixed &$held): int;

    /** @param-out int $count */
    public function slotCount(mixed $handle, string $key, mixed &$count): int;

    /**
     * Stateless: no handle.
     *
     * @param-out int $cohort an `lmsrt_cohort` value
     * @param-out int $bucket
     */
    public function rolloutCohort(
        int $percent,
        string $salt,
        ?string $betaUsersJson,
        string $user,
        mixed &$cohort,
        mixed &$bucket
    ): int;

    public function metricsIncr(mixed $handle, string $counter, int $n): int;

    public function metricsRecordUs(mixed $handle, string $histogram, int $us): int;

    public function metricsSetGauge(mixed $handle, string $gauge, int $value): int;

    public function metricsAddGauge(mixed $handle, string $gauge, int $delta): int;

    /** @param-out string $json */
    public function metricsSnapshot(mixed $handle, mixed &$json): int;

    /** @param-out string $text */
    public function metricsPrometheus(mixed $handle, mixed &$text): int;

    /** @param-out string $json */
    public function metricsHealth(mixed $handle, mixed &$json): int;
}
