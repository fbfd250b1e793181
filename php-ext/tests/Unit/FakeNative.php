<?php

declare(strict_types=1);

namespace LmsRealtime\Tests\Unit;

use LmsRealtime\Native;
use LmsRealtime\Status;

/**
 * A scripted `Native`: records every call and answers with the queued status and output.
 */
final class FakeNative implements Native
{
    /** @var list<array{0: string, 1: array<int, mixed>}> */
    public array $calls = [];
    /** @var list<array{0: int, 1: mixed}> */
    public array $answers = [];
    public string $error = '';

    /** Queues the next answer: a status and the value written to the out-parameter. */
    public function answer(int $status, mixed $out = null, string $error = ''): self
    {
        $this->answers[] = [$status, $out];
        if ($error !== '') {
            $this->error = $error;
        }
        return $this;
    }

    /** @return array{0: string, 1: array<int, mixed>} */
    public function lastCall(): array
    {
        return $this->calls[count($this->calls) - 1];
    }

    private function next(string $method, array $args, mixed &$out): int
    {
        $this->calls[] = [$method, $args];
        [$status, $value] = array_shift($this->answers) ?? [Status::OK, null];
        if ($status === Status::OK) {
            $out = $value;
        }
        return $status;
    }

    public function open(string $path, ?string $optionsJson, mixed &$handle): int
    {
        $st = $this->next('open', [$path, $optionsJson], $handle);
        if ($st === Status::OK && $handle === null) {
            $handle = 'handle';
        }
        return $st;
    }

    public function close(mixed &$handle): int
    {
        $ignored = null;
        $st = $this->next('close', [$handle], $ignored);
        $handle = null;
        return $st;
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
        return $this->next(
            'append',
            [$handle, $type, $priority, $channelId, $messageId, $threadId, $userId, $dataJson, $ttlMs, $idempotencyKey],
            $id
        );
    }

    public function appendBatch(mixed $handle, string $eventsJson, mixed &$idsJson): int
    {
        return $this->next('appendBatch', [$handle, $eventsJson], $idsJson);
    }

    public function fetch(mixed $handle, string $requestJson, mixed &$batchJson): int
    {
        return $this->next('fetch', [$handle, $requestJson], $batchJson);
    }

    public function wait(mixed $handle, string $requestJson, int $timeoutMs, mixed &$batchJson): int
    {
        return $this->next('wait', [$handle, $requestJson, $timeoutMs], $batchJson);
    }

    public function headCursor(mixed $handle, mixed &$cursor): int
    {
        return $this->next('headCursor', [$handle], $cursor);
    }

    public function purgeExpired(mixed $handle, int $maxRows, mixed &$deleted): int
    {
        return $this->next('purgeExpired', [$handle, $maxRows], $deleted);
    }

    public function commitCursor(mixed $handle, string $consumer, string $cursor): int
    {
        $ignored = null;
        return $this->next('commitCursor', [$handle, $consumer, $cursor], $ignored);
    }

    public function loadCursor(mixed $handle, string $consumer, mixed &$cursor): int
    {
        return $this->next('loadCursor', [$handle, $consumer], $cursor);
    }

    public function lastError(): string
    {
        return $this->error;
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
        return $this->next('tokenIssue', [$keyId, $secret, $userId, $channelsJson, $expiresAt, $session], $token);
    }
}
