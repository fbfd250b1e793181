<?php

declare(strict_types=1);

namespace LmsRealtime;

use FFI;
use FFI\CData;

/**
 * `Native` over the real library through PHP's FFI.
 *
 * PHP strings go to `const char *` parameters as they are (no copy, embedded NULs included,
 * with their byte length). Out-parameters are allocated once per instance and reused: PHP runs
 * one call at a time per process. Every `lmsrt_buf` is freed in a `finally`. The guards'
 * decisions come back in preallocated C structs, read field by field into value objects: no
 * JSON and no allocation in the library on the hot path.
 *
 * @internal
 */
final class FfiNative implements Native
{
    private FFI $ffi;
    private CData $id;
    private CData $idPtr;
    private CData $u64;
    private CData $u64Ptr;
    private CData $found;
    private CData $foundPtr;
    private CData $buf;
    private CData $bufPtr;
    private CData $errBuf;
    private CData $errLen;
    private CData $errLenPtr;

    // The guards' out-parameters, allocated on first use so a request that only uses the
    // store pays nothing for them.
    private ?CData $decision = null;
    private ?CData $decisionPtr = null;
    private ?CData $breaker = null;
    private ?CData $breakerPtr = null;
    private ?CData $lease = null;
    private ?CData $leasePtr = null;
    private ?CData $u32 = null;
    private ?CData $u32Ptr = null;
    private ?CData $i32 = null;
    private ?CData $i32Ptr = null;

    private const ERR_BUF = 1024;

    public function __construct(?FFI $ffi = null)
    {
        $this->ffi = $ffi ?? Library::ffi();
        $this->id = $this->ffi->new('int64_t');
        $this->idPtr = FFI::addr($this->id);
        $this->u64 = $this->ffi->new('uint64_t');
        $this->u64Ptr = FFI::addr($this->u64);
        $this->found = $this->ffi->new('bool');
        $this->foundPtr = FFI::addr($this->found);
        $this->buf = $this->ffi->new('lmsrt_buf');
        $this->bufPtr = FFI::addr($this->buf);
        $this->errBuf = $this->ffi->new('char[' . self::ERR_BUF . ']');
        $this->errLen = $this->ffi->new('size_t');
        $this->errLenPtr = FFI::addr($this->errLen);
    }

    public function open(string $path, ?string $optionsJson, mixed &$handle): int
    {
        $h = $this->ffi->new('lmsrt_store*');
        $status = $this->ffi->lmsrt_store_open(
            $path,
            strlen($path),
            $optionsJson,
            $optionsJson === null ? 0 : strlen($optionsJson),
            FFI::addr($h)
        );
        if ($status === Status::OK) {
            $handle = $h;
        }
        return $status;
    }

    public function close(mixed &$handle): int
    {
        if (!$handle instanceof CData) {
            $handle = null;
            return Status::OK;
        }
        $status = $this->ffi->lmsrt_store_close(FFI::addr($handle));
        $handle = null;
        return $status;
    }

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
    ): int {
        $status = $this->ffi->lmsrt_store_append(
            $handle,
            $type,
            strlen($type),
            $priority,
            $channelId,
            $messageId,
            $threadId,
            $userId,
            $dataJson,
            $dataJson === null ? 0 : strlen($dataJson),
            $ttlMs,
            $idempotencyKey,
            $idempotencyKey === null ? 0 : strlen($idempotencyKey),
            $this->idPtr
        );
        if ($status === Status::OK) {
            $id = $this->id->cdata;
        }
        return $status;
    }

    public function appendBatch(mixed $handle, string $eventsJson, mixed &$idsJson): int
    {
        return $this->withBuf(
            fn () => $this->ffi->lmsrt_store_append_batch($handle, $eventsJson, strlen($eventsJson), $this->bufPtr),
            $idsJson
        );
    }

    public function fetch(mixed $handle, string $requestJson, mixed &$batchJson): int
    {
        return $this->withBuf(
            fn () => $this->ffi->lmsrt_store_fetch($handle, $requestJson, strlen($requestJson), $this->bufPtr),
            $batchJson
        );
    }

    public function wait(mixed $handle, string $requestJson, int $timeoutMs, mixed &$batchJson): int
    {
        return $this->withBuf(
            fn () => $this->ffi->lmsrt_store_wait(
                $handle,
                $requestJson,
                strlen($requestJson),
                $timeoutMs,
                $this->bufPtr
            ),
            $batchJson
        );
    }

    public function headCursor(mixed $handle, mixed &$cursor): int
    {
        return $this->withBuf(fn () => $this->ffi->lmsrt_store_head_cursor($handle, $this->bufPtr), $cursor);
    }

    public function storeCheck(string $path, mixed &$reportJson): int
    {
        return $this->withBuf(
            fn () => $this->ffi->lmsrt_store_check($path, strlen($path), $this->bufPtr),
            $reportJson
        );
    }

    public function storeSalvage(string $path, string $dest, mixed &$reportJson): int
    {
        return $this->withBuf(
            fn () => $this->ffi->lmsrt_store_salvage($path, strlen($path), $dest, strlen($dest), $this->bufPtr),
            $reportJson
        );
    }

    public function purgeExpired(mixed $handle, int $maxRows, mixed &$deleted): int
    {
        $status = $this->ffi->lmsrt_store_purge_expired($handle, $maxRows, $this->u64Ptr);
        if ($status === Status::OK) {
            $deleted = $this->u64->cdata;
        }
        return $status;
    }

    public function advanceIds(mixed $handle, int $past, mixed &$head): int
    {
        $status = $this->ffi->lmsrt_store_advance_ids($handle, $past, $this->idPtr);
        if ($status === Status::OK) {
            $head = $this->id->cdata;
        }
        return $status;
    }

    public function commitCursor(mixed $handle, string $consumer, string $cursor): int
    {
        return $this->ffi->lmsrt_store_commit_cursor(
            $handle,
            $consumer,
            strlen($consumer),
            $cursor,
            strlen($cursor)
        );
    }

    public function loadCursor(mixed $handle, string $consumer, mixed &$cursor): int
    {
        $text = null;
        $status = $this->withBuf(
            fn () => $this->ffi->lmsrt_store_load_cursor(
                $handle,
                $consumer,
                strlen($consumer),
                $this->bufPtr,
                $this->foundPtr
            ),
            $text
        );
        if ($status === Status::OK) {
            $cursor = $this->found->cdata ? $text : null;
        }
        return $status;
    }

    public function tokenIssue(
        string $keyId,
        string $secret,
        int $userId,
        string $channelsJson,
        int $expiresAt,
        string $session,
        mixed &$token
    ): int {
        return $this->withBuf(
            fn () => $this->ffi->lmsrt_token_issue(
                $keyId,
                strlen($keyId),
                $secret,
                strlen($secret),
                $userId,
                $channelsJson,
                strlen($channelsJson),
                $expiresAt,
                $session,
                strlen($session),
                $this->bufPtr
            ),
            $token
        );
    }

    public function lastError(): string
    {
        $total = $this->ffi->lmsrt_last_error_message($this->errBuf, self::ERR_BUF, $this->errLenPtr);
        if ($total < self::ERR_BUF) {
            return FFI::string($this->errBuf, $this->errLen->cdata);
        }
        $big = $this->ffi->new('char[' . ($total + 1) . ']');
        $this->ffi->lmsrt_last_error_message($big, $total + 1, $this->errLenPtr);
        return FFI::string($big, $this->errLen->cdata);
    }

    public function engines(): string
    {
        return (string) $this->ffi->lmsrt_engines();
    }

    // ---- guards ----------------------------------------------------------------------------

    public function guardsOpen(string $path, ?string $configJson, mixed &$handle): int
    {
        $h = $this->ffi->new('lmsrt_guards*');
        $status = $this->ffi->lmsrt_guards_open(
            $path,
            strlen($path),
            $configJson,
            $configJson === null ? 0 : strlen($configJson),
            FFI::addr($h)
        );
        if ($status === Status::OK) {
            $handle = $h;
        }
        return $status;
    }

    public function guardsClose(mixed &$handle): int
    {
        if (!$handle instanceof CData) {
            $handle = null;
            return Status::OK;
        }
        $status = $this->ffi->lmsrt_guards_close(FFI::addr($handle));
        $handle = null;
        return $status;
    }

    public function limiterCheck(mixed $handle, string $action, string $key, int $cost, mixed &$decision): int
    {
        if ($this->decisionPtr === null) {
            $this->allocDecision();
        }
        $status = $this->ffi->lmsrt_limiter_check(
            $handle,
            $action,
            strlen($action),
            $key,
            strlen($key),
            $cost,
            $this->decisionPtr
        );
        if ($status === Status::OK) {
            $decision = $this->decisionOut();
        }
        return $status;
    }

    public function limiterPeek(mixed $handle, string $action, string $key, mixed &$decision): int
    {
        if ($this->decisionPtr === null) {
            $this->allocDecision();
        }
        $status = $this->ffi->lmsrt_limiter_peek(
            $handle,
            $action,
            strlen($action),
            $key,
            strlen($key),
            $this->decisionPtr
        );
        if ($status === Status::OK) {
            $decision = $this->decisionOut();
        }
        return $status;
    }

    public function limiterReset(mixed $handle, string $action, string $key): int
    {
        return $this->ffi->lmsrt_limiter_reset($handle, $action, strlen($action), $key, strlen($key));
    }

    public function breakerCheck(mixed $handle, string $name, mixed &$status): int
    {
        return $this->breakerCall('lmsrt_breaker_check', $handle, $name, $status);
    }

    public function breakerPeek(mixed $handle, string $name, mixed &$status): int
    {
        return $this->breakerCall('lmsrt_breaker_peek', $handle, $name, $status);
    }

    public function breakerRecordSuccess(mixed $handle, string $name, mixed &$status): int
    {
        return $this->breakerCall('lmsrt_breaker_record_success', $handle, $name, $status);
    }

    public function breakerRecordFailure(mixed $handle, string $name, mixed &$status): int
    {
        return $this->breakerCall('lmsrt_breaker_record_failure', $handle, $name, $status);
    }

    public function breakerReset(mixed $handle, string $name, mixed &$status): int
    {
        return $this->breakerCall('lmsrt_breaker_reset', $handle, $name, $status);
    }

    public function breakerForceOpen(mixed $handle, string $name, int $durationMs, mixed &$status): int
    {
        if ($this->breakerPtr === null) {
            $this->allocBreaker();
        }
        $st = $this->ffi->lmsrt_breaker_force_open($handle, $name, strlen($name), $durationMs, $this->breakerPtr);
        if ($st === Status::OK) {
            $status = $this->breakerOut();
        }
        return $st;
    }

    public function slotAcquire(mixed $handle, string $key, mixed &$lease): int
    {
        if ($this->leasePtr === null) {
            $this->allocLease();
        }
        $status = $this->ffi->lmsrt_slot_acquire($handle, $key, strlen($key), $this->leasePtr);
        if ($status === Status::OK) {
            $lease = $this->lease->acquired ? $this->leaseOut($key) : null;
        }
        return $status;
    }

    public function slotRelease(mixed $handle, Lease $lease, mixed &$held): int
    {
        $status = $this->ffi->lmsrt_slot_release($handle, $this->leaseIn($lease), $this->foundPtr);
        if ($status === Status::OK) {
            $held = $this->found->cdata;
        }
        return $status;
    }

    public function slotRenew(mixed $handle, Lease $lease, mixed &$renewed): int
    {
        $status = $this->ffi->lmsrt_slot_renew($handle, $this->leaseIn($lease), $this->foundPtr);
        if ($status === Status::OK) {
            $renewed = $this->found->cdata ? $this->leaseOut($lease->key) : null;
        }
        return $status;
    }

    public function slotIsHeld(mixed $handle, Lease $lease, mixed &$held): int
    {
        $status = $this->ffi->lmsrt_slot_is_held($handle, $this->leaseIn($lease), $this->foundPtr);
        if ($status === Status::OK) {
            $held = $this->found->cdata;
        }
        return $status;
    }

    public function slotCount(mixed $handle, string $key, mixed &$count): int
    {
        if ($this->u32Ptr === null) {
            $this->allocInts();
        }
        $status = $this->ffi->lmsrt_slot_count($handle, $key, strlen($key), $this->u32Ptr);
        if ($status === Status::OK) {
            $count = $this->u32->cdata;
        }
        return $status;
    }

    public function rolloutCohort(
        int $percent,
        string $salt,
        ?string $betaUsersJson,
        string $user,
        mixed &$cohort,
        mixed &$bucket
    ): int {
        if ($this->u32Ptr === null) {
            $this->allocInts();
        }
        $status = $this->ffi->lmsrt_rollout_cohort(
            $percent,
            $salt,
            strlen($salt),
            $betaUsersJson,
            $betaUsersJson === null ? 0 : strlen($betaUsersJson),
            $user,
            strlen($user),
            $this->i32Ptr,
            $this->u32Ptr
        );
        if ($status === Status::OK) {
            $cohort = $this->i32->cdata;
            $bucket = $this->u32->cdata;
        }
        return $status;
    }

    public function metricsIncr(mixed $handle, string $counter, int $n): int
    {
        return $this->ffi->lmsrt_metrics_incr($handle, $counter, strlen($counter), $n);
    }

    public function metricsRecordUs(mixed $handle, string $histogram, int $us): int
    {
        return $this->ffi->lmsrt_metrics_record_us($handle, $histogram, strlen($histogram), $us);
    }

    public function metricsSetGauge(mixed $handle, string $gauge, int $value): int
    {
        return $this->ffi->lmsrt_metrics_set_gauge($handle, $gauge, strlen($gauge), $value);
    }

    public function metricsAddGauge(mixed $handle, string $gauge, int $delta): int
    {
        return $this->ffi->lmsrt_metrics_add_gauge($handle, $gauge, strlen($gauge), $delta);
    }

    public function metricsSnapshot(mixed $handle, mixed &$json): int
    {
        return $this->withBuf(fn () => $this->ffi->lmsrt_metrics_snapshot($handle, $this->bufPtr), $json);
    }

    public function metricsPrometheus(mixed $handle, mixed &$text): int
    {
        return $this->withBuf(fn () => $this->ffi->lmsrt_metrics_prometheus($handle, $this->bufPtr), $text);
    }

    public function metricsHealth(mixed $handle, mixed &$json): int
    {
        return $this->withBuf(fn () => $this->ffi->lmsrt_metrics_health($handle, $this->bufPtr), $json);
    }

    private function allocDecision(): void
    {
        $this->decision = $this->ffi->new('lmsrt_decision');
        $this->decisionPtr = FFI::addr($this->decision);
    }

    private function decisionOut(): Decision
    {
        $d = $this->decision;
        return new Decision(
            $d->allowed,
            $d->remaining,
            $d->retry_after_ms,
            $d->reset_after_ms,
            $d->limit,
            $d->reputation_permille,
            $d->blocked,
            $d->tracked
        );
    }

    private function allocBreaker(): void
    {
        $this->breaker = $this->ffi->new('lmsrt_breaker_status');
        $this->breakerPtr = FFI::addr($this->breaker);
    }

    private function breakerCall(string $function, mixed $handle, string $name, mixed &$status): int
    {
        if ($this->breakerPtr === null) {
            $this->allocBreaker();
        }
        $st = $this->ffi->$function($handle, $name, strlen($name), $this->breakerPtr);
        if ($st === Status::OK) {
            $status = $this->breakerOut();
        }
        return $st;
    }

    private function breakerOut(): BreakerStatus
    {
        $b = $this->breaker;
        return new BreakerStatus(
            BreakerStatus::STATES[$b->state] ?? 'unknown',
            BreakerStatus::MODES[$b->mode] ?? 'unknown',
            $b->wait_ms,
            $b->allowed,
            $b->retry_after_ms,
            $b->probe,
            $b->consecutive_failures,
            $b->window_requests,
            $b->window_failures,
            $b->open_period_ms,
            $b->tracked
        );
    }

    private function allocLease(): void
    {
        $this->lease = $this->ffi->new('lmsrt_lease');
        $this->leasePtr = FFI::addr($this->lease);
    }

    private function leaseIn(Lease $l): CData
    {
        if ($this->leasePtr === null) {
            $this->allocLease();
        }
        $c = $this->lease;
        $c->key_hash = $l->keyHash;
        $c->token = $l->token;
        $c->expires_at_ms = $l->expiresAtMs;
        $c->record = $l->record;
        $c->index = $l->index;
        $c->acquired = true;
        $c->reclaimed = $l->reclaimed;
        return $this->leasePtr;
    }

    private function leaseOut(string $key): Lease
    {
        $c = $this->lease;
        return new Lease($key, $c->record, $c->index, $c->token, $c->expires_at_ms, $c->reclaimed, $c->key_hash);
    }

    private function allocInts(): void
    {
        $this->u32 = $this->ffi->new('uint32_t');
        $this->u32Ptr = FFI::addr($this->u32);
        $this->i32 = $this->ffi->new('int32_t');
        $this->i32Ptr = FFI::addr($this->i32);
    }

    /**
     * Runs a call that fills `$this->buf`, copies the bytes out into `$out` on success, and
     * frees the buffer whatever happens.
     *
     * @param callable(): int $call
     */
    private function withBuf(callable $call, mixed &$out): int
    {
        try {
            $status = $call();
            if ($status === Status::OK) {
                $out = $this->buf->len === 0 && FFI::isNull($this->buf->ptr)
                    ? ''
                    : FFI::string($this->buf->ptr, $this->buf->len);
            }
            return $status;
        } finally {
            $this->ffi->lmsrt_buf_free($this->bufPtr);
        }
    }
}
