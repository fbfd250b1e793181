<?php
/**
 * The guards through the PHP binding (`LmsRealtime\Guards`).
 *
 * @package LMS_Realtime
 */

defined( 'ABSPATH' ) || exit;

/**
 * Adapts the binding's guards to `LMS_Realtime_Guard_Backend`: rate limiter, circuit breakers
 * and connection slots in small files beside the event store (`<db>-lmsrt-limits`,
 * `-lmsrt-breakers`, `-lmsrt-slots`), shared by every PHP worker, one compare-and-swap per
 * decision, no database write. Also gives the host-wide metrics (`-lmsrt-metrics`, which the
 * daemon feeds as well).
 *
 * The handle is opened on first use. If a native call fails (it should not: refusals are
 * answers, not exceptions), that one call goes to the fallback backend, so a guard can never
 * take the chat down.
 */
final class LMS_Realtime_Native_Guards implements LMS_Realtime_Guard_Backend {

	/**
	 * The binding's guards, once opened.
	 *
	 * @var \LmsRealtime\Guards|null
	 */
	private ?\LmsRealtime\Guards $guards = null;

	/**
	 * Facades, kept for repeated calls.
	 *
	 * @var array<string, object>
	 */
	private array $facades = array();

	/**
	 * Settings.
	 *
	 * @param string                     $db_path  the event store's file or Redis URL.
	 * @param array<string, mixed>       $config   `LmsRealtime\Guards::open()` settings (see `config()`).
	 * @param LMS_Realtime_Guard_Backend $fallback used when a native call fails.
	 */
	public function __construct(
		private string $db_path,
		private array $config,
		private LMS_Realtime_Guard_Backend $fallback
	) {
	}

	/**
	 * Whether the binding has the guards.
	 */
	public static function available(): bool {
		return class_exists( 'LmsRealtime\\Guards' ) && method_exists( 'LmsRealtime\\Guards', 'open' );
	}

	/**
	 * The binding's settings from the plugin's: limits per action, breaker, slots.
	 *
	 * @param array<string, array<string, int>> $limits    the plugin's limits (see `LMS_Realtime_Guards::limits()`).
	 * @param array<string, int>                $breaker   breaker settings.
	 * @param int                               $max_slots slots per user.
	 * @return array<string, mixed>
	 */
	public static function config( array $limits, array $breaker, int $max_slots ): array {
		$native = array();
		foreach ( $limits as $action => $l ) {
			$native[ $action ] = array(
				'rate'      => (int) $l['rate'],
				'period_ms' => (int) $l['period_ms'],
				'burst'     => (int) $l['burst'],
				'adaptive'  => (int) $l['penalty_permille'] > 0 ? array(
					'penalty_permille'       => (int) $l['penalty_permille'],
					'min_allowance_permille' => (int) $l['min_allowance_permille'],
					'recovery_ms'            => (int) $l['recovery_ms'],
				) : false,
				'block'     => (int) $l['block_ms'] > 0 ? array(
					'base_ms'   => (int) $l['block_ms'],
					'max_ms'    => (int) $l['block_max_ms'],
					'forget_ms' => (int) $l['block_forget_ms'],
				) : false,
			);
		}
		return array(
			'limits'  => $native,
			'breaker' => array_map( 'intval', $breaker ),
			'slots'   => array(
				'max'      => $max_slots,
				// The longest AJAX wait (25 s) and some margin; released as soon as the poll ends.
				'lease_ms' => 35000,
			),
		);
	}

	/**
	 * Backend name.
	 */
	public function name(): string {
		return 'native';
	}

	/**
	 * The opened guards.
	 */
	private function guards(): \LmsRealtime\Guards {
		if ( null === $this->guards || $this->guards->isClosed() ) {
			// A store in Redis keeps this host's files in the state directory, not beside a URL.
			$url = LMSRT_Unified_Long_Poll::store_is_url( $this->db_path );
			$dir = $url ? LMSRT_Unified_Long_Poll::state_dir() : dirname( $this->db_path );
			if ( ! is_dir( $dir ) ) {
				wp_mkdir_p( $dir );
				LMSRT_Unified_Long_Poll::protect_directory( $dir );
			}
			$this->guards  = \LmsRealtime\Guards::open( $this->db_path, $this->config, LMS_Realtime_Requirements::library_path(), $url ? $dir : null );
			$this->facades = array();
		}
		return $this->guards;
	}

	/**
	 * A facade: `limiter`, `breakers`, `slots` or `metrics`.
	 *
	 * @param string $which facade.
	 */
	private function facade( string $which ): object {
		$guards = $this->guards();
		if ( ! isset( $this->facades[ $which ] ) ) {
			$this->facades[ $which ] = $guards->$which();
		}
		return $this->facades[ $which ];
	}

	/**
	 * The host-wide metrics (shared with the daemon).
	 *
	 * @throws \LmsRealtime\Exception\LmsRealtimeException When the guards cannot be opened.
	 */
	public function metrics(): \LmsRealtime\Metrics {
		return $this->facade( 'metrics' );
	}

	/**
	 * See the interface.
	 *
	 * @param string $action action.
	 * @param string $key    key.
	 * @param int    $cost   cost.
	 */
	public function rate_check( string $action, string $key, int $cost = 1 ): array {
		try {
			$d = $this->facade( 'limiter' )->check( $action, $key, $cost );
			return array(
				'allowed'        => $d->allowed,
				'retry_after_ms' => $d->retryAfterMs,
				'remaining'      => $d->remaining,
				'blocked'        => $d->blocked,
			);
		} catch ( \Throwable $e ) {
			self::log( $e );
			return $this->fallback->rate_check( $action, $key, $cost );
		}
	}

	/**
	 * See the interface (`$max` and `$lease_ms` come from the settings the guards were opened
	 * with).
	 *
	 * @param string $key      key.
	 * @param int    $max      slots.
	 * @param int    $lease_ms lease length.
	 */
	public function slot_acquire( string $key, int $max, int $lease_ms ) {
		try {
			return $this->facade( 'slots' )->tryAcquire( $key );
		} catch ( \Throwable $e ) {
			self::log( $e );
			return $this->fallback->slot_acquire( $key, $max, $lease_ms );
		}
	}

	/**
	 * See the interface.
	 *
	 * @param string $key   key.
	 * @param mixed  $lease lease.
	 */
	public function slot_release( string $key, $lease ): void {
		if ( ! $lease instanceof \LmsRealtime\Lease ) {
			$this->fallback->slot_release( $key, $lease );
			return;
		}
		try {
			$this->facade( 'slots' )->release( $lease );
		} catch ( \Throwable $e ) {
			self::log( $e ); // The lease expires by itself.
		}
	}

	/**
	 * See the interface.
	 *
	 * @param string $key key.
	 */
	public function slot_count( string $key ): int {
		try {
			return $this->facade( 'slots' )->count( $key );
		} catch ( \Throwable $e ) {
			self::log( $e );
			return $this->fallback->slot_count( $key );
		}
	}

	/**
	 * See the interface.
	 *
	 * @param string $name breaker.
	 */
	public function breaker_check( string $name ): array {
		return $this->breaker_call( $name, 'check', fn () => $this->fallback->breaker_check( $name ) );
	}

	/**
	 * See the interface.
	 *
	 * @param string $name    breaker.
	 * @param bool   $success outcome.
	 */
	public function breaker_record( string $name, bool $success ): array {
		return $this->breaker_call( $name, $success ? 'recordSuccess' : 'recordFailure', fn () => $this->fallback->breaker_record( $name, $success ) );
	}

	/**
	 * See the interface.
	 *
	 * @param string $name breaker.
	 */
	public function breaker_status( string $name ): array {
		return $this->breaker_call( $name, 'status', fn () => $this->fallback->breaker_status( $name ) );
	}

	/**
	 * See the interface.
	 *
	 * @param string $name breaker.
	 */
	public function breaker_reset( string $name ): void {
		$this->breaker_call( $name, 'reset', fn () => array() );
	}

	/**
	 * One breaker call in the status shape.
	 *
	 * @param string   $name     breaker.
	 * @param string   $method   `check`, `status`, `recordSuccess`, `recordFailure`, `reset`.
	 * @param callable $fallback on failure.
	 * @return array<string, mixed>
	 */
	private function breaker_call( string $name, string $method, callable $fallback ): array {
		try {
			$s = $this->facade( 'breakers' )->$method( $name );
			return array(
				'name'     => $name,
				'state'    => $s->state,
				'allowed'  => $s->allowed,
				'mode'     => $s->mode,
				'retry_ms' => $s->retryAfterMs,
				'failures' => $s->consecutiveFailures,
			);
		} catch ( \Throwable $e ) {
			self::log( $e );
			return $fallback();
		}
	}

	/**
	 * Logs a native failure (once per request and message).
	 *
	 * @param \Throwable $e the failure.
	 */
	private static function log( \Throwable $e ): void {
		static $seen = array();
		if ( ! isset( $seen[ $e->getMessage() ] ) ) {
			$seen[ $e->getMessage() ] = true;
			// phpcs:ignore WordPress.PHP.DevelopmentFunctions.error_log_error_log
			error_log( 'lms-realtime: native guard call failed, using the fallback: ' . $e->getMessage() );
		}
	}
}
