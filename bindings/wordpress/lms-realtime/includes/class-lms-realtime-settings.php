<?php
/**
 * Settings → LMS Chat Realtime: the options and the status panel.
 *
 * @package LMS_Realtime
 */

defined( 'ABSPATH' ) || exit;

/**
 * The settings page. Saving goes through `options.php` (the Settings API checks the nonce of
 * the `lms_realtime` group and the capability from `option_page_capability_lms_realtime`);
 * every option has a sanitising callback (the static `sanitize_*` methods, unit-tested); a
 * number out of its range is refused with a message and the previous value kept.
 * The reset buttons post to `admin-post.php` with their own nonces and capability check.
 */
final class LMS_Realtime_Settings {

	/** The page slug. */
	public const PAGE = 'lms-realtime';

	/** The settings group. */
	public const GROUP = 'lms_realtime';

	/** Seconds after which the LMS theme's client gives up a poll request. */
	public const THEME_CLIENT_TIMEOUT = 7;

	/** The event families an admin can pick. */
	public const FAMILIES = array( 'messages', 'reactions' );

	/**
	 * Hooks the page.
	 */
	public static function register(): void {
		add_action( 'admin_menu', array( self::class, 'menu' ) );
		add_action( 'admin_init', array( self::class, 'register_settings' ) );
		add_filter( 'option_page_capability_' . self::GROUP, array( self::class, 'capability' ) );
		add_action( 'admin_post_lms_realtime_reset_metrics', array( self::class, 'reset_metrics' ) );
		add_action( 'admin_post_lms_realtime_reset_breaker', array( self::class, 'reset_breaker' ) );
		add_filter( 'plugin_action_links_' . plugin_basename( LMSRT_PLUGIN_FILE ), array( self::class, 'action_links' ) );
	}

	/**
	 * The capability that manages the plugin (filter `lms_realtime_settings_capability`).
	 */
	public static function capability(): string {
		/**
		 * Filters the capability needed to change the realtime settings.
		 *
		 * @param string $capability Default `manage_options`.
		 */
		return (string) apply_filters( 'lms_realtime_settings_capability', 'manage_options' );
	}

	/**
	 * Adds the page under Settings.
	 */
	public static function menu(): void {
		add_options_page(
			__( 'LMS Chat Realtime', 'lms-realtime' ),
			__( 'LMS Chat Realtime', 'lms-realtime' ),
			self::capability(),
			self::PAGE,
			array( self::class, 'render' )
		);
	}

	/**
	 * A "Settings" link on the plugins screen.
	 *
	 * @param array $links links.
	 * @return array
	 */
	public static function action_links( $links ): array {
		$links   = (array) $links;
		$links[] = '<a href="' . esc_url( admin_url( 'options-general.php?page=' . self::PAGE ) ) . '">' . esc_html__( 'Settings', 'lms-realtime' ) . '</a>';
		return $links;
	}

	/**
	 * The options, their sanitisers and their fields.
	 *
	 * @return array<string, array{0: callable, 1: string, 2: string}> option => [sanitiser, label, field type]
	 */
	public static function options(): array {
		return array(
			'lms_use_unified_longpoll'         => array( array( self::class, 'sanitize_bool' ), __( 'Unified long poll', 'lms-realtime' ), 'bool' ),
			'lms_unified_longpoll_events'      => array( array( self::class, 'sanitize_events' ), __( 'Events through the unified poll', 'lms-realtime' ), 'events' ),
			'lms_longpoll_timeout'             => array( array( self::class, 'sanitize_timeout' ), __( 'Long-poll timeout (seconds)', 'lms-realtime' ), 'timeout' ),
			'lms_longpoll_rollout'             => array( array( self::class, 'sanitize_rollout' ), __( 'Rollout (% of users)', 'lms-realtime' ), 'number' ),
			'lms_longpoll_beta_users'          => array( array( self::class, 'sanitize_beta_users' ), __( 'Beta users', 'lms-realtime' ), 'users' ),
			'lms_longpoll_max_connections'     => array( array( self::class, 'sanitize_max_connections' ), __( 'Connections per user', 'lms-realtime' ), 'number' ),
			'lms_longpoll_batch_size'          => array( array( self::class, 'sanitize_batch_size' ), __( 'Batch size (events)', 'lms-realtime' ), 'number' ),
			'lms_longpoll_circuit_breaker'     => array( array( self::class, 'sanitize_bool' ), __( 'Circuit breaker', 'lms-realtime' ), 'bool' ),
			'lms_realtime_daemon_url'          => array( array( self::class, 'sanitize_daemon_url' ), __( 'Daemon URL (as browsers reach it)', 'lms-realtime' ), 'url' ),
			'lms_realtime_daemon_internal_url' => array( array( self::class, 'sanitize_daemon_url' ), __( 'Daemon URL for health checks (from this server)', 'lms-realtime' ), 'url' ),
			'lms_realtime_daemon_key_id'       => array( array( self::class, 'sanitize_key_id' ), __( 'Daemon key id', 'lms-realtime' ), 'key_id' ),
			'lms_realtime_daemon_secret'       => array( array( self::class, 'sanitize_secret' ), __( 'Daemon secret', 'lms-realtime' ), 'secret' ),
		);
	}

	/**
	 * Registers the options with the Settings API.
	 */
	public static function register_settings(): void {
		foreach ( self::options() as $option => list( $sanitize, $label, $type ) ) {
			register_setting(
				self::GROUP,
				$option,
				array(
					'sanitize_callback' => $sanitize,
					'default'           => LMS_Realtime_Plugin::DEFAULTS[ $option ] ?? null,
					'show_in_rest'      => false,
				)
			);
			add_settings_field(
				$option,
				$label,
				array( self::class, 'field' ),
				self::PAGE,
				str_starts_with( $option, 'lms_realtime_daemon' ) ? 'lms_realtime_daemon' : 'lms_realtime_main',
				array(
					'option'    => $option,
					'type'      => $type,
					'label_for' => $option,
				)
			);
		}
		add_settings_section( 'lms_realtime_main', __( 'Long poll', 'lms-realtime' ), '__return_false', self::PAGE );
		add_settings_section( 'lms_realtime_daemon', __( 'Daemon (lms-longpolld)', 'lms-realtime' ), array( self::class, 'daemon_section' ), self::PAGE );
	}

	// -- sanitisers -------------------------------------------------------------------------

	/**
	 * A checkbox: anything truthy is true (unchecked boxes are not posted: null is false).
	 *
	 * @param mixed $value raw.
	 */
	public static function sanitize_bool( $value ): bool {
		if ( is_string( $value ) ) {
			return in_array( strtolower( trim( $value ) ), array( '1', 'true', 'on', 'yes' ), true );
		}
		return (bool) $value;
	}

	/**
	 * Event families: the known ones only, in a fixed order, no duplicates.
	 *
	 * @param mixed $value raw.
	 * @return string[]
	 */
	public static function sanitize_events( $value ): array {
		$value = is_array( $value ) ? array_map( 'strval', $value ) : array();
		return array_values( array_intersect( self::FAMILIES, $value ) );
	}

	/** The ranges of the number options: option => [lowest, highest]. */
	public const RANGES = array(
		'lms_longpoll_timeout'         => array( 1, 60 ),
		'lms_longpoll_rollout'         => array( 0, 100 ),
		'lms_longpoll_max_connections' => array( 1, 15 ),
		'lms_longpoll_batch_size'      => array( 1, 500 ),
	);

	/**
	 * A whole number in the option's range (`RANGES`); anything else is refused with a
	 * settings error, and the option keeps its current value.
	 *
	 * @param string $option the option.
	 * @param mixed  $value  raw.
	 */
	public static function int_in_range( string $option, $value ): int {
		list( $min, $max ) = self::RANGES[ $option ];
		$raw               = is_string( $value ) ? trim( $value ) : $value;
		if ( is_int( $raw ) || ( is_string( $raw ) && 1 === preg_match( '/^-?\d{1,9}$/', $raw ) ) ) {
			if ( (int) $raw >= $min && (int) $raw <= $max ) {
				return (int) $raw;
			}
		}
		$old = (int) get_option( $option, LMS_Realtime_Plugin::DEFAULTS[ $option ] );
		if ( function_exists( 'add_settings_error' ) ) {
			$labels = array_map( static fn ( array $o ): string => $o[1], self::options() );
			add_settings_error(
				$option,
				'out_of_range',
				sprintf(
					/* translators: 1: the setting's label, 2: lowest, 3: highest, 4: the value entered, 5: the value kept. */
					__( '%1$s must be a whole number from %2$d to %3$d: "%4$s" was not saved, the setting stays %5$d.', 'lms-realtime' ),
					$labels[ $option ],
					$min,
					$max,
					is_scalar( $value ) ? sanitize_text_field( (string) $value ) : gettype( $value ),
					$old
				)
			);
		}
		return $old;
	}

	/**
	 * Seconds, 1 to 60.
	 *
	 * @param mixed $value raw.
	 */
	public static function sanitize_timeout( $value ): int {
		return self::int_in_range( 'lms_longpoll_timeout', $value );
	}

	/**
	 * Percent, 0 to 100.
	 *
	 * @param mixed $value raw.
	 */
	public static function sanitize_rollout( $value ): int {
		return self::int_in_range( 'lms_longpoll_rollout', $value );
	}

	/**
	 * Connections per user, 1 to 15 (a slot record holds 15 leases).
	 *
	 * @param mixed $value raw.
	 */
	public static function sanitize_max_connections( $value ): int {
		return self::int_in_range( 'lms_longpoll_max_connections', $value );
	}

	/**
	 * Events per batch, 1 to 500.
	 *
	 * @param mixed $value raw.
	 */
	public static function sanitize_batch_size( $value ): int {
		return self::int_in_range( 'lms_longpoll_batch_size', $value );
	}

	/**
	 * Beta users: ids, logins or e-mail addresses separated by commas, spaces or lines (or an
	 * array); existing users only, as sorted unique ids. Unknown entries are reported.
	 *
	 * @param mixed $value raw.
	 * @return int[]
	 */
	public static function sanitize_beta_users( $value ): array {
		$items = is_array( $value ) ? $value : preg_split( '/[\s,]+/', (string) $value, -1, PREG_SPLIT_NO_EMPTY );
		$ids   = array();
		$bad   = array();
		foreach ( (array) $items as $item ) {
			$item = trim( (string) $item );
			if ( '' === $item ) {
				continue;
			}
			if ( ctype_digit( $item ) ) {
				$user = get_user_by( 'id', (int) $item );
			} elseif ( is_email( $item ) ) {
				$user = get_user_by( 'email', $item );
			} else {
				$user = get_user_by( 'login', $item );
			}
			if ( $user ) {
				$ids[] = (int) $user->ID;
			} else {
				$bad[] = $item;
			}
		}
		if ( array() !== $bad && function_exists( 'add_settings_error' ) ) {
			add_settings_error(
				'lms_longpoll_beta_users',
				'unknown_users',
				sprintf(
					/* translators: %s: the entries that match no user. */
					__( 'These beta users were not found and were left out: %s', 'lms-realtime' ),
					implode( ', ', array_map( 'sanitize_text_field', $bad ) )
				)
			);
		}
		$ids = array_values( array_unique( $ids ) );
		sort( $ids );
		return $ids;
	}

	/**
	 * The daemon URL: empty, an http(s) URL, or a path on this site starting with '/'.
	 *
	 * @param mixed $value raw.
	 */
	public static function sanitize_daemon_url( $value ): string {
		$value = trim( (string) $value );
		if ( '' === $value ) {
			return '';
		}
		if ( '/' === $value[0] && ( ! isset( $value[1] ) || '/' !== $value[1] ) ) {
			return untrailingslashit( esc_url_raw( $value ) );
		}
		$url   = esc_url_raw( $value, array( 'http', 'https' ) );
		$parts = '' === $url ? false : wp_parse_url( $url );
		if ( ! is_array( $parts ) || empty( $parts['host'] ) || ! in_array( $parts['scheme'] ?? '', array( 'http', 'https' ), true ) || isset( $parts['query'] ) || isset( $parts['user'] ) ) {
			if ( function_exists( 'add_settings_error' ) ) {
				add_settings_error( 'lms_realtime_daemon_url', 'invalid_url', __( 'The daemon URL must be an http(s) URL or a path starting with /.', 'lms-realtime' ) );
			}
			return '';
		}
		return untrailingslashit( $url );
	}

	/**
	 * The daemon key id: 1 to 32 of `[A-Za-z0-9_-]`, else `k1`.
	 *
	 * @param mixed $value raw.
	 */
	public static function sanitize_key_id( $value ): string {
		$value = trim( (string) $value );
		if ( 1 === preg_match( '/^[A-Za-z0-9_-]{1,32}$/', $value ) ) {
			return $value;
		}
		if ( '' !== $value && function_exists( 'add_settings_error' ) ) {
			add_settings_error( 'lms_realtime_daemon_key_id', 'invalid_key_id', __( 'The key id is 1 to 32 letters, digits, "_" or "-"; "k1" was used.', 'lms-realtime' ) );
		}
		return 'k1';
	}

	/**
	 * The daemon secret: kept when the field is left empty, removed with the "remove" box,
	 * replaced by a new value of at least 32 characters.
	 *
	 * @param mixed $value raw.
	 */
	public static function sanitize_secret( $value ): string {
		$old = (string) get_option( 'lms_realtime_daemon_secret', '' );
		// phpcs:ignore WordPress.Security.NonceVerification.Missing -- options.php verified the group's nonce.
		if ( ! empty( $_POST['lms_realtime_daemon_secret_remove'] ) ) {
			return '';
		}
		$value = trim( (string) $value );
		if ( '' === $value ) {
			return $old;
		}
		if ( strlen( $value ) < 32 || preg_match( '/\s/', $value ) ) {
			if ( function_exists( 'add_settings_error' ) ) {
				add_settings_error( 'lms_realtime_daemon_secret', 'weak_secret', __( 'The daemon secret must be at least 32 characters without spaces; the previous secret was kept.', 'lms-realtime' ) );
			}
			return $old;
		}
		return $value;
	}

	// -- the page ---------------------------------------------------------------------------

	/**
	 * The daemon section's help.
	 */
	public static function daemon_section(): void {
		echo '<p>';
		esc_html_e( 'With a URL, a key id and a secret (shared with lms-longpolld: --token-key <key id>:<secret>), users in the rollout long-poll the daemon; otherwise WordPress serves the long poll itself.', 'lms-realtime' );
		echo ' ';
		printf(
			/* translators: %s: the event store's file. */
			esc_html__( 'Start the daemon on the same event store: %s', 'lms-realtime' ),
			'<code>' . esc_html( LMSRT_Unified_Long_Poll::shown_store() ) . '</code>'
		);
		echo '</p>';
	}

	/**
	 * One field.
	 *
	 * @param array{option: string, type: string} $args field.
	 */
	public static function field( array $args ): void {
		$option = $args['option'];
		$value  = get_option( $option, LMS_Realtime_Plugin::DEFAULTS[ $option ] ?? '' );
		switch ( $args['type'] ) {
			case 'bool':
				printf( '<input type="checkbox" id="%1$s" name="%1$s" value="1" %2$s />', esc_attr( $option ), checked( (bool) $value, true, false ) );
				break;
			case 'events':
				$value = is_array( $value ) ? $value : array();
				foreach ( self::FAMILIES as $family ) {
					printf(
						'<label><input type="checkbox" name="%1$s[]" value="%2$s" %3$s /> %4$s</label><br />',
						esc_attr( $option ),
						esc_attr( $family ),
						checked( in_array( $family, $value, true ), true, false ),
						esc_html( 'messages' === $family ? __( 'Messages and thread messages (created, deleted)', 'lms-realtime' ) : __( 'Reactions and thread reactions', 'lms-realtime' ) )
					);
				}
				break;
			case 'users':
				$value = is_array( $value ) ? $value : array();
				printf( '<textarea id="%1$s" name="%1$s" rows="2" cols="40">%2$s</textarea>', esc_attr( $option ), esc_textarea( implode( ', ', array_map( 'intval', $value ) ) ) );
				echo '<p class="description">' . esc_html__( 'User ids, logins or e-mail addresses; always get the unified client.', 'lms-realtime' ) . '</p>';
				break;
			case 'key_id':
				printf( '<input type="text" class="small-text code" id="%1$s" name="%1$s" value="%2$s" />', esc_attr( $option ), esc_attr( (string) $value ) );
				echo '<p class="description">' . esc_html__( 'Start the daemon with --token-key <key id>:<secret>.', 'lms-realtime' ) . '</p>';
				break;
			case 'url':
				printf( '<input type="text" class="regular-text code" id="%1$s" name="%1$s" value="%2$s" placeholder="https://chat.example.org/lmsrt" />', esc_attr( $option ), esc_attr( (string) $value ) );
				break;
			case 'secret':
				$set = '' !== (string) $value;
				printf(
					'<input type="password" class="regular-text code" id="%1$s" name="%1$s" value="" autocomplete="new-password" placeholder="%2$s" />',
					esc_attr( $option ),
					esc_attr( $set ? __( '(set; leave empty to keep)', 'lms-realtime' ) : __( '(not set)', 'lms-realtime' ) )
				);
				if ( $set ) {
					echo ' <label><input type="checkbox" name="lms_realtime_daemon_secret_remove" value="1" /> ' . esc_html__( 'Remove', 'lms-realtime' ) . '</label>';
				}
				if ( defined( 'LMSRT_DAEMON_SECRET' ) ) {
					echo '<p class="description">' . esc_html__( 'The constant LMSRT_DAEMON_SECRET overrides this setting.', 'lms-realtime' ) . '</p>';
				}
				break;
			case 'timeout':
				printf( '<input type="number" class="small-text" id="%1$s" name="%1$s" value="%2$s" min="1" max="60" />', esc_attr( $option ), esc_attr( (string) $value ) );
				echo '<p class="description">' . esc_html( self::timeout_help() ) . '</p>';
				break;
			default:
				list( $min, $max ) = self::RANGES[ $option ] ?? array( '', '' );
				printf( '<input type="number" class="small-text" id="%1$s" name="%1$s" value="%2$s" min="%3$s" max="%4$s" />', esc_attr( $option ), esc_attr( (string) $value ), esc_attr( (string) $min ), esc_attr( (string) $max ) );
		}
	}

	/**
	 * What the timeout applies to.
	 */
	public static function timeout_help(): string {
		return sprintf(
			/* translators: 1: the theme client's request timeout, 2: the hold for that client, 3: the longest hold when WordPress serves the plugin's client. */
			__( 'The LMS theme\'s client gives up a request after %1$d s, so its polls are held at most %2$d s whatever this value. The plugin\'s own client is held up to this value (at most %3$d s when WordPress serves it); the daemon holds its own long polls.', 'lms-realtime' ),
			self::THEME_CLIENT_TIMEOUT,
			LMSRT_Realtime::LEGACY_CLIENT_MAX_WAIT,
			LMSRT_Unified_Long_Poll::SELF_SERVE_MAX_WAIT
		);
	}

	/**
	 * The page: the form, then the status panel and the set-up check.
	 */
	public static function render(): void {
		if ( ! current_user_can( self::capability() ) ) {
			wp_die( esc_html__( 'Sorry, you are not allowed to manage these settings.', 'lms-realtime' ), 403 );
		}
		echo '<div class="wrap"><h1>' . esc_html__( 'LMS Chat Realtime', 'lms-realtime' ) . '</h1>';
		settings_errors();
		$timeout = (int) get_option( 'lms_longpoll_timeout', LMS_Realtime_Plugin::DEFAULTS['lms_longpoll_timeout'] );
		if ( $timeout > LMSRT_Realtime::LEGACY_CLIENT_MAX_WAIT ) {
			echo '<div class="notice notice-info inline lmsrt-timeout-notice"><p>';
			echo esc_html(
				sprintf(
					/* translators: 1: the timeout setting, 2: the hold for the theme's client, 3: the theme client's request timeout. */
					__( 'The long-poll timeout is %1$d s, but the LMS theme\'s client gives up a request after %3$d s: the plugin holds that client\'s polls at most %2$d s whatever this setting. The longer hold applies only to the plugin\'s own client and the daemon.', 'lms-realtime' ),
					$timeout,
					LMSRT_Realtime::LEGACY_CLIENT_MAX_WAIT,
					self::THEME_CLIENT_TIMEOUT
				)
			);
			echo '</p></div>';
		}
		echo '<form method="post" action="options.php">';
		settings_fields( self::GROUP );
		do_settings_sections( self::PAGE );
		submit_button();
		echo '</form>';
		self::render_status();
		echo '</div>';
	}

	/**
	 * The status panel data (also used by tests).
	 *
	 * @return array<string, mixed>
	 */
	public static function status(): array {
		$rt     = LMS_Realtime_Plugin::realtime();
		$status = array(
			'backend'  => $rt->backend(),
			'problems' => LMS_Realtime_Requirements::problems(),
			'guards'   => $rt->guards()->backends(),
			'breaker'  => $rt->guards()->breaker_status(),
			'mode'     => $rt->guards()->advertised_mode(),
			'metrics'  => $rt->metrics()->snapshot(),
			'rollout'  => array(
				'enabled' => (bool) get_option( 'lms_use_unified_longpoll', false ),
				'percent' => $rt->guards()->rollout()->percent(),
				'beta'    => count( (array) get_option( 'lms_longpoll_beta_users', array() ) ),
			),
			'daemon'   => array(
				'url'        => LMSRT_Realtime::daemon_url(),
				'secret_set' => '' !== LMSRT_Realtime::daemon_secret(),
				'enabled'    => $rt->daemon_enabled(),
			),
			'cron'     => array(
				'next'       => wp_next_scheduled( LMS_Realtime_Plugin::CRON_HOOK ),
				'last_purge' => get_option( 'lms_realtime_last_purge', null ),
			),
			'doctor'   => LMS_Realtime_Doctor::report(),
		);
		if ( $rt instanceof LMSRT_Unified_Long_Poll ) {
			$status['library'] = array(
				'version' => \LmsRealtime\Library::version(),
				'source'  => \LmsRealtime\Library::source(),
				'abi'     => \LmsRealtime\Library::ABI_VERSION,
			);
			$engine            = LMSRT_Unified_Long_Poll::engine( $rt->path() );
			$status['store']   = array(
				// A Redis URL's password stays out of the page.
				'path'   => LMSRT_Unified_Long_Poll::shown_store( $rt->path() ),
				'engine' => $engine,
			);
			if ( 'redis' === $engine ) {
				$status['store']['state_dir'] = LMSRT_Unified_Long_Poll::state_dir();
			} else {
				$status['store']['bytes'] = is_file( $rt->path() ) ? (int) filesize( $rt->path() ) : 0;
			}
			try {
				$status['store']['head'] = $rt->render_head_cursor();
			} catch ( \Throwable $e ) {
				$status['store']['error'] = $e->getMessage();
			}
			$native = $rt->guards()->native_metrics();
			if ( null !== $native ) {
				try {
					$status['native_health']  = $native->health();
					$status['native_metrics'] = $native->snapshot();
				} catch ( \Throwable $e ) {
					$status['native_metrics'] = array( 'error' => $e->getMessage() );
				}
			}
		}
		$internal = (string) get_option( 'lms_realtime_daemon_internal_url', '' );
		$probe    = '' !== $internal ? $internal : LMSRT_Realtime::daemon_url();
		if ( '' !== $probe ) {
			if ( '/' === $probe[0] ) {
				$probe = home_url( $probe );
			}
			$response                    = wp_remote_get( untrailingslashit( $probe ) . '/healthz', array( 'timeout' => 2 ) );
			$status['daemon']['healthz'] = is_wp_error( $response )
				? $response->get_error_message()
				: wp_remote_retrieve_response_code( $response ) . ' ' . substr( (string) wp_remote_retrieve_body( $response ), 0, 200 );
		}
		return $status;
	}

	/**
	 * Renders the status panel.
	 */
	private static function render_status(): void {
		$s = self::status();
		$m = $s['metrics'];
		echo '<h2>' . esc_html__( 'Status', 'lms-realtime' ) . '</h2>';
		$verdicts = array( __( 'Health (this site\'s PHP side):', 'lms-realtime' ) => $m['health'] );
		if ( isset( $s['native_health'] ) ) {
			$verdicts[ __( 'Health (host-wide: PHP and the daemon, last minute):', 'lms-realtime' ) ] = $s['native_health'];
		}
		foreach ( $verdicts as $label => $health ) {
			printf(
				'<p><strong>%s</strong> <span class="lmsrt-health lmsrt-health-%s">%s</span> %s</p>',
				esc_html( $label ),
				esc_attr( (string) $health['status'] ),
				esc_html( (string) $health['status'] ),
				esc_html( implode( '; ', (array) $health['reasons'] ) )
			);
		}
		$rows = array(
			__( 'Path', 'lms-realtime' )            => 'store' === $s['backend'] ? __( 'event store (lms-realtime)', 'lms-realtime' ) : __( 'legacy table (short polling)', 'lms-realtime' ),
			__( 'Problems', 'lms-realtime' )        => implode( ' ', $s['problems'] ),
			__( 'Library', 'lms-realtime' )         => isset( $s['library'] ) ? sprintf( /* translators: 1: version, 2: ABI version, 3: where it was loaded from. */ __( '%1$s (ABI %2$d, %3$s)', 'lms-realtime' ), $s['library']['version'], $s['library']['abi'], $s['library']['source'] ) : '—',
			__( 'Event store', 'lms-realtime' )     => isset( $s['store'] ) ? self::store_line( $s['store'] ) : '—',
			__( 'Guards', 'lms-realtime' )          => implode( ', ', array_map( static fn ( $k, $v ) => "$k: $v", array_keys( $s['guards'] ), $s['guards'] ) ),
			__( 'Circuit breaker', 'lms-realtime' ) => sprintf( /* translators: 1: breaker state, 2: consecutive failures. */ __( '%1$s (%2$d failures)', 'lms-realtime' ), $s['breaker']['state'], $s['breaker']['failures'] ),
			__( 'Advertised mode', 'lms-realtime' ) => $s['mode'],
			__( 'Rollout', 'lms-realtime' )         => sprintf( /* translators: 1: on or off, 2: percent, 3: number of beta users. */ __( '%1$s, %2$d%%, %3$d beta users', 'lms-realtime' ), $s['rollout']['enabled'] ? __( 'on', 'lms-realtime' ) : __( 'off', 'lms-realtime' ), $s['rollout']['percent'], $s['rollout']['beta'] ),
			__( 'Daemon', 'lms-realtime' )          => sprintf(
				'%s; %s; %s',
				'' !== $s['daemon']['url'] ? $s['daemon']['url'] : __( 'not configured', 'lms-realtime' ),
				$s['daemon']['enabled'] ? __( 'clients use it', 'lms-realtime' ) : __( 'clients do not use it (no URL, no secret, or no token issuer in the binding)', 'lms-realtime' ),
				$s['daemon']['healthz'] ?? ''
			),
			__( 'Requests', 'lms-realtime' )        => self::pairs( $m['requests'] ) . ' ' . sprintf( /* translators: %d: requests. */ __( '(%d in all)', 'lms-realtime' ), $m['requests_total'] ),
			__( 'Events', 'lms-realtime' )          => sprintf( /* translators: 1: events recorded, 2: events delivered, 3: polls that waited. */ __( 'recorded %1$d, delivered %2$d, polls that waited %3$d', 'lms-realtime' ), $m['events_recorded'], $m['events_delivered'], $m['polls_waited'] ),
			__( 'Delivery latency', 'lms-realtime' ) => self::latency( $m['delivery_ms'] ),
			__( 'Staleness', 'lms-realtime' )       => self::latency( $m['staleness_ms'] ),
			__( 'Errors', 'lms-realtime' )          => self::pairs( $m['errors'] ) . ' ' . sprintf( /* translators: %s: error rate in percent. */ __( '(rate %s%%)', 'lms-realtime' ), number_format_i18n( $m['error_rate'] * 100, 2 ) ),
			__( 'Refused', 'lms-realtime' )         => self::pairs( $m['refused'] ),
			__( 'Expiry cleanup', 'lms-realtime' )  => $s['cron']['next'] ? sprintf( /* translators: %s: date and time. */ __( 'next %s UTC', 'lms-realtime' ), gmdate( 'Y-m-d H:i:s', (int) $s['cron']['next'] ) ) : __( 'not scheduled', 'lms-realtime' ),
		);
		echo '<table class="widefat striped lmsrt-status"><tbody>';
		foreach ( $rows as $label => $value ) {
			echo '<tr><th scope="row">' . esc_html( $label ) . '</th><td>' . esc_html( '' === $value ? '—' : $value ) . '</td></tr>';
		}
		echo '</tbody></table>';
		if ( isset( $s['native_metrics'] ) ) {
			echo '<h3>' . esc_html__( 'Host-wide metrics (shared with the daemon)', 'lms-realtime' ) . '</h3><pre style="max-height:20em;overflow:auto">' . esc_html( (string) wp_json_encode( $s['native_metrics'], JSON_PRETTY_PRINT ) ) . '</pre>';
		}
		foreach ( array(
			'lms_realtime_reset_metrics' => __( 'Reset counters', 'lms-realtime' ),
			'lms_realtime_reset_breaker' => __( 'Close the circuit breaker', 'lms-realtime' ),
		) as $action => $label ) {
			echo '<form method="post" action="' . esc_url( admin_url( 'admin-post.php' ) ) . '" style="display:inline-block;margin:1em 1em 0 0">';
			echo '<input type="hidden" name="action" value="' . esc_attr( $action ) . '" />';
			wp_nonce_field( $action );
			submit_button( $label, 'secondary', 'submit', false );
			echo '</form>';
		}
		LMS_Realtime_Doctor::render( $s['doctor'] );
	}

	/**
	 * The status panel's store line: the engine, where the store is, and its head.
	 *
	 * @param array<string, mixed> $store `status()['store']`.
	 */
	private static function store_line( array $store ): string {
		$head = $store['head'] ?? ( $store['error'] ?? '' );
		if ( 'redis' === $store['engine'] ) {
			/* translators: 1: the Redis URL without its password, 2: head cursor, 3: this host's directory for the store's files. */
			return sprintf( __( 'Redis: %1$s, head %2$s (this host\'s files in %3$s)', 'lms-realtime' ), $store['path'], $head, $store['state_dir'] );
		}
		/* translators: 1: file, 2: size, 3: head cursor. */
		return sprintf( __( 'SQLite: %1$s, %2$s, head %3$s', 'lms-realtime' ), $store['path'], size_format( $store['bytes'] ), $head );
	}

	/**
	 * `k: v, ...`.
	 *
	 * @param array $pairs pairs.
	 */
	private static function pairs( array $pairs ): string {
		$out = array();
		foreach ( $pairs as $k => $v ) {
			$out[] = $k . ': ' . $v;
		}
		return implode( ', ', $out );
	}

	/**
	 * `n samples, p50 ≤ x ms, ...`.
	 *
	 * @param array $p percentiles.
	 */
	private static function latency( array $p ): string {
		if ( 0 === $p['count'] ) {
			return '—';
		}
		$top = LMS_Realtime_Metrics::BUCKETS[ count( LMS_Realtime_Metrics::BUCKETS ) - 1 ];
		$fmt = static fn ( $v ): string => $v > $top ? '> ' . $top : '≤ ' . $v;
		/* translators: 1: samples, 2-4: percentiles such as "≤ 25" or "> 30000". */
		return sprintf( __( '%1$d samples; p50 %2$s ms, p95 %3$s ms, p99 %4$s ms', 'lms-realtime' ), $p['count'], $fmt( $p['p50'] ), $fmt( $p['p95'] ), $fmt( $p['p99'] ) );
	}

	/**
	 * `admin-post.php?action=lms_realtime_reset_metrics`.
	 */
	public static function reset_metrics(): void {
		self::check_admin_post( 'lms_realtime_reset_metrics' );
		LMS_Realtime_Plugin::realtime()->metrics()->reset();
		self::back();
	}

	/**
	 * `admin-post.php?action=lms_realtime_reset_breaker`.
	 */
	public static function reset_breaker(): void {
		self::check_admin_post( 'lms_realtime_reset_breaker' );
		LMS_Realtime_Plugin::realtime()->guards()->breaker_reset();
		self::back();
	}

	/**
	 * Capability and nonce of an admin-post action.
	 *
	 * @param string $action the action (also the nonce action).
	 */
	public static function check_admin_post( string $action ): void {
		if ( ! current_user_can( self::capability() ) ) {
			wp_die( esc_html__( 'Sorry, you are not allowed to do that.', 'lms-realtime' ), 403 );
		}
		check_admin_referer( $action );
	}

	/**
	 * Back to the page.
	 */
	private static function back(): void {
		wp_safe_redirect( admin_url( 'options-general.php?page=' . self::PAGE ) );
		exit;
	}
}
