<?php

declare(strict_types=1);

namespace LmsRealtime;

use LmsRealtime\Exception\InvalidArgumentException;
use LmsRealtime\Exception\LmsRealtimeException;

/**
 * Canary rollout cohorts: a percentage of users plus a beta list, bucketed by a stable salted
 * hash computed by the library, so PHP, the daemon and Rust agree and a user's cohort never
 * flips while the percentage only grows. No state and no handle (the WordPress options
 * `lms_longpoll_rollout` and `lms_longpoll_beta_users` are the settings).
 *
 * ```php
 * if (Rollout::isEnabled((int) get_option('lms_longpoll_rollout'), 'longpoll', $betaIds, (string) $userId)) { ... }
 * ```
 */
final class Rollout
{
    public const CONTROL = 'control';
    public const ROLLOUT = 'rollout';
    public const BETA = 'beta';
    /** `lmsrt_cohort` values (`LMSRT_COHORT_*`) to cohort strings. */
    public const COHORTS = [0 => self::CONTROL, 1 => self::ROLLOUT, 2 => self::BETA];
    /** Buckets a user can fall in (percentages have two decimals of resolution). */
    public const BUCKETS = 10000;

    private static ?Native $native = null;

    private function __construct()
    {
    }

    /**
     * The user's cohort: 'beta' (on the list), 'rollout' (bucket below `$percent` × 100) or
     * 'control'.
     *
     * @param int $percent 0 to 100
     * @param list<string|int> $betaUsers user ids always in
     * @throws LmsRealtimeException
     */
    public static function cohort(int $percent, string $salt, array $betaUsers, string $userId): string
    {
        [$cohort] = self::call($percent, $salt, $betaUsers, $userId);
        return self::COHORTS[$cohort] ?? throw new \UnexpectedValueException("unknown cohort $cohort from the library");
    }

    /**
     * Whether the new behaviour is on for the user (cohort 'rollout' or 'beta').
     *
     * @param list<string|int> $betaUsers
     * @throws LmsRealtimeException
     */
    public static function isEnabled(int $percent, string $salt, array $betaUsers, string $userId): bool
    {
        return self::cohort($percent, $salt, $betaUsers, $userId) !== self::CONTROL;
    }

    /**
     * The user's fixed bucket for this salt, 0 to 9999.
     *
     * @throws LmsRealtimeException
     */
    public static function bucket(string $salt, string $userId): int
    {
        [, $bucket] = self::call(0, $salt, [], $userId);
        return $bucket;
    }

    /**
     * Uses `$native` instead of the real library (null: back to the library).
     *
     * @internal for tests
     */
    public static function useNative(?Native $native): void
    {
        self::$native = $native;
    }

    /**
     * @param list<string|int> $betaUsers
     * @return array{int, int}
     */
    private static function call(int $percent, string $salt, array $betaUsers, string $userId): array
    {
        if ($percent < 0 || $percent > 100) {
            throw new InvalidArgumentException(
                "rollout percentage $percent: expected 0 to 100",
                Status::INVALID_ARGUMENT
            );
        }
        $ids = [];
        foreach ($betaUsers as $u) {
            if (!is_string($u) && !is_int($u)) {
                throw new InvalidArgumentException(
                    'beta user ids must be strings or integers, got ' . get_debug_type($u),
                    Status::INVALID_ARGUMENT
                );
            }
            $ids[] = (string) $u;
        }
        $beta = $ids === [] ? null : Json::encode($ids, 'beta users');
        $native = self::$native ??= new FfiNative(Library::ffi());
        $cohort = 0;
        $bucket = 0;
        $status = $native->rolloutCohort($percent, $salt, $beta, $userId, $cohort, $bucket);
        if ($status !== Status::OK) {
            throw Status::toException($status, $native->lastError());
        }
        return [$cohort, $bucket];
    }
}
