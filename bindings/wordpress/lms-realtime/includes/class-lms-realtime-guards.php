<?php
/**
 * The plugin's one door to the shared guards.
 *
 * @package LMS_Realtime
 */

defined( 'ABSPATH' ) || exit;

/**
 * Rate limits, connection slots, the circuit breaker, the advertised client mode and the
 * rollout, as the plugin uses them. The guards run on the binding (`LmsRealtime\Guards`: shared
 * files beside the event store) on the store path, and on the documented transient fallback
 * (`LMS_Realtime_Transient_Guards`) on the legacy path; `backends()` says which is in use.
 *
 * Limits (filter `lms_realtime_rate_limits`), the same defaults as the Rust guards:
 * `post` 20 per minute per user; `poll` 180 per minute per user with bursts of 30; `ip` 600 per
 * minute per address with bursts of 100, blocking repeat offenders for 1 minute doubling up to
 * 1 hour (the DDoS guard), applied to requests without a logged-in user. Slots: `lms_longpoll_max_connections` (default 3) concurrent waiting
 * polls per user. Breaker `store` around the event store, when `lms_longpoll_circuit_breaker`
 * is on (filter `lms_realtime_breaker_settings`).
 */
class LMS_Realtime_Guards {

	/** The breaker around the event store. */
	public const STORE_BREAKER = 'store';

	/** Each mode's wait (or polling interval) in seconds, as the Rust `ClientMode`. */
	public const MODE_WAIT = array(
		'long'      => 30,
		'medium'    => 10,
		'short'     => 3,
		'emergency' => 1,
	);

	/**
	 * Backend per guard.
	 *
	 * @var array{rate: LMS_Realtime_Guard_Backend, slots: LMS_Realtime_Guard_Backend, breaker: LMS_Realtime_Guard_Backend}
	 */
	private array $backends;

	/**
	 * The native backend, when the binding has the guards and a store path was given.
	 *
	 * @var LMS_Realtime_Native_Guards|null
	 */
	private ?LMS_Realtime_Native_Guards $native = null;

	/**
	 * Rollout, built on first use.
	 *
	 * @var LMS_Realtime_Rollout|null
	 */
	private ?LMS_Realtime_Rollout $rollout = null;

	/**
	 * Leases this request holds, released at shutdown if the caller did not.
	 *
	 * @var array<int, array{0: string, 1: mixed}>
	 */
	private array $held = array();

	/**
	 * Builds the guards.
	 *
	 * @param string|null                     $db_path  the event store's file (null: no native guards).
	 * @param LMS_Realtime_Guard_Backend|null $fallback the fallback backend (tests pass one with a clock).
	 */
	public function __construct( ?string $db_path = null, ?LMS_Realtime_Guard_Backend $fallback = null ) {
		$limits   = self::limits();
		$breaker  = self::breaker_settings();
		$fallback = $fallback ?? new LMS_Realtime_Transient_Guards( $limits, $breaker );
		$backend  = $fallback;
		if ( null !== $db_path && LMS_Realtime_Native_Guards::available() ) {
			$this->native = new LMS_Realtime_Native_Guards(
				$db_path,
				LMS_Realtime_Native_Guards::config( $limits, $breaker, self::max_connections() ),
				$fallback
			);
			$backend      = $this->native;
		}
		$this->backends = array(
			'rate'    => $backend,
			'slots'   => $backend,
			'breaker' => $backend,
		);
		register_shutdown_function( array( $this, 'release_all' ) );
	}

	/**
	 * The host-wide metrics of the binding (shared with the daemon), or null on the fallback.
	 */
	public function native_metrics(): ?\LmsRealtime\Metrics {
		if ( null === $this->native ) {
			return null;
		}
		try {
			return $this->native->metrics();
		} catch ( \Throwable $e ) {
			return null;
		}
	}

	/**
	 * Which backend each guard uses: `native` or `transient`.
	 *
	 * @return array<string, string>
	 */
	public function backends(): array {
		return array_map( static fn ( LMS_Realtime_Guard_Backend $b ): string => $b->name(), $this->backends );
	}

	/**
	 * The rate limits per action.
	 *
	 * @return array<string, array<string, int>>
	 */
	public static function limits(): array {
		$limit  = static fn ( int $rate, int $burst, int $block = 0 ): array => array(
			'rate'                   => $rate,
			'period_ms'              => 60000,
			'burst'                  => $burst,
			'penalty_permille'       => 100,
			'min_allowance_permille' => 250,
			'recovery_ms'            => 600000,
			'block_ms'               => $block,
			'block_max_ms'           => $block > 0 ? 3600000 : 0,
			'block_forget_ms'        => $block > 0 ? 86400000 : 0,
		);
		$limits = array(
			'post' => $limit( 20, 20 ),
			'poll' => $limit( 180, 30 ),
			'ip'   => $limit( 600, 100, 60000 ),
		);
		/**
		 * Filters the rate limits per action (`post`, `poll`, `ip`): `rate` per `period_ms`,
		 * `burst`, and the adaptive and blocking settings.
		 *
		 * @param array $limits Limits per action.
		 */
		return (array) apply_filters( 'lms_realtime_rate_limits', $limits );
	}

	/**
	 * Breaker settings.
	 *
	 * @return array<string, int>
	 */
	public static function breaker_settings(): array {
		/**
		 * Filters the circuit breaker settings.
		 *
		 * @param array $settings failure_threshold, open_ms, max_open_ms, half_open_probes, probe_timeout_ms.
		 */
		return (array) apply_filters(
			'lms_realtime_breaker_settings',
			array(
				'failure_threshold' => 5,
				'open_ms'           => 5000,
				'max_open_ms'       => 120000,
				'half_open_probes'  => 1,
				'probe_timeout_ms'  => 10000,
			)
		);
	}

	/**
	 * Checks `$action` for a logged-in user (keyed by the user, so many users behind one
	 * school or office address do not share an allowance), or the `ip` limit for a request
	 * without a user (keyed by the address: the DDoS guard).
	 *
	 * @param string $action  `post` or `poll` (ignored without a user).
	 * @param int    $user_id the user, or 0.
	 * @return array{allowed: bool, retry_after_ms: int, remaining: int, blocked: bool}
	 */
	public function check_rate( string $action, int $user_id ): array {
		if ( $user_id > 0 ) {
			return $this->backends['rate']->rate_check( $action, 'user:' . $user_id );
		}
		return $this->backends['rate']->rate_check( 'ip', 'ip:' . self::client_ip() );
	}

	/**
	 * Takes a connection slot for a waiting poll, or null when the user holds them all.
	 *
	 * @param int $user_id  the user.
	 * @param int $lease_ms how long the wait may hold it.
	 * @return mixed|null a lease for `release_slot()`.
	 */
	public function acquire_slot( int $user_id, int $lease_ms ) {
		$key   = 'user:' . $user_id;
		$lease = $this->backends['slots']->slot_acquire( $key, self::max_connections(), $lease_ms );
		if ( null !== $lease ) {
			$this->held[] = array( $key, $lease );
		}
		return $lease;
	}

	/**
	 * Frees a slot from `acquire_slot()`.
	 *
	 * @param int   $user_id the user.
	 * @param mixed $lease   the lease.
	 */
	public function release_slot( int $user_id, $lease ): void {
		$key = 'user:' . $user_id;
		foreach ( $this->held as $i => $held ) {
			if ( $held[0] === $key && $held[1] === $lease ) {
				unset( $this->held[ $i ] );
			}
		}
		$this->backends['slots']->slot_release( $key, $lease );
	}

	/**
	 * Slots the user holds now.
	 *
	 * @param int $user_id the user.
	 */
	public function slots_held( int $user_id ): int {
		return $this->backends['slots']->slot_count( 'user:' . $user_id );
	}

	/**
	 * Releases what this request still holds (a fatal error or an exit mid-poll).
	 */
	public function release_all(): void {
		foreach ( $this->held as $held ) {
			$this->backends['slots']->slot_release( $held[0], $held[1] );
		}
		$this->held = array();
	}

	/**
	 * The most concurrent waiting polls a user may hold (`lms_longpoll_max_connections`).
	 */
	public static function max_connections(): int {
		return max( 1, min( 15, (int) get_option( 'lms_longpoll_max_connections', 3 ) ) );
	}

	/**
	 * Whether the circuit breaker is on (`lms_longpoll_circuit_breaker`).
	 */
	public static function breaker_enabled(): bool {
		return (bool) get_option( 'lms_longpoll_circuit_breaker', true );
	}

	/**
	 * Asks the store breaker whether to call the store. Always allowed when the breaker is off.
	 *
	 * @return array<string, mixed> the breaker status.
	 */
	public function breaker_check(): array {
		if ( ! self::breaker_enabled() ) {
			return self::disabled_breaker();
		}
		return $this->backends['breaker']->breaker_check( self::STORE_BREAKER );
	}

	/**
	 * Reports the outcome of a store call.
	 *
	 * @param bool $success outcome.
	 * @return array<string, mixed> the breaker status.
	 */
	public function breaker_record( bool $success ): array {
		if ( ! self::breaker_enabled() ) {
			return self::disabled_breaker();
		}
		return $this->backends['breaker']->breaker_record( self::STORE_BREAKER, $success );
	}

	/**
	 * The store breaker's status.
	 *
	 * @return array<string, mixed>
	 */
	public function breaker_status(): array {
		if ( ! self::breaker_enabled() ) {
			return self::disabled_breaker();
		}
		return $this->backends['breaker']->breaker_status( self::STORE_BREAKER );
	}

	/**
	 * Closes the store breaker.
	 */
	public function breaker_reset(): void {
		$this->backends['breaker']->breaker_reset( self::STORE_BREAKER );
	}

	/**
	 * The mode advertised to clients: the breaker's (`long` when it is off).
	 */
	public function advertised_mode(): string {
		return (string) $this->breaker_status()['mode'];
	}

	/**
	 * The status of a breaker that is switched off.
	 *
	 * @return array<string, mixed>
	 */
	private static function disabled_breaker(): array {
		return array(
			'name'     => self::STORE_BREAKER,
			'state'    => 'disabled',
			'allowed'  => true,
			'mode'     => 'long',
			'retry_ms' => 0,
			'failures' => 0,
		);
	}

	/**
	 * The rollout from the options.
	 */
	public function rollout(): LMS_Realtime_Rollout {
		if ( null === $this->rollout ) {
			$this->rollout = LMS_Realtime_Rollout::from_options();
		}
		return $this->rollout;
	}

	/**
	 * Whether the user gets the unified client: the master switch `lms_use_unified_longpoll`,
	 * then the rollout (`lms_longpoll_rollout` percent plus `lms_longpoll_beta_users`).
	 *
	 * @param int $user_id the user.
	 */
	public function use_unified( int $user_id ): bool {
		if ( $user_id <= 0 || ! get_option( 'lms_use_unified_longpoll', false ) ) {
			return false;
		}
		/**
		 * Filters whether a user gets the unified long-poll client.
		 *
		 * @param bool $enabled Rollout decision.
		 * @param int  $user_id The user.
		 */
		return (bool) apply_filters( 'lms_realtime_use_unified', $this->rollout()->is_enabled( $user_id ), $user_id );
	}

	/**
	 * The client's address (REMOTE_ADDR only: forwarded headers are not trusted here; a site
	 * behind a proxy sets REMOTE_ADDR in its server configuration or through the filter).
	 */
	public static function client_ip(): string {
		$ip = isset( $_SERVER['REMOTE_ADDR'] ) ? sanitize_text_field( wp_unslash( $_SERVER['REMOTE_ADDR'] ) ) : '';
		/**
		 * Filters the address the `ip` rate limit is keyed by.
		 *
		 * @param string $ip REMOTE_ADDR.
		 */
		return (string) apply_filters( 'lms_realtime_client_ip', $ip );
	}
}
