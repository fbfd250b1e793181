<?php

declare(strict_types=1);

namespace LmsRealtime;

/**
 * One delivered event. Times are milliseconds since the Unix epoch.
 */
final class Event
{
    /**
     * @param array<array-key, mixed> $data the event's JSON object, decoded
     */
    public function __construct(
        public readonly int $id,
        public readonly string $type,
        public readonly int $priority,
        public readonly int $channelId,
        public readonly ?int $messageId,
        public readonly ?int $threadId,
        public readonly int $userId,
        public readonly array $data,
        public readonly int $timestamp,
        public readonly int $expiresAt,
    ) {
    }

    /**
     * @param array{id: int, event_type: string, priority: int, channel_id: int, message_id: ?int,
     *              thread_id: ?int, user_id: int, data: array<array-key, mixed>, timestamp: int,
     *              expires_at: int} $e
     */
    public static function fromArray(array $e): self
    {
        return new self(
            $e['id'],
            $e['event_type'],
            $e['priority'],
            $e['channel_id'],
            $e['message_id'],
            $e['thread_id'],
            $e['user_id'],
            $e['data'],
            $e['timestamp'],
            $e['expires_at'],
        );
    }

    /**
     * The event as a plain array with snake_case keys (the library's JSON shape).
     *
     * @return array{id: int, type: string, priority: int, channel_id: int, message_id: ?int,
     *               thread_id: ?int, user_id: int, data: array<array-key, mixed>,
     *               timestamp: int, expires_at: int}
     */
    public function toArray(): array
    {
        return [
            'id' => $this->id,
            'type' => $this->type,
            'priority' => $this->priority,
            'channel_id' => $this->channelId,
            'message_id' => $this->messageId,
            'thread_id' => $this->threadId,
            'user_id' => $this->userId,
            'data' => $this->data,
            'timestamp' => $this->timestamp,
            'expires_at' => $this->expiresAt,
        ];
    }
}
