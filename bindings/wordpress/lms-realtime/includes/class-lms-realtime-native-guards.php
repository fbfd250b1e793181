<?php
/**
 * The guards through the PHP binding's guard classes, when it has them.
 *
 * @package LMS_Realtime
 */

defined( 'ABSPATH' ) || exit;

/**
 * Adapts the binding's guard classes (state in files beside the event store, shared by every
 * process on the host, one compare-and-swap per decision) to `LMS_Realtime_Guard_Backend`.
 *
 * The binding does not expose the guards yet. This class is written against the API the
 * plugin expects, and `LMS_Realtime_Guards` only uses it for a guard whose class and methods
 * all exist (`supports()`); any other failure of a native call falls back to the transient
 * backend for that call, so a mismatch can never take the chat down. Expected API:
 *
 *     RateLimiter::open(string $dbPath, array $config = []): RateLimiter
 *         ->check(string $action, string $key, int $cost = 1): array|object
 *            {allowed, retry_after_ms, remaining, blocked}
 *     Breakers::open(string $dbPath, array $config = []): Breakers
 *         ->check(string $name), ->recordSuccess(string $name), ->recordFailure(string $name),
 *         ->status(string $name), ->reset(string $name): array|object {state, mode, retry_ms, ...}
 *     Slots::open(string $dbPath, array $config = []): Slots     (max_per_key, lease_ms)
 *         ->acquire(string $key): lease (throws Exception\SlotsExhaustedException when full)
 *         ->release(lease): bool, ->count(string $key): int
 */
final class LMS_Realtime_Native_Guards implements LMS_Realtime_Guard_Backend {

	/**
	 * Methods each guard class must have for the plugin to use it.
	 */
	public const REQUIRED = array(
		'LmsRealtime\\RateLimiter' => array( 'open', 'check' ),
		'LmsRealtime\\Breakers'    => array( 'open', 'check', 'recordSuccess', 'recordFailure', 'status', 'reset' ),
		'LmsRealtime\\Slots'       => array( 'open', 'acquire', 'release', 'count' ),
	);

	/**
	 * Opened guard objects by class.
	 *
	 * @var array<string, object>
	 */
	private array $open = array();

	/**
	 * Settings.
	 *
	 * @param string                            $db_path  the event store's file.
	 * @param array<string, array<string, int>> $limits   rate limits per action.
	 * @param array<string, int>                $breaker  breaker settings.
	 * @param LMS_Realtime_Guard_Backend        $fallback used when a native call fails.
	 */
	public function __construct(
		private string $db_path,
		private array $limits,
		private array $breaker,
		private LMS_Realtime_Guard_Backend $fallback
	) {
	}

	/**
	 * Whether the binding has the class (and methods) of a guard.
	 *
	 * @param string $class_name one of the keys of REQUIRED.
	 */
	public static function supports( string $class_name ): bool {
		if ( ! class_exists( $class_name ) ) {
			return false;
		}
		foreach ( self::REQUIRED[ $class_name ] ?? array() as $method ) {
			if ( ! method_exists( $class_name, $method ) ) {
				return false;
			}
		}
		return true;
	}

	/**
	 * Backend name.
	 */
	public function name(): string {
		return 'native';
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
			$d = self::to_array( $this->guard( 'LmsRealtime\\RateLimiter', array( 'actions' => $this->limits ) )->check( $action, $key, $cost ) );
			return array(
				'allowed'        => (bool) ( $d['allowed'] ?? true ),
				'retry_after_ms' => (int) ( $d['retry_after_ms'] ?? 0 ),
				'remaining'      => (int) ( $d['remaining'] ?? 0 ),
				'blocked'        => (bool) ( $d['blocked'] ?? false ),
			);
		} catch ( \Throwable $e ) {
			return $this->fallback->rate_check( $action, $key, $cost );
		}
	}

	/**
	 * See the interface.
	 *
	 * @param string $key      key.
	 * @param int    $max      slots.
	 * @param int    $lease_ms lease length.
	 */
	public function slot_acquire( string $key, int $max, int $lease_ms ) {
		try {
			return $this->guard(
				'LmsRealtime\\Slots',
				array(
					'max_per_key' => $max,
					'lease_ms'    => $lease_ms,
				)
			)->acquire( $key );
		} catch ( \LmsRealtime\Exception\SlotsExhaustedException $e ) {
			return null;
		} catch ( \Throwable $e ) {
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
		if ( is_string( $lease ) ) {
			$this->fallback->slot_release( $key, $lease );
			return;
		}
		try {
			$this->guard( 'LmsRealtime\\Slots', array() )->release( $lease );
		} catch ( \Throwable $e ) {
			// The lease expires by itself.
			unset( $e );
		}
	}

	/**
	 * See the interface.
	 *
	 * @param string $key key.
	 */
	public function slot_count( string $key ): int {
		try {
			return (int) $this->guard( 'LmsRealtime\\Slots', array() )->count( $key );
		} catch ( \Throwable $e ) {
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
		return $this->breaker_call(
			$name,
			$success ? 'recordSuccess' : 'recordFailure',
			fn () => $this->fallback->breaker_record( $name, $success )
		);
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
	 * One breaker call, normalised to the status shape.
	 *
	 * @param string   $name     breaker.
	 * @param string   $method   method.
	 * @param callable $fallback on failure.
	 * @return array<string, mixed>
	 */
	private function breaker_call( string $name, string $method, callable $fallback ): array {
		try {
			$s     = self::to_array( $this->guard( 'LmsRealtime\\Breakers', $this->breaker )->$method( $name ) );
			$state = (string) ( $s['state'] ?? 'closed' );
			return array(
				'name'     => $name,
				'state'    => $state,
				'allowed'  => (bool) ( $s['allowed'] ?? ( 'open' !== $state ) ),
				'mode'     => (string) ( $s['mode'] ?? 'long' ),
				'retry_ms' => (int) ( $s['retry_ms'] ?? 0 ),
				'failures' => (int) ( $s['failures'] ?? $s['consecutive_failures'] ?? 0 ),
			);
		} catch ( \Throwable $e ) {
			return $fallback();
		}
	}

	/**
	 * The opened guard object of `$class_name`.
	 *
	 * @param string               $class_name guard class.
	 * @param array<string, mixed> $config     settings for `open()`.
	 */
	private function guard( string $class_name, array $config ): object {
		if ( ! isset( $this->open[ $class_name ] ) ) {
			$this->open[ $class_name ] = $class_name::open( $this->db_path, $config );
		}
		return $this->open[ $class_name ];
	}

	/**
	 * An array or an object with public properties (or `toArray()`) as an array.
	 *
	 * @param mixed $v value.
	 * @return array<string, mixed>
	 */
	private static function to_array( $v ): array {
		if ( is_array( $v ) ) {
			return $v;
		}
		if ( is_object( $v ) ) {
			return method_exists( $v, 'toArray' ) ? (array) $v->toArray() : get_object_vars( $v );
		}
		return array();
	}
}
