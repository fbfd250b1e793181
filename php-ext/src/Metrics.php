<?php

declare(strict_types=1);

namespace LmsRealtime;

use LmsRealtime\Exception\InvalidArgumentException;
use LmsRealtime\Exception\LmsRealtimeException;

/**
 * Host-wide metrics shared by every process using the database (from `Guards::metrics()`):
 * counters, gauges and latency histograms (p50/p95/p99 over the last minute), a JSON snapshot
 * for the admin page, Prometheus text, and a health verdict.
 *
 * Counters: `appends`, `append_errors`, `fetches`, `fetch_errors`, `waits`, `wait_errors`,
 * `wait_timeouts`, `deliveries` (and `limiter_*`, `breaker_*`, `slots_*`, which the guards count
 * themselves). Gauges: `active_waits`, `connections`. Histograms: `append`, `fetch`, `wait`,
 * `delivery`. Unknown names throw `InvalidArgumentException` listing the known ones.
 */
final class Metrics
{
    /** @internal use `Guards::metrics()` */
    public function __construct(private readonly Guards $guards, private readonly Native $native)
    {
    }

    /**
     * Adds `$n` (≥ 0) to a counter.
     *
     * @throws LmsRealtimeException
     */
    public function increment(string $counter, int $n = 1): void
    {
        if ($n < 0) {
            throw new InvalidArgumentException("a counter only goes up: n = $n", Status::INVALID_ARGUMENT);
        }
        $this->check($this->native->metricsIncr($this->guards->handle(), $counter, $n));
    }

    /**
     * Records one latency of `$us` microseconds (≥ 0) in a histogram.
     *
     * @throws LmsRealtimeException
     */
    public function recordUs(string $histogram, int $us): void
    {
        if ($us < 0) {
            throw new InvalidArgumentException("a latency cannot be negative: $us µs", Status::INVALID_ARGUMENT);
        }
        $this->check($this->native->metricsRecordUs($this->guards->handle(), $histogram, $us));
    }

    /**
     * Sets a gauge.
     *
     * @throws LmsRealtimeException
     */
    public function setGauge(string $gauge, int $value): void
    {
        $this->check($this->native->metricsSetGauge($this->guards->handle(), $gauge, $value));
    }

    /**
     * Adds `$delta` (possibly negative) to a gauge. A process that dies between an increment
     * and its decrement leaves the gauge off; prefer `setGauge()` for long-lived owners.
     *
     * @throws LmsRealtimeException
     */
    public function addGauge(string $gauge, int $delta): void
    {
        $this->check($this->native->metricsAddGauge($this->guards->handle(), $gauge, $delta));
    }

    /**
     * Every figure, host-wide: `taken_at_ms`, `window_ms`, `counters` (name => `total`,
     * `window`), `gauges` (name => value), `histograms` (name => `count`, `sum_us`, `max_us`,
     * `window` => `count`, `p50_us`, `p95_us`, `p99_us`, `max_us`), `error_rate` (float or
     * null) and `health` (see `health()`).
     *
     * @return array<string, mixed>
     * @throws LmsRealtimeException
     */
    public function snapshot(): array
    {
        $json = '';
        $this->check($this->native->metricsSnapshot($this->guards->handle(), $json));
        /** @var array<string, mixed> */
        return Json::decode($json);
    }

    /**
     * Every figure in the Prometheus text exposition format (version 0.0.4).
     *
     * @throws LmsRealtimeException
     */
    public function prometheus(): string
    {
        $text = '';
        $this->check($this->native->metricsPrometheus($this->guards->handle(), $text));
        return $text;
    }

    /**
     * The health verdict: `['status' => 'ok'|'degraded'|'unavailable', 'reasons' => list<string>]`,
     * degraded past the alert lines (append or fetch p99, error rate) over the last minute,
     * unavailable when a store call met a damaged page of the database file in that minute
     * (`corrupt_reads`; see `EventStore::check()` and `EventStore::salvage()`).
     *
     * @return array{status: string, reasons: list<string>}
     * @throws LmsRealtimeException
     */
    public function health(): array
    {
        $json = '';
        $this->check($this->native->metricsHealth($this->guards->handle(), $json));
        /** @var array{status: string, reasons: list<string>} */
        return Json::decode($json);
    }

    /** @throws LmsRealtimeException */
    private function check(int $status): void
    {
        if ($status !== Status::OK) {
            throw Status::toException($status, $this->native->lastError());
        }
    }
}
