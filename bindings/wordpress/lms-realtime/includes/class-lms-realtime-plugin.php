<?php
/**
 * Wiring: hooks, activation, cron, the admin notice.
 *
 * @package LMS_Realtime
 */

defined( 'ABSPATH' ) || exit;

/**
 * Boots the plugin. The realtime service (`LMS_Unified_Long_Poll` on the store path,
 * `LMS_Chat_Realtime` on the legacy path) is built on first use, so a request that never
 * records or polls never loads the native library.
 */
final class LMS_Realtime_Plugin {

	/** The WP-Cron hook that purges expired events. */
	public const CRON_HOOK = 'lms_realtime_purge_expired';

	/** Its schedule. */
	public const CRON_SCHEDULE = 'lmsrt_five_minutes';

	/** Option defaults (the plan's values). */
	public const DEFAULTS = array(
		'lms_use_unified_longpoll'     => false,
		'lms_unified_longpoll_events'  => array( 'reactions', 'messages' ),
		'lms_longpoll_timeout'         => 30,
		'lms_longpoll_rollout'         => 0,
		'lms_longpoll_beta_users'      => array(),
		'lms_longpoll_max_connections' => 3,
		'lms_longpoll_batch_size'      => 50,
		'lms_longpoll_circuit_breaker' => true,
		'lms_realtime_daemon_url'      => '',
		'lms_realtime_daemon_secret'   => '',
		'lms_realtime_daemon_key_id'   => 'k1',
		'lms_realtime_daemon_internal_url' => '',
	);

	/**
	 * The realtime service, once built.
	 *
	 * @var LMS_Chat_Realtime|null
	 */
	private static ?LMS_Chat_Realtime $realtime = null;

	/**
	 * Registers everything; called once from the main file.
	 */
	public static function boot(): void {
		foreach ( LMS_Chat_Realtime::hooks() as $hook => list( $method, $args ) ) {
			add_action(
				$hook,
				static function ( ...$a ) use ( $method ) {
					self::realtime()->$method( ...$a );
				},
				10,
				max( 1, $args )
			);
		}
		add_action( 'init', array( self::class, 'init' ) );
		add_filter( 'cron_schedules', array( self::class, 'cron_schedules' ) );
		add_action( self::CRON_HOOK, array( self::class, 'purge_expired' ) );
		add_action( 'admin_notices', array( self::class, 'admin_notice' ) );
		LMS_Chat::register();
		LMS_Realtime_Settings::register();
	}

	/**
	 * `init`: translations, and the purge schedule if it went missing.
	 */
	public static function init(): void {
		load_plugin_textdomain( 'lms-realtime', false, dirname( plugin_basename( LMSRT_PLUGIN_FILE ) ) . '/languages' );
		if ( ! wp_next_scheduled( self::CRON_HOOK ) ) {
			wp_schedule_event( time() + 60, self::CRON_SCHEDULE, self::CRON_HOOK );
		}
	}

	/**
	 * The realtime service for this request.
	 */
	public static function realtime(): LMS_Chat_Realtime {
		if ( null === self::$realtime ) {
			self::$realtime = self::create();
		}
		return self::$realtime;
	}

	/**
	 * Builds the service: the store path when the requirements are met, else the legacy path.
	 */
	public static function create(): LMS_Chat_Realtime {
		$metrics = new LMS_Realtime_Metrics( dirname( LMS_Unified_Long_Poll::db_path() ) . '/metrics.json' );
		if ( LMS_Realtime_Requirements::met() ) {
			$path = LMS_Unified_Long_Poll::db_path();
			/**
			 * Filters the daemon token issuer (null: clients never use the daemon).
			 *
			 * @param LMS_Realtime_Token_Issuer|null $issuer The default issuer.
			 */
			$issuer = apply_filters( 'lms_realtime_token_issuer', new LMS_Realtime_Native_Token_Issuer( LMS_Chat_Realtime::daemon_secret(), LMS_Chat_Realtime::daemon_key_id() ) );
			return new LMS_Unified_Long_Poll(
				new LMS_Realtime_Guards( $path ),
				$metrics,
				$path,
				$issuer instanceof LMS_Realtime_Token_Issuer ? $issuer : null
			);
		}
		return new LMS_Chat_Realtime( new LMS_Realtime_Guards( null ), $metrics );
	}

	/**
	 * Replaces the service (tests), or forgets it so the next call rebuilds it (null).
	 *
	 * @param LMS_Chat_Realtime|null $realtime the service.
	 */
	public static function set_realtime( ?LMS_Chat_Realtime $realtime ): void {
		self::$realtime = $realtime;
	}

	/**
	 * Activation: tables, default options, the store's directory, the purge schedule.
	 */
	public static function activate(): void {
		LMS_Chat_Realtime::install_table();
		LMS_Chat::install_tables();
		foreach ( self::DEFAULTS as $option => $value ) {
			add_option( $option, $value, '', false );
		}
		$dir = dirname( LMS_Unified_Long_Poll::db_path() );
		if ( ! is_dir( $dir ) ) {
			wp_mkdir_p( $dir );
		}
		LMS_Unified_Long_Poll::protect_directory( $dir );
		if ( ! wp_next_scheduled( self::CRON_HOOK ) ) {
			wp_schedule_event( time() + 60, self::CRON_SCHEDULE, self::CRON_HOOK );
		}
	}

	/**
	 * Deactivation: stops the purge schedule (data stays until uninstall).
	 */
	public static function deactivate(): void {
		wp_clear_scheduled_hook( self::CRON_HOOK );
	}

	/**
	 * Adds the five-minute schedule.
	 *
	 * @param array $schedules schedules.
	 * @return array
	 */
	public static function cron_schedules( $schedules ): array {
		$schedules                        = (array) $schedules;
		$schedules[ self::CRON_SCHEDULE ] = array(
			'interval' => 5 * MINUTE_IN_SECONDS,
			'display'  => __( 'Every five minutes (LMS Chat Realtime)', 'lms-realtime' ),
		);
		return $schedules;
	}

	/**
	 * WP-Cron: deletes expired events, in chunks, for at most a few seconds.
	 *
	 * @return int events deleted.
	 */
	public static function purge_expired(): int {
		$deadline = microtime( true ) + 5;
		$total    = 0;
		try {
			do {
				$n      = self::realtime()->purge_expired( 2000 );
				$total += $n;
			} while ( 2000 === $n && microtime( true ) < $deadline );
		} catch ( \Throwable $e ) {
			// phpcs:ignore WordPress.PHP.DevelopmentFunctions.error_log_error_log
			error_log( 'lms-realtime: purge failed: ' . $e->getMessage() );
		}
		update_option( 'lms_realtime_last_purge', array( time(), $total ), false );
		return $total;
	}

	/**
	 * The notice when the store path is unavailable and the site runs on legacy polling.
	 */
	public static function admin_notice(): void {
		if ( ! current_user_can( 'manage_options' ) || LMS_Realtime_Requirements::met() ) {
			return;
		}
		echo '<div class="notice notice-warning"><p><strong>';
		esc_html_e( 'LMS Chat Realtime is running on legacy polling.', 'lms-realtime' );
		echo '</strong> ';
		echo esc_html( implode( ' ', LMS_Realtime_Requirements::problems() ) );
		echo ' ';
		esc_html_e( 'The chat keeps working through admin-ajax short polling from the plugin\'s own table.', 'lms-realtime' );
		echo ' <a href="' . esc_url( admin_url( 'options-general.php?page=' . LMS_Realtime_Settings::PAGE ) ) . '">';
		esc_html_e( 'Status', 'lms-realtime' );
		echo '</a></p></div>';
	}
}
