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
 * one call at a time per process. Every `lmsrt_buf` is freed in a `finally`.
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

    public function purgeExpired(mixed $handle, int $maxRows, mixed &$deleted): int
    {
        $status = $this->ffi->lmsrt_store_purge_expired($handle, $maxRows, $this->u64Ptr);
        if ($status === Status::OK) {
            $deleted = $this->u64->cdata;
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
