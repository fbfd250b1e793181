<?php
/**
 * Wiring: hooks, activation, cron, the admin notice.
 *
 * @package LMS_Realtime
 */

defined( 'ABSPATH' ) || exit;

/**
 * Boots the plugin. The realtime service (`LMSRT_Unified_Long_Poll` on the store path,
 * `LMSRT_Realtime` on the legacy path) is built on first use, so a request that never
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
	 * @var LMSRT_Realtime|null
	 */
	private static ?LMSRT_Realtime $realtime = null;

	/**
	 * The integration layer, once resolved.
	 *
	 * @var LMSRT_Chat_Realtime_Base|null
	 */
	private static ?LMSRT_Chat_Realtime_Base $bridge = null;

	/**
	 * Registers everything; called once from the main file. Nothing here declares a class the
	 * LMS theme declares: the plugin's classes are `LMSRT_*` and `LMS_Realtime_*`, and the
	 * legacy names are aliased only after the theme has loaded, and only where it declared
	 * none of them (`legacy_aliases()`).
	 */
	public static function boot(): void {
		// The theme's hooks, resolved to the integration layer when they fire (after the theme
		// loaded, so a theme class extending LMSRT_Chat_Realtime_Base is found).
		foreach ( LMSRT_Chat_Realtime_Base::lmsrt_theme_hooks() as $hook => list( $method, $args ) ) {
			add_action(
				$hook,
				static function ( ...$a ) use ( $method ) {
					self::bridge()->$method( ...$a );
				},
				10,
				$args
			);
		}
		// The theme's long poll: the plugin answers first (wp_send_json ends the request, so the
		// theme's own handler, hooked at the default priority, does not run).
		foreach ( array( 'wp_ajax_', 'wp_ajax_nopriv_' ) as $prefix ) {
			add_action( $prefix . LMSRT_Realtime::POLL_ACTION, static fn () => self::bridge()->lmsrt_handle_unified_long_poll(), self::TAKEOVER_PRIORITY );
			add_action( $prefix . LMSRT_Realtime::TOKEN_ACTION, static fn () => self::bridge()->lmsrt_handle_token() );
		}
		add_action( 'after_setup_theme', array( self::class, 'legacy_aliases' ), PHP_INT_MAX );
		add_action( 'init', array( self::class, 'init' ) );
		add_action( 'wp_enqueue_scripts', array( self::class, 'register_client' ), 5 );
		add_action( 'wp_enqueue_scripts', array( LMS_Realtime_Theme_Bridge::class, 'enqueue' ), 20 );
		add_filter( 'cron_schedules', array( self::class, 'cron_schedules' ) );
		add_action( self::CRON_HOOK, array( self::class, 'purge_expired' ) );
		add_action( 'admin_notices', array( self::class, 'admin_notice' ) );
		LMS_Realtime_Settings::register();
	}

	/** The priority of the plugin's `lms_unified_long_poll` handler: before the theme's. */
	public const TAKEOVER_PRIORITY = -1000;

	/** The legacy class names => the plugin's classes they alias where no theme declares them. */
	public const LEGACY_ALIASES = array(
		'LMS_Chat_Realtime'     => 'LMSRT_Realtime',
		'LMS_Unified_Long_Poll' => 'LMSRT_Unified_Long_Poll',
	);

	/**
	 * `after_setup_theme`: the legacy names (`LMS_Unified_Long_Poll extends LMS_Chat_Realtime`)
	 * for code written against earlier versions, where the theme declared none of them. Never
	 * before the theme has loaded: a theme that declares one with an unconditional
	 * `require_once` would die on "Cannot declare class".
	 */
	public static function legacy_aliases(): void {
		foreach ( self::LEGACY_ALIASES as $legacy => $class ) {
			if ( ! class_exists( $legacy, false ) && ! interface_exists( $legacy, false ) ) {
				class_alias( $class, $legacy );
			}
		}
	}

	/**
	 * The integration layer: the theme's `LMS_Chat_Realtime` when it extends
	 * `LMSRT_Chat_Realtime_Base` (way in (a)), else the plugin's own (way in (b)).
	 */
	public static function bridge(): LMSRT_Chat_Realtime_Base {
		if ( null === self::$bridge ) {
			self::$bridge = self::theme_bridge() ?? new LMSRT_Chat_Realtime_Base();
		}
		return self::$bridge;
	}

	/**
	 * Replaces the integration layer (tests), or forgets it (null).
	 *
	 * @param LMSRT_Chat_Realtime_Base|null $bridge the layer.
	 */
	public static function set_bridge( ?LMSRT_Chat_Realtime_Base $bridge ): void {
		self::$bridge = $bridge;
	}

	/**
	 * How the plugin meets the theme: `theme-extends` (the theme's class extends the base),
	 * `theme-hooks` (an unmodified LMS theme), `standalone` (no LMS theme).
	 */
	public static function integration(): string {
		if ( LMSRT_Chat_Realtime_Base::class !== get_class( self::bridge() ) ) {
			return 'theme-extends';
		}
		return LMS_Realtime_Theme_Data::present() ? 'theme-hooks' : 'standalone';
	}

	/**
	 * The theme's realtime class as the integration layer, if it extends the base: its own
	 * singleton, else an instance made without its constructor (which would hook the theme's
	 * handlers a second time). Filter `lms_realtime_theme_bridge_class` names the class.
	 */
	private static function theme_bridge(): ?LMSRT_Chat_Realtime_Base {
		/**
		 * Filters the theme class that may extend LMSRT_Chat_Realtime_Base.
		 *
		 * @param string $class The class name.
		 */
		$class = (string) apply_filters( 'lms_realtime_theme_bridge_class', 'LMS_Chat_Realtime' );
		if ( ! class_exists( $class, false ) || ! is_subclass_of( $class, LMSRT_Chat_Realtime_Base::class ) ) {
			return null;
		}
		try {
			if ( is_callable( array( $class, 'get_instance' ) ) ) {
				$instance = $class::get_instance();
				if ( $instance instanceof LMSRT_Chat_Realtime_Base ) {
					return $instance;
				}
			}
			$instance = ( new \ReflectionClass( $class ) )->newInstanceWithoutConstructor();
			return $instance instanceof LMSRT_Chat_Realtime_Base ? $instance : null;
		} catch ( \Throwable $e ) {
			// phpcs:ignore WordPress.PHP.DevelopmentFunctions.error_log_error_log
			error_log( 'lms-realtime: the theme class ' . $class . ' could not be used: ' . $e->getMessage() );
			return null;
		}
	}

	/**
	 * Registers the browser client (`lms-realtime-client`) for pages that use it.
	 */
	public static function register_client(): void {
		wp_register_script( 'lms-realtime-client', plugins_url( 'assets/lms-realtime-client.js', LMSRT_PLUGIN_FILE ), array(), LMSRT_PLUGIN_VERSION, true );
	}

	/**
	 * `init`: translations, the plugin's table if it went missing, the purge schedule.
	 */
	public static function init(): void {
		if ( get_option( 'lmsrt_db_version' ) !== LMSRT_PLUGIN_VERSION ) {
			LMSRT_Realtime::install_table();
			update_option( 'lmsrt_db_version', LMSRT_PLUGIN_VERSION, true );
		}
		load_plugin_textdomain( 'lms-realtime', false, dirname( plugin_basename( LMSRT_PLUGIN_FILE ) ) . '/languages' );
		if ( ! wp_next_scheduled( self::CRON_HOOK ) ) {
			wp_schedule_event( time() + 60, self::CRON_SCHEDULE, self::CRON_HOOK );
		}
	}

	/**
	 * The realtime service for this request.
	 */
	public static function realtime(): LMSRT_Realtime {
		if ( null === self::$realtime ) {
			self::$realtime = self::create();
		}
		return self::$realtime;
	}

	/**
	 * Builds the service: the store path when the requirements are met, else the legacy path.
	 */
	public static function create(): LMSRT_Realtime {
		$metrics = new LMS_Realtime_Metrics( LMSRT_Unified_Long_Poll::files_dir() . '/metrics.json' );
		if ( LMS_Realtime_Requirements::met() ) {
			$path = LMSRT_Unified_Long_Poll::db_path();
			/**
			 * Filters the daemon token issuer (null: clients never use the daemon).
			 *
			 * @param LMS_Realtime_Token_Issuer|null $issuer The default issuer.
			 */
			$issuer = apply_filters( 'lms_realtime_token_issuer', new LMS_Realtime_Native_Token_Issuer( LMSRT_Realtime::daemon_secret(), LMSRT_Realtime::daemon_key_id() ) );
			return new LMSRT_Unified_Long_Poll(
				new LMS_Realtime_Guards( $path ),
				$metrics,
				$path,
				$issuer instanceof LMS_Realtime_Token_Issuer ? $issuer : null
			);
		}
		return new LMSRT_Realtime( new LMS_Realtime_Guards( null ), $metrics );
	}

	/**
	 * Replaces the service (tests), or forgets it so the next call rebuilds it (null).
	 *
	 * @param LMSRT_Realtime|null $realtime the service.
	 */
	public static function set_realtime( ?LMSRT_Realtime $realtime ): void {
		self::$realtime = $realtime;
	}

	/**
	 * Activation: the plugin's own table (created if missing; no other table is touched),
	 * default options, the store's directory, the purge schedule.
	 */
	public static function activate(): void {
		LMSRT_Realtime::install_table();
		update_option( 'lmsrt_db_version', LMSRT_PLUGIN_VERSION, true );
		// Options the theme may already have keep their values; the ones the plugin adds are
		// recorded, so uninstall removes those and nothing of the theme's.
		$owned = (array) get_option( 'lmsrt_owned_options', array() );
		foreach ( self::DEFAULTS as $option => $value ) {
			if ( false === get_option( $option ) && add_option( $option, $value, '', false ) ) {
				$owned[] = $option;
			}
		}
		update_option( 'lmsrt_owned_options', array_values( array_unique( $owned ) ), false );
		$dir = LMSRT_Unified_Long_Poll::files_dir();
		if ( ! is_dir( $dir ) ) {
			wp_mkdir_p( $dir );
		}
		LMSRT_Unified_Long_Poll::protect_directory( $dir );
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
	 * The notice when the store path is unavailable and the site runs on the table path: why,
	 * and the exact lines that fix it (`LMS_Realtime_Doctor`, with this installation's paths).
	 */
	public static function admin_notice(): void {
		if ( ! current_user_can( 'manage_options' ) || LMS_Realtime_Requirements::met() ) {
			return;
		}
		$report = LMS_Realtime_Doctor::report();
		echo '<div class="notice notice-warning lmsrt-notice"><p><strong>';
		esc_html_e( 'LMS Chat Realtime is running on legacy polling (the plugin\'s table).', 'lms-realtime' );
		echo '</strong> ';
		esc_html_e( 'The chat keeps working through admin-ajax short polling from the plugin\'s own table.', 'lms-realtime' );
		echo '</p>';
		foreach ( $report['problems'] as $problem ) {
			echo '<p><strong>' . esc_html__( 'Why:', 'lms-realtime' ) . '</strong> ' . esc_html( $problem['problem'] ) . '</p>';
			LMS_Realtime_Doctor::render_fix( $problem );
		}
		echo '<p><a href="' . esc_url( admin_url( 'options-general.php?page=' . LMS_Realtime_Settings::PAGE ) ) . '#lmsrt-doctor">';
		esc_html_e( 'Set-up check and status', 'lms-realtime' );
		echo '</a></p></div>';
	}
}
