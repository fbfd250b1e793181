<?php

declare(strict_types=1);

namespace LmsRealtime;

/**
 * The result of `EventStore::fetch()` and `EventStore::wait()`.
 *
 * Pass `$cursor` to the next fetch or wait to receive what comes next: a client that always
 * does receives every matching event exactly once. `$gap` true means an event this client would
 * have received expired or was purged first: resynchronise from the source of truth.
 * `$hasMore` true means more is pending now: fetch again without waiting. `$gap` is also true
 * when an event could not be delivered (its stored data cannot be decoded): it is skipped, and
 * the cursor moves past it all the same.
 *
 * @implements \IteratorAggregate<int, Event>
 */
final class Batch implements \Countable, \IteratorAggregate
{
    /**
     * @param list<Event> $events in delivery order
     * @param int $skipped events left out because their data could not be decoded (logged;
     *        `$gap` is then true; see `EventStore::skippedEvents()`)
     */
    public function __construct(
        public readonly array $events,
        public readonly string $cursor,
        public readonly bool $gap,
        public readonly bool $hasMore,
        public readonly int $skipped = 0,
    ) {
    }

    /**
     * @param array{events: list<array<string, mixed>>, cursor: string, gap: bool, has_more: bool} $b
     */
    public static function fromArray(array $b): self
    {
        $events = [];
        foreach ($b['events'] as $e) {
            /** @phpstan-ignore-next-line argument.type (the library's JSON shape) */
            $events[] = Event::fromArray($e);
        }
        return new self($events, $b['cursor'], $b['gap'], $b['has_more']);
    }

    public function isEmpty(): bool
    {
        return $this->events === [];
    }

    public function count(): int
    {
        return count($this->events);
    }

    /** @return \ArrayIterator<int, Event> */
    public function getIterator(): \ArrayIterator
    {
        return new \ArrayIterator($this->events);
    }

    /**
     * The batch as plain arrays (`events` as `Event::toArray()`).
     *
     * @return array{events: list<array<string, mixed>>, cursor: string, gap: bool, has_more: bool}
     */
    public function toArray(): array
    {
        return [
            'events' => array_map(static fn (Event $e): array => $e->toArray(), $this->events),
            'cursor' => $this->cursor,
            'gap' => $this->gap,
            'has_more' => $this->hasMore,
        ];
    }
}
