<?php
/**
 * The guards in front of the native path, Query Monitor style.
 *
 * @package LMS_Realtime
 */

defined( 'ABSPATH' ) || exit;

/**
 * Decides, once per request, whether the event store can be used: the kill switch, ext-ffi,
 * `ffi.enable`, the PHP binding, the native library and its ABI version, and, for a store in
 * Redis, whether the library has that engine. Any failure is kept
 * as a reason for the admin notice; the plugin then serves the legacy AJAX path from its own
 * table, so the site keeps working.
 */
final class LMS_Realtime_Requirements {

	/**
	 * Cached verdict: null before the first check, else a list of problems (empty: all good).
	 *
	 * @var string[]|null
	 */
	private static ?array $problems = null;

	/**
	 * Whether the store path is available.
	 */
	public static function met(): bool {
		return array() === self::problems();
	}

	/**
	 * What stops the store path, as translated sentences (empty when nothing does).
	 *
	 * @return string[]
	 */
	public static function problems(): array {
		if ( null === self::$problems ) {
			self::$problems = self::check();
		}
		return self::$problems;
	}

	/**
	 * Forgets the cached verdict (tests, and after the settings change the library path).
	 */
	public static function reset(): void {
		self::$problems = null;
	}

	/**
	 * The library path the plugin hands to the binding, or null to let the binding look
	 * (preloaded scope, `LMSRT_LIBRARY` in the environment, the build output).
	 */
	public static function library_path(): ?string {
		if ( defined( 'LMSRT_LIBRARY' ) && '' !== (string) LMSRT_LIBRARY ) {
			return (string) LMSRT_LIBRARY;
		}
		$bundled = LMSRT_PLUGIN_DIR . '/lib/liblms_realtime.so';
		if ( is_file( $bundled ) && false === getenv( 'LMSRT_LIBRARY' ) ) {
			return $bundled;
		}
		return null;
	}

	/**
	 * Runs the checks.
	 *
	 * @return string[]
	 */
	private static function check(): array {
		if ( defined( 'LMSRT_DISABLED' ) && LMSRT_DISABLED ) {
			return array( __( 'The constant LMSRT_DISABLED is set (kill switch).', 'lms-realtime' ) );
		}
		if ( ! extension_loaded( 'ffi' ) ) {
			return array( __( 'The PHP FFI extension (ext-ffi) is not loaded.', 'lms-realtime' ) );
		}
		$mode = strtolower( trim( (string) ini_get( 'ffi.enable' ) ) );
		if ( in_array( $mode, array( '0', '', 'false', 'off', 'no' ), true ) ) {
			return array(
				sprintf(
					/* translators: %s: the ffi.enable setting. */
					__( 'FFI is disabled (ffi.enable=%s).', 'lms-realtime' ),
					'' === $mode ? '0' : $mode
				),
			);
		}
		try {
			$binding = class_exists( 'LmsRealtime\\EventStore' );
		} catch ( \Throwable $e ) {
			return array(
				sprintf(
					/* translators: %s: the error. */
					__( 'The PHP binding failed to load: %s', 'lms-realtime' ),
					$e->getMessage()
				),
			);
		}
		if ( ! $binding ) {
			return array( __( 'The PHP binding (LmsRealtime\\EventStore) was not found: bundle it under lib/php-ext or define LMSRT_PHP_PACKAGE.', 'lms-realtime' ) );
		}
		try {
			\LmsRealtime\Library::ffi( self::library_path() );
		} catch ( \Throwable $e ) {
			return array(
				sprintf(
					/* translators: %s: the error from the binding. */
					__( 'The lms-realtime library could not be loaded: %s', 'lms-realtime' ),
					$e->getMessage()
				),
			);
		}
		return self::engine_problems( LMSRT_Unified_Long_Poll::db_path() );
	}

	/**
	 * Whether the loaded library can open the store at `$store`: a Redis URL needs one built
	 * with the cargo feature `redis` (`Library::engines()`); a file, any.
	 *
	 * @param string $store the store's file or URL.
	 * @return string[]
	 */
	public static function engine_problems( string $store ): array {
		if ( ! LMSRT_Unified_Long_Poll::store_is_url( $store ) ) {
			return array();
		}
		if ( ! \LmsRealtime\StoreLocation::isRedis( $store ) ) {
			return array( __( 'LMSRT_DB_PATH (or the lms_realtime_db_path filter) names a URL that is not redis:// or rediss://: the event store is a file or a Redis server.', 'lms-realtime' ) );
		}
		$engines = \LmsRealtime\Library::engines( self::library_path() );
		if ( ! in_array( 'redis', $engines, true ) ) {
			return array( __( 'LMSRT_DB_PATH (or the lms_realtime_db_path filter) names a Redis store, and the lms-realtime library was built without Redis support: build it with cargo build --release --lib --features redis.', 'lms-realtime' ) );
		}
		return array();
	}
}
