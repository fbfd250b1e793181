<?php

declare(strict_types=1);

namespace LmsRealtime\Tests\Unit;

use LmsRealtime\Lease;
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
    /** What `engines()` answers (`lmsrt_engines`). */
    public string $engines = 'sqlite redis';

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

    public function advanceIds(mixed $handle, int $past, mixed &$head): int
    {
        return $this->next('advanceIds', [$handle, $past], $head);
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

    public function storeCheck(string $path, mixed &$reportJson): int
    {
        return $this->next('storeCheck', [$path], $reportJson);
    }

    public function storeSalvage(string $path, string $dest, mixed &$reportJson): int
    {
        return $this->next('storeSalvage', [$path, $dest], $reportJson);
    }

    public function lastError(): string
    {
        return $this->error;
    }

    public function engines(): string
    {
        return $this->engines;
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

    public function guardsOpen(string $path, ?string $configJson, mixed &$handle): int
    {
        $st = $this->next('guardsOpen', [$path, $configJson], $handle);
        if ($st === Status::OK && $handle === null) {
            $handle = 'guards';
        }
        return $st;
    }

    public function guardsClose(mixed &$handle): int
    {
        $ignored = null;
        $st = $this->next('guardsClose', [$handle], $ignored);
        $handle = null;
        return $st;
    }

    public function limiterCheck(mixed $handle, string $action, string $key, int $cost, mixed &$decision): int
    {
        return $this->next('limiterCheck', [$handle, $action, $key, $cost], $decision);
    }

    public function limiterPeek(mixed $handle, string $action, string $key, mixed &$decision): int
    {
        return $this->next('limiterPeek', [$handle, $action, $key], $decision);
    }

    public function limiterReset(mixed $handle, string $action, string $key): int
    {
        $ignored = null;
        return $this->next('limiterReset', [$handle, $action, $key], $ignored);
    }

    public function breakerCheck(mixed $handle, string $name, mixed &$status): int
    {
        return $this->next('breakerCheck', [$handle, $name], $status);
    }

    public function breakerPeek(mixed $handle, string $name, mixed &$status): int
    {
        return $this->next('breakerPeek', [$handle, $name], $status);
    }

    public function breakerRecordSuccess(mixed $handle, string $name, mixed &$status): int
    {
        return $this->next('breakerRecordSuccess', [$handle, $name], $status);
    }

    public function breakerRecordFailure(mixed $handle, string $name, mixed &$status): int
    {
        return $this->next('breakerRecordFailure', [$handle, $name], $status);
    }

    public function breakerReset(mixed $handle, string $name, mixed &$status): int
    {
        return $this->next('breakerReset', [$handle, $name], $status);
    }

    public function breakerForceOpen(mixed $handle, string $name, int $durationMs, mixed &$status): int
    {
        return $this->next('breakerForceOpen', [$handle, $name, $durationMs], $status);
    }

    public function slotAcquire(mixed $handle, string $key, mixed &$lease): int
    {
        return $this->next('slotAcquire', [$handle, $key], $lease);
    }

    public function slotRelease(mixed $handle, Lease $lease, mixed &$held): int
    {
        return $this->next('slotRelease', [$handle, $lease], $held);
    }

    public function slotRenew(mixed $handle, Lease $lease, mixed &$renewed): int
    {
        return $this->next('slotRenew', [$handle, $lease], $renewed);
    }

    public function slotIsHeld(mixed $handle, Lease $lease, mixed &$held): int
    {
        return $this->next('slotIsHeld', [$handle, $lease], $held);
    }

    public function slotCount(mixed $handle, string $key, mixed &$count): int
    {
        return $this->next('slotCount', [$handle, $key], $count);
    }

    /** The queued output is `[cohort, bucket]`. */
    public function rolloutCohort(
        int $percent,
        string $salt,
        ?string $betaUsersJson,
        string $user,
        mixed &$cohort,
        mixed &$bucket
    ): int {
        $out = null;
        $st = $this->next('rolloutCohort', [$percent, $salt, $betaUsersJson, $user], $out);
        if ($st === Status::OK) {
            [$cohort, $bucket] = $out ?? [0, 0];
        }
        return $st;
    }

    public function metricsIncr(mixed $handle, string $counter, int $n): int
    {
        $ignored = null;
        return $this->next('metricsIncr', [$handle, $counter, $n], $ignored);
    }

    public function metricsRecordUs(mixed $handle, string $histogram, int $us): int
    {
        $ignored = null;
        return $this->next('metricsRecordUs', [$handle, $histogram, $us], $ignored);
    }

    public function metricsSetGauge(mixed $handle, string $gauge, int $value): int
    {
        $ignored = null;
        return $this->next('metricsSetGauge', [$handle, $gauge, $value], $ignored);
    }

    public function metricsAddGauge(mixed $handle, string $gauge, int $delta): int
    {
        $ignored = null;
        return $this->next('metricsAddGauge', [$handle, $gauge, $delta], $ignored);
    }

    public function metricsSnapshot(mixed $handle, mixed &$json): int
    {
        return $this->next('metricsSnapshot', [$handle], $json);
    }

    public function metricsPrometheus(mixed $handle, mixed &$text): int
    {
        return $this->next('metricsPrometheus', [$handle], $text);
    }

    public function metricsHealth(mixed $handle, mixed &$json): int
    {
        return $this->next('metricsHealth', [$handle], $json);
    }
}
