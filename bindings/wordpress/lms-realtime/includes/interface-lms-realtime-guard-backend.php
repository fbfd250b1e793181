<?php
/**
 * What a guard backend provides.
 *
 * @package LMS_Realtime
 */

defined( 'ABSPATH' ) || exit;

/**
 * One implementation of the shared guards: the native one (the binding's classes, state in
 * files beside the event store shared by every process) or the transient fallback.
 *
 * Shapes, the same for every backend:
 * - a rate decision: `array{allowed: bool, retry_after_ms: int, remaining: int, blocked: bool}`;
 * - a breaker status: `array{name: string, state: 'closed'|'open'|'half_open', allowed: bool,
 *   mode: 'long'|'medium'|'short'|'emergency', retry_ms: int, failures: int}`.
 */
interface LMS_Realtime_Guard_Backend {

	/**
	 * `native` or `transient`.
	 */
	public function name(): string;

	/**
	 * Checks and, when allowed, consumes `$cost` of `$action`'s allowance for `$key`.
	 *
	 * @param string $action `post`, `poll`, `ip`, ...
	 * @param string $key    the user or IP.
	 * @param int    $cost   requests this counts as.
	 * @return array{allowed: bool, retry_after_ms: int, remaining: int, blocked: bool}
	 */
	public function rate_check( string $action, string $key, int $cost = 1 ): array;

	/**
	 * Takes one of `$max` concurrent slots of `$key` for `$lease_ms`, or returns null when all
	 * are held. The lease frees itself when it expires.
	 *
	 * @param string $key      the user.
	 * @param int    $max      slots per key.
	 * @param int    $lease_ms lease length.
	 * @return mixed|null a lease for `slot_release()`.
	 */
	public function slot_acquire( string $key, int $max, int $lease_ms );

	/**
	 * Frees a lease from `slot_acquire()`.
	 *
	 * @param string $key   the user.
	 * @param mixed  $lease the lease.
	 */
	public function slot_release( string $key, $lease ): void;

	/**
	 * Leases held now for `$key`.
	 *
	 * @param string $key the user.
	 */
	public function slot_count( string $key ): int;

	/**
	 * Asks the breaker whether a call may go ahead (a half-open breaker admits a probe).
	 *
	 * @param string $name breaker name.
	 * @return array<string, mixed> a breaker status.
	 */
	public function breaker_check( string $name ): array;

	/**
	 * Reports a call's outcome.
	 *
	 * @param string $name    breaker name.
	 * @param bool   $success outcome.
	 * @return array<string, mixed> a breaker status.
	 */
	public function breaker_record( string $name, bool $success ): array;

	/**
	 * The breaker's status, changing nothing.
	 *
	 * @param string $name breaker name.
	 * @return array<string, mixed> a breaker status.
	 */
	public function breaker_status( string $name ): array;

	/**
	 * Closes the breaker and forgets its failures.
	 *
	 * @param string $name breaker name.
	 */
	public function breaker_reset( string $name ): void;
}
