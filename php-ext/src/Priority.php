<?php

declare(strict_types=1);

namespace LmsRealtime;

/**
 * Delivery priorities: lower is more urgent and is delivered first. Pass `null` to
 * `EventStore::append()` to take the event type's default (message and thread create/delete
 * are critical, reactions high, badges and summaries normal, statistics low).
 */
final class Priority
{
    public const CRITICAL = 1;
    public const HIGH = 2;
    public const NORMAL = 3;
    public const LOW = 4;

    private function __construct()
    {
    }
}
