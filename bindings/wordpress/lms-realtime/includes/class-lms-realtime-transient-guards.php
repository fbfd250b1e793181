<?php
/**
 * The guards over WordPress transients, for when the binding has no guard classes.
 *
 * @package LMS_Realtime
 */

defined( 'ABSPATH' ) || exit;

/**
 * Fallback guards kept in WordPress transients (the options table, or the object cache when a
 * persistent one is installed), with the same rules as the Rust guards:
 *
 * - **Rate limits**: GCRA per `(action, key)` with an adaptive allowance. A refusal costs the
 *   key `penalty` ‰ of reputation, which recovers linearly over `recovery_ms`; at reputation
 *   `r` a request costs `T / f` with `f = min + (1000 − min)·r/1000` ‰, so a key that keeps
 *   hitting the limit sees its rate and burst shrink to `min` ‰ of the configured ones. With
 *   `block_ms`, a key refused at zero reputation is blocked outright (the DDoS guard), doubling
 *   up to `block_max_ms`.
 * - **Connection slots**: a list of leases per user, each expiring by itself after `lease_ms`.
 * - **Circuit breakers**: closed → open after `failure_threshold` consecutive failures; open
 *   for `open_ms`, doubling on each re-open up to `max_open_ms`; then half-open, admitting one
 *   probe at a time (a probe whose outcome never comes frees its place after
 *   `probe_timeout_ms`); a success closes it. Modes: `long` when closed and healthy, `medium`
 *   when closed with at least half the threshold of consecutive failures, `short` when
 *   half-open, `emergency` when open.
 *
 * Each read-modify-write runs under a MySQL named lock (`GET_LOCK`, waiting at most a second),
 * so PHP-FPM workers agree; if the lock cannot be taken the update goes ahead unlocked (a
 * guard must not become an outage). Costs: a few queries per guarded request, and a write for
 * every rate check and slot change (a breaker writes only when its state changes). The native
 * guards need none of this; this backend is what runs until the binding exposes them.
 */
final class LMS_Realtime_Transient_Guards implements LMS_Realtime_Guard_Backend {

	/**
	 * Rate limits per action; see `LMS_Realtime_Guards::default_limits()`.
	 *
	 * @var array<string, array<string, int>>
	 */
	private array $limits;

	/**
	 * Breaker settings.
	 *
	 * @var array<string, int>
	 */
	private array $breaker;

	/**
	 * The clock, ms since the epoch.
	 *
	 * @var callable(): int
	 */
	private $now;

	/**
	 * Settings.
	 *
	 * @param array<string, array<string, int>> $limits  per action.
	 * @param array<string, int>                $breaker breaker settings.
	 * @param callable|null                     $now     clock in ms (tests).
	 */
	public function __construct( array $limits, array $breaker, ?callable $now = null ) {
		$this->limits  = $limits;
		$this->breaker = $breaker;
		$this->now     = $now ?? static fn (): int => (int) floor( microtime( true ) * 1000 );
	}

	/**
	 * Backend name.
	 */
	public function name(): string {
		return 'transient';
	}

	/**
	 * See the interface.
	 *
	 * @param string $action action.
	 * @param string $key    key.
	 * @param int    $cost   cost.
	 */
	public function rate_check( string $action, string $key, int $cost = 1 ): array {
		$limit = $this->limits[ $action ] ?? null;
		if ( null === $limit ) {
			return array(
				'allowed'        => true,
				'retry_after_ms' => 0,
				'remaining'      => PHP_INT_MAX,
				'blocked'        => false,
			);
		}
		$name = 'lmsrt_rl_' . md5( $action . "\xff" . $key );
		return $this->locked(
			$name,
			function () use ( $name, $limit, $cost ): array {
				$now   = ( $this->now )();
				$state = get_transient( $name );
				$state = is_array( $state ) ? $state : array();
				$tat   = (float) ( $state['tat'] ?? 0 );
				$pen   = (int) ( $state['pen'] ?? 0 );
				$stamp = (int) ( $state['ts'] ?? $now );
				$until = (int) ( $state['blocked_until'] ?? 0 );
				$strk  = (int) ( $state['strikes'] ?? 0 );
				$last  = (int) ( $state['last_block'] ?? 0 );

				if ( $until > $now ) {
					return array(
						'allowed'        => false,
						'retry_after_ms' => $until - $now,
						'remaining'      => 0,
						'blocked'        => true,
					);
				}
				// Reputation recovers linearly: the penalty decays to 0 over recovery_ms.
				$recovery = max( 1, (int) $limit['recovery_ms'] );
				$pen      = max( 0, $pen - intdiv( max( 0, $now - $stamp ) * 1000, $recovery ) );
				$min      = max( 1, min( 1000, (int) $limit['min_allowance_permille'] ) );
				$factor   = $min + intdiv( ( 1000 - $min ) * ( 1000 - $pen ), 1000 );
				$interval = $limit['period_ms'] / max( 1, $limit['rate'] );
				$step     = $interval * 1000 / $factor;
				$capacity = $limit['burst'] * $interval;
				$base     = max( $tat, (float) $now );
				$next     = $base + $cost * $step;
				$allowed  = $next - $now <= $capacity + 1e-6;

				if ( $allowed ) {
					$tat = $next;
				} else {
					if ( $limit['block_ms'] > 0 && $pen >= 1000 ) {
						$strk  = ( $now - $last > $limit['block_forget_ms'] ) ? 1 : $strk + 1;
						$block = (int) min( $limit['block_max_ms'], $limit['block_ms'] * ( 2 ** min( 20, $strk - 1 ) ) );
						$until = $now + $block;
						$last  = $now;
					}
					$pen = min( 1000, $pen + (int) $limit['penalty_permille'] );
				}
				$state = array(
					'tat'           => $tat,
					'pen'           => $pen,
					'ts'            => $now,
					'blocked_until' => $until,
					'strikes'       => $strk,
					'last_block'    => $last,
				);
				$keep  = (int) ceil( ( max( $tat - $now, 0 ) + $recovery + max( 0, $until - $now ) ) / 1000 ) + 1;
				set_transient( $name, $state, $keep );

				$remaining = (int) floor( max( 0.0, $capacity - ( max( $tat, (float) $now ) - $now ) ) / $step );
				if ( $allowed ) {
					return array(
						'allowed'        => true,
						'retry_after_ms' => 0,
						'remaining'      => $remaining,
						'blocked'        => false,
					);
				}
				$retry = $until > $now ? $until - $now : (int) ceil( $next - $now - $capacity );
				return array(
					'allowed'        => false,
					'retry_after_ms' => max( 1, $retry ),
					'remaining'      => 0,
					'blocked'        => $until > $now,
				);
			}
		);
	}

	/**
	 * See the interface.
	 *
	 * @param string $key      key.
	 * @param int    $max      slots.
	 * @param int    $lease_ms lease length.
	 */
	public function slot_acquire( string $key, int $max, int $lease_ms ) {
		$name = 'lmsrt_slots_' . md5( $key );
		return $this->locked(
			$name,
			function () use ( $name, $max, $lease_ms ) {
				$now    = ( $this->now )();
				$leases = $this->live_leases( $name, $now );
				if ( count( $leases ) >= $max ) {
					return null;
				}
				$lease            = bin2hex( random_bytes( 8 ) );
				$leases[ $lease ] = $now + $lease_ms;
				set_transient( $name, $leases, (int) ceil( $lease_ms / 1000 ) + 1 );
				return $lease;
			}
		);
	}

	/**
	 * See the interface.
	 *
	 * @param string $key   key.
	 * @param mixed  $lease lease.
	 */
	public function slot_release( string $key, $lease ): void {
		$name = 'lmsrt_slots_' . md5( $key );
		$this->locked(
			$name,
			function () use ( $name, $lease ): void {
				$now    = ( $this->now )();
				$leases = $this->live_leases( $name, $now );
				if ( ! isset( $leases[ (string) $lease ] ) ) {
					return;
				}
				unset( $leases[ (string) $lease ] );
				if ( array() === $leases ) {
					delete_transient( $name );
				} else {
					set_transient( $name, $leases, (int) ceil( ( max( $leases ) - $now ) / 1000 ) + 1 );
				}
			}
		);
	}

	/**
	 * See the interface.
	 *
	 * @param string $key key.
	 */
	public function slot_count( string $key ): int {
		return count( $this->live_leases( 'lmsrt_slots_' . md5( $key ), ( $this->now )() ) );
	}

	/**
	 * Unexpired leases.
	 *
	 * @param string $name transient.
	 * @param int    $now  ms.
	 * @return array<string, int>
	 */
	private function live_leases( string $name, int $now ): array {
		$leases = get_transient( $name );
		if ( ! is_array( $leases ) ) {
			return array();
		}
		return array_filter( $leases, static fn ( $expires ): bool => (int) $expires > $now );
	}

	/**
	 * See the interface.
	 *
	 * @param string $name breaker.
	 */
	public function breaker_check( string $name ): array {
		$key = $this->breaker_key( $name );
		return $this->locked(
			$key,
			function () use ( $key, $name ): array {
				$now = ( $this->now )();
				$s   = $this->breaker_state( $key, $now );
				if ( 'half_open' === $s['state'] ) {
					if ( $s['probes'] < $this->breaker['half_open_probes'] ) {
						++$s['probes'];
						$s['probe_deadline'] = $now + $this->breaker['probe_timeout_ms'];
						$this->save_breaker( $key, $s );
						return $this->breaker_view( $name, $s, $now, true );
					}
					return $this->breaker_view( $name, $s, $now, false );
				}
				return $this->breaker_view( $name, $s, $now, 'closed' === $s['state'] );
			}
		);
	}

	/**
	 * See the interface.
	 *
	 * @param string $name    breaker.
	 * @param bool   $success outcome.
	 */
	public function breaker_record( string $name, bool $success ): array {
		$key = $this->breaker_key( $name );
		$now = ( $this->now )();
		// Fast path: a success on a healthy closed breaker changes nothing and writes nothing.
		$peek = $this->breaker_state( $key, $now );
		if ( $success && 'closed' === $peek['state'] && 0 === $peek['failures'] ) {
			return $this->breaker_view( $name, $peek, $now, true );
		}
		return $this->locked(
			$key,
			function () use ( $key, $name, $success ): array {
				$now = ( $this->now )();
				$s   = $this->breaker_state( $key, $now );
				if ( 'open' === $s['state'] ) {
					return $this->breaker_view( $name, $s, $now, false );
				}
				if ( $success ) {
					$s = $this->closed_state();
				} elseif ( 'half_open' === $s['state'] ) {
					$s = $this->opened( $s, $now );
				} else {
					++$s['failures'];
					if ( $s['failures'] >= $this->breaker['failure_threshold'] ) {
						$s = $this->opened( $s, $now );
					}
				}
				$this->save_breaker( $key, $s );
				return $this->breaker_view( $name, $s, $now, 'open' !== $s['state'] );
			}
		);
	}

	/**
	 * See the interface.
	 *
	 * @param string $name breaker.
	 */
	public function breaker_status( string $name ): array {
		$now = ( $this->now )();
		$s   = $this->breaker_state( $this->breaker_key( $name ), $now );
		return $this->breaker_view( $name, $s, $now, 'open' !== $s['state'] );
	}

	/**
	 * See the interface.
	 *
	 * @param string $name breaker.
	 */
	public function breaker_reset( string $name ): void {
		delete_transient( $this->breaker_key( $name ) );
	}

	/**
	 * Transient name of a breaker.
	 *
	 * @param string $name breaker.
	 */
	private function breaker_key( string $name ): string {
		return 'lmsrt_brk_' . md5( $name );
	}

	/**
	 * A closed, healthy breaker.
	 *
	 * @return array<string, mixed>
	 */
	private function closed_state(): array {
		return array(
			'state'          => 'closed',
			'failures'       => 0,
			'exp'            => 0,
			'until'          => 0,
			'probes'         => 0,
			'probe_deadline' => 0,
		);
	}

	/**
	 * The state at `$now`: an open breaker whose period is over is half-open; probes whose
	 * deadline passed free their places.
	 *
	 * @param string $key transient.
	 * @param int    $now ms.
	 * @return array<string, mixed>
	 */
	private function breaker_state( string $key, int $now ): array {
		$s = get_transient( $key );
		$s = is_array( $s ) ? array_merge( $this->closed_state(), $s ) : $this->closed_state();
		if ( 'open' === $s['state'] && $s['until'] <= $now ) {
			$s['state']  = 'half_open';
			$s['probes'] = 0;
		}
		if ( 'half_open' === $s['state'] && $s['probes'] > 0 && $s['probe_deadline'] <= $now ) {
			$s['probes'] = 0;
		}
		return $s;
	}

	/**
	 * Opens the breaker, doubling the open period from the last time.
	 *
	 * @param array<string, mixed> $s   state.
	 * @param int                  $now ms.
	 * @return array<string, mixed>
	 */
	private function opened( array $s, int $now ): array {
		$exp    = 'half_open' === $s['state'] ? min( 31, (int) $s['exp'] + 1 ) : 0;
		$period = (int) min( $this->breaker['max_open_ms'], $this->breaker['open_ms'] * ( 2 ** $exp ) );
		return array(
			'state'          => 'open',
			'failures'       => 0,
			'exp'            => $exp,
			'until'          => $now + $period,
			'probes'         => 0,
			'probe_deadline' => 0,
		);
	}

	/**
	 * Stores a breaker state (an idle healthy breaker is deleted).
	 *
	 * @param string               $key transient.
	 * @param array<string, mixed> $s   state.
	 */
	private function save_breaker( string $key, array $s ): void {
		if ( 'closed' === $s['state'] && 0 === $s['failures'] ) {
			delete_transient( $key );
			return;
		}
		set_transient( $key, $s, DAY_IN_SECONDS );
	}

	/**
	 * The status shape.
	 *
	 * @param string               $name    breaker.
	 * @param array<string, mixed> $s       state.
	 * @param int                  $now     ms.
	 * @param bool                 $allowed whether the call may go ahead.
	 * @return array<string, mixed>
	 */
	private function breaker_view( string $name, array $s, int $now, bool $allowed ): array {
		switch ( $s['state'] ) {
			case 'open':
				$mode  = 'emergency';
				$retry = max( 0, (int) $s['until'] - $now );
				break;
			case 'half_open':
				$mode  = 'short';
				$retry = 0;
				break;
			default:
				$mode  = $s['failures'] * 2 >= $this->breaker['failure_threshold'] ? 'medium' : 'long';
				$retry = 0;
		}
		return array(
			'name'     => $name,
			'state'    => $s['state'],
			'allowed'  => $allowed,
			'mode'     => $mode,
			'retry_ms' => $retry,
			'failures' => (int) $s['failures'],
		);
	}

	/**
	 * Runs `$fn` under a MySQL named lock for `$name`.
	 *
	 * @param string   $name what the lock protects.
	 * @param callable $fn   the read-modify-write.
	 * @return mixed what `$fn` returns.
	 */
	private function locked( string $name, callable $fn ) {
		global $wpdb;
		$lock = 'lmsrt:' . md5( DB_NAME . '|' . $wpdb->prefix . '|' . $name );
		// phpcs:ignore WordPress.DB.DirectDatabaseQuery -- a named lock, nothing to cache.
		$got = (int) $wpdb->get_var( $wpdb->prepare( 'SELECT GET_LOCK(%s, %d)', $lock, 1 ) );
		try {
			return $fn();
		} finally {
			if ( 1 === $got ) {
				// phpcs:ignore WordPress.DB.DirectDatabaseQuery
				$wpdb->query( $wpdb->prepare( 'SELECT RELEASE_LOCK(%s)', $lock ) );
			}
		}
	}
}
