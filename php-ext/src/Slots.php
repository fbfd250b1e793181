<?php

declare(strict_types=1);

namespace LmsRealtime;

use LmsRealtime\Exception\LmsRealtimeException;
use LmsRealtime\Exception\SlotsExhaustedException;

/**
 * Connection slots shared by every process on the host (from `Guards::slots()`): at most
 * `max` (default 3) concurrent long-polls per key, as leases that free themselves when they
 * expire or their holder process dies.
 */
final class Slots
{
    /** @internal use `Guards::slots()` */
    public function __construct(private readonly Guards $guards, private readonly Native $native)
    {
    }

    /**
     * Takes one of `$key`'s slots for this process.
     *
     * @throws SlotsExhaustedException every slot of the key is held (with the `refuse`
     *         policy; `evict_oldest` takes over the oldest lease instead), or the shared table
     *         has no room
     * @throws LmsRealtimeException
     */
    public function acquire(string $key): Lease
    {
        return $this->tryAcquire($key) ?? throw new SlotsExhaustedException(
            sprintf(
                'all connection slots of %s are taken',
                json_encode($key, JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE)
            ),
            Status::SLOTS_EXHAUSTED
        );
    }

    /**
     * Like `acquire()`, but null when every slot is taken.
     *
     * @throws LmsRealtimeException
     */
    public function tryAcquire(string $key): ?Lease
    {
        $lease = null;
        $status = $this->native->slotAcquire($this->guards->handle(), $key, $lease);
        if ($status !== Status::OK) {
            throw Status::toException($status, $this->native->lastError());
        }
        return $lease;
    }

    /**
     * Gives the slot back. Returns whether the lease was still held (false when it had expired
     * and been reused, was evicted or was released before).
     *
     * @throws LmsRealtimeException
     */
    public function release(Lease $lease): bool
    {
        $held = false;
        $status = $this->native->slotRelease($this->guards->handle(), $lease, $held);
        if ($status !== Status::OK) {
            throw Status::toException($status, $this->native->lastError());
        }
        return $held;
    }

    /**
     * Extends a held lease by the lease length from now and returns the renewed lease (use it
     * from now on: the old one no longer names the slot), or null when the lease was lost
     * (expired and reused, evicted, released): end the long-poll it covered.
     *
     * @throws LmsRealtimeException
     */
    public function renew(Lease $lease): ?Lease
    {
        $renewed = null;
        $status = $this->native->slotRenew($this->guards->handle(), $lease, $renewed);
        if ($status !== Status::OK) {
            throw Status::toException($status, $this->native->lastError());
        }
        return $renewed;
    }

    /**
     * Whether the lease is still held (not released, expired or evicted).
     *
     * @throws LmsRealtimeException
     */
    public function isHeld(Lease $lease): bool
    {
        $held = false;
        $status = $this->native->slotIsHeld($this->guards->handle(), $lease, $held);
        if ($status !== Status::OK) {
            throw Status::toException($status, $this->native->lastError());
        }
        return $held;
    }

    /**
     * How many of `$key`'s slots are held now, by any process.
     *
     * @throws LmsRealtimeException
     */
    public function count(string $key): int
    {
        $count = 0;
        $status = $this->native->slotCount($this->guards->handle(), $key, $count);
        if ($status !== Status::OK) {
            throw Status::toException($status, $this->native->lastError());
        }
        return $count;
    }
}
