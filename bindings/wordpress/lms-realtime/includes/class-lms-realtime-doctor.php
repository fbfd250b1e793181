<?php
/**
 * The set-up check ("doctor"): which path is live, the PHP facts, and what to change.
 *
 * @package LMS_Realtime
 */

defined( 'ABSPATH' ) || exit;

/**
 * Tells the site owner how this PHP runs the plugin, and exactly what to change.
 *
 * `facts()` gathers what this PHP process is (SAPI, `ffi.enable`, `opcache.preload`, ...);
 * `report()` turns facts into the live path (`store` through the preloaded scope or through
 * `FFI::cdef()`, or `table`), the problem that keeps the store path off, and the documented
 * set-up that fixes it, with this installation's real paths:
 *
 * (i)   `ffi.enable=true`: each request parses the header;
 * (ii)  `ffi.enable=preload` with `ffi.preload` and `opcache.preload` (PHP-FPM's master runs as
 *       root, so `opcache.preload_user`, under which PHP refuses `FFI::load()`: the header is
 *       loaded by PHP itself, written once by `write-header.php`);
 * (iii) FFI unavailable: the plugin's table path (short polling), nothing to set.
 *
 * Shown on the settings page, in the admin notice, as JSON to administrators
 * (`admin-ajax.php?action=lms_realtime_doctor`, nonce `lms_realtime_doctor`) and as
 * `wp lmsrt doctor` where WP-CLI runs.
 */
final class LMS_Realtime_Doctor {

	/** The AJAX action (and nonce action) of the JSON report. */
	public const ACTION = 'lms_realtime_doctor';

	/**
	 * Hooks the JSON report and, under WP-CLI, the command.
	 */
	public static function register(): void {
		add_action( 'wp_ajax_' . self::ACTION, array( self::class, 'ajax' ) );
		if ( defined( 'WP_CLI' ) && WP_CLI ) {
			self::register_cli();
		}
	}

	/**
	 * Adds `wp lmsrt doctor`.
	 */
	public static function register_cli(): void {
		WP_CLI::add_command( 'lmsrt doctor', array( self::class, 'cli' ) );
	}

	// -- facts ------------------------------------------------------------------------------

	/**
	 * What this PHP process is, as far as the plugin is concerned.
	 *
	 * @return array<string, mixed>
	 */
	public static function facts(): array {
		$facts = array(
			'sapi'                 => PHP_SAPI,
			'php_version'          => PHP_VERSION,
			'user'                 => self::process_user(),
			'ffi_loaded'           => extension_loaded( 'ffi' ),
			'ffi_enable'           => (string) ini_get( 'ffi.enable' ),
			'ffi_preload'          => (string) ini_get( 'ffi.preload' ),
			'opcache_enabled'      => extension_loaded( 'Zend OPcache' ) && (bool) ini_get( 'cli' === PHP_SAPI ? 'opcache.enable_cli' : 'opcache.enable' ),
			'opcache_preload'      => (string) ini_get( 'opcache.preload' ),
			'opcache_preload_user' => (string) ini_get( 'opcache.preload_user' ),
			'scope_loaded'         => false,
			'pdo_sqlite'           => extension_loaded( 'pdo_sqlite' ),
			'disabled'             => defined( 'LMSRT_DISABLED' ) && LMSRT_DISABLED,
			'plugin_dir'           => realpath( LMSRT_PLUGIN_DIR ) ? realpath( LMSRT_PLUGIN_DIR ) : LMSRT_PLUGIN_DIR,
			'binding_dir'          => '',
			'requirements'         => LMS_Realtime_Requirements::problems(),
			'library_source'       => '',
			'library_tried'        => '',
			'preload_script'       => '',
			'preload_status'       => null,
			'ini_loaded_file'      => (string) php_ini_loaded_file(),
			'ini_scan_dir'         => self::scan_dir(),
			'integration'          => LMS_Realtime_Plugin::integration(),
		);
		try {
			if ( class_exists( 'LmsRealtime\\Library' ) && class_exists( 'LmsRealtime\\EventStore' ) ) {
				$facts['binding_dir']    = \LmsRealtime\Library::packageDir();
				// Asked through the binding: under ffi.enable=preload only preloaded code may call FFI::scope().
				$facts['scope_loaded']   = \LmsRealtime\Library::scopeLoaded();
				$facts['library_source'] = \LmsRealtime\Library::source();
				$facts['preload_script'] = \LmsRealtime\Library::preloadScript();
				$facts['preload_status'] = \LmsRealtime\Library::preloadStatus();
				$facts['library_tried']  = self::library_tried( $facts );
			}
		} catch ( \Throwable $e ) {
			$facts['binding_dir'] = '';
		}
		return $facts;
	}

	/**
	 * The library this request loaded or would load.
	 *
	 * @param array<string, mixed> $facts facts so far.
	 */
	private static function library_tried( array $facts ): string {
		$source = (string) $facts['library_source'];
		if ( '' !== $source && ! str_starts_with( $source, 'scope ' ) ) {
			return $source;
		}
		if ( $facts['scope_loaded'] || ( is_array( $facts['preload_status'] ) && ! empty( $facts['preload_status']['library'] ) ) ) {
			if ( is_array( $facts['preload_status'] ) && ! empty( $facts['preload_status']['library'] ) ) {
				return (string) $facts['preload_status']['library'];
			}
			$header = (string) $facts['ffi_preload'];
			// phpcs:ignore WordPress.WP.AlternativeFunctions.file_get_contents_file_get_contents -- a local header file.
			if ( '' !== $header && is_readable( $header ) && preg_match( '/^#define FFI_LIB "(.*)"$/m', (string) file_get_contents( $header ), $m ) ) {
				return stripslashes( $m[1] );
			}
		}
		$path = LMS_Realtime_Requirements::library_path();
		if ( null !== $path ) {
			return $path;
		}
		try {
			return \LmsRealtime\Library::resolvePath();
		} catch ( \Throwable $e ) {
			return '';
		}
	}

	/**
	 * The user this process runs as.
	 */
	private static function process_user(): string {
		if ( function_exists( 'posix_geteuid' ) && function_exists( 'posix_getpwuid' ) ) {
			$pw = posix_getpwuid( posix_geteuid() );
			return is_array( $pw ) ? (string) $pw['name'] : (string) posix_geteuid();
		}
		return '';
	}

	/**
	 * The directory PHP scans for extra .ini files ('' if none).
	 */
	private static function scan_dir(): string {
		$scanned = php_ini_scanned_files();
		if ( is_string( $scanned ) && '' !== trim( $scanned ) ) {
			return dirname( trim( explode( ',', $scanned )[0] ) );
		}
		return defined( 'PHP_CONFIG_FILE_SCAN_DIR' ) ? (string) PHP_CONFIG_FILE_SCAN_DIR : '';
	}

	// -- the report -------------------------------------------------------------------------

	/**
	 * The report: `live` (`store` or `table`), `via` (`scope`, `cdef` or ''), `label`, `setup`
	 * (the documented set-up this PHP's `ffi.enable` is: `ffi`, `preload` or `table`), `facts`,
	 * `problems` (each `problem`, `fix`, `setup`, `commands`, `ini`, `ini_file`), `notes` and the
	 * three `setups` with real paths.
	 *
	 * @param array<string, mixed>|null $facts facts (default: this process's).
	 * @return array<string, mixed>
	 */
	public static function report( ?array $facts = null ): array {
		$f      = $facts ?? self::facts();
		$live   = array() === $f['requirements'] ? 'store' : 'table';
		$via    = '';
		$setups = self::setups( $f );
		if ( 'store' === $live ) {
			$via = $f['scope_loaded'] && str_starts_with( (string) $f['library_source'], 'scope ' ) ? 'scope' : 'cdef';
		}
		$labels   = array(
			'scope' => __( 'event store, through the preloaded FFI scope LMSRT', 'lms-realtime' ),
			'cdef'  => __( 'event store, through FFI::cdef() (this request parsed the header)', 'lms-realtime' ),
			''      => __( 'the plugin\'s table (short polling)', 'lms-realtime' ),
		);
		$problems = 'table' === $live ? array( self::diagnose( $f, $setups ) ) : array();
		$notes    = array();
		if ( 'cdef' === $via && 'cli' !== $f['sapi'] ) {
			$notes[] = __( 'Every request parses the FFI header, and ffi.enable=true lets any PHP code on the site call C functions: set-up (ii) avoids both.', 'lms-realtime' );
		}
		if ( 'cli' === $f['sapi'] ) {
			$notes[] = __( 'These are the PHP CLI\'s settings; the web server\'s PHP may differ: see Settings → LMS Chat Realtime for what it runs.', 'lms-realtime' );
		}
		return array(
			'live'     => $live,
			'via'      => $via,
			'label'    => $labels[ $via ],
			'setup'    => self::configured_setup( $f ),
			'facts'    => $f,
			'problems' => $problems,
			'notes'    => $notes,
			'setups'   => $setups,
		);
	}

	/**
	 * Which documented set-up this PHP's settings are.
	 *
	 * @param array<string, mixed> $f facts.
	 */
	private static function configured_setup( array $f ): string {
		if ( ! $f['ffi_loaded'] || self::ffi_off( (string) $f['ffi_enable'] ) ) {
			return 'table';
		}
		return 'preload' === strtolower( (string) $f['ffi_enable'] ) ? 'preload' : 'ffi';
	}

	/**
	 * Whether an `ffi.enable` value turns FFI off.
	 *
	 * @param string $value the setting.
	 */
	private static function ffi_off( string $value ): bool {
		return in_array( strtolower( trim( $value ) ), array( '', '0', 'false', 'off', 'no' ), true );
	}

	/**
	 * What keeps the store path off, and what to change.
	 *
	 * @param array<string, mixed>               $f      facts.
	 * @param array<string, array<string, mixed>> $setups the set-ups.
	 * @return array<string, mixed>
	 */
	private static function diagnose( array $f, array $setups ): array {
		$reason = (string) ( $f['requirements'][0] ?? '' );
		$fix    = static fn ( string $problem, string $fix, ?string $setup = null, array $extra = array() ): array => array(
			'problem'  => $problem,
			'fix'      => $fix,
			'setup'    => $setup,
			'commands' => null === $setup ? array() : $setups[ $setup ]['commands'],
			'ini'      => array_merge( $extra, null === $setup ? array() : $setups[ $setup ]['ini'] ),
			'ini_file' => null === $setup ? '' : $setups[ $setup ]['ini_file'],
		);
		if ( $f['disabled'] ) {
			return $fix( $reason, __( 'Remove define( \'LMSRT_DISABLED\', true ); from wp-config.php.', 'lms-realtime' ) );
		}
		if ( '' === $f['binding_dir'] ) {
			return $fix( $reason, __( 'Install the plugin again from its zip: it bundles the PHP binding in lib/php-ext/ (or define LMSRT_PHP_PACKAGE as the binding\'s directory).', 'lms-realtime' ) );
		}
		if ( ! $f['ffi_loaded'] ) {
			return $fix( $reason, __( 'Load PHP\'s FFI extension, then use set-up (ii):', 'lms-realtime' ), 'preload', array( 'extension=ffi' ) );
		}
		if ( self::ffi_off( (string) $f['ffi_enable'] ) ) {
			return $fix( $reason, __( 'Use set-up (ii) (or ffi.enable=true, set-up (i)):', 'lms-realtime' ), 'preload' );
		}
		if ( 'preload' === strtolower( (string) $f['ffi_enable'] ) && 'cli' !== $f['sapi'] && ! $f['scope_loaded'] ) {
			$ours   = '' !== $f['opcache_preload'] && ( realpath( (string) $f['opcache_preload'] ) ? realpath( (string) $f['opcache_preload'] ) : $f['opcache_preload'] ) === $f['preload_script'];
			$status = is_array( $f['preload_status'] ) ? $f['preload_status'] : null;
			if ( $ours && null !== $status && empty( $status['ok'] ) ) {
				$problem = sprintf(
					/* translators: 1: the preload script, 2: date and time, 3: the user it ran as, 4: the error. */
					__( 'opcache.preload ran %1$s at %2$s (as %3$s) and it failed: %4$s', 'lms-realtime' ),
					$f['preload_script'],
					gmdate( 'Y-m-d H:i:s', (int) $status['time'] ) . ' UTC',
					(string) ( $status['user'] ?? '?' ),
					(string) $status['error']
				);
				$how     = str_contains( (string) $status['error'], 'opcache.preload_user' )
					? __( 'PHP refuses FFI::load() under opcache.preload_user: let PHP load the header at start-up with ffi.preload (set-up (ii)):', 'lms-realtime' )
					: __( 'Use set-up (ii): PHP loads the header at start-up (ffi.preload), and the preload script checks it:', 'lms-realtime' );
				return $fix( $problem, $how, 'preload' );
			}
			if ( '' === $f['opcache_preload'] ) {
				$problem = __( 'ffi.enable=preload lets requests use only preloaded FFI headers, and nothing preloads lms-realtime (opcache.preload is not set).', 'lms-realtime' );
			} elseif ( $ours ) {
				$problem = sprintf(
					/* translators: %s: the preload script. */
					__( 'opcache.preload=%s is set, but the FFI scope LMSRT is not loaded and the script left no record this PHP can read (is opcache enabled for this PHP?).', 'lms-realtime' ),
					$f['preload_script']
				);
			} else {
				$problem = sprintf(
					/* translators: %s: the configured preload script. */
					__( 'opcache.preload=%s does not load lms-realtime.', 'lms-realtime' ),
					$f['opcache_preload']
				);
			}
			return $fix( $problem, __( 'Use set-up (ii):', 'lms-realtime' ), 'preload' );
		}
		if ( str_contains( $reason, 'ABI version' ) ) {
			return $fix( $reason, __( 'Install the library that came with this version of the plugin (lib/liblms_realtime.so in its zip), write the header again and restart PHP.', 'lms-realtime' ) );
		}
		return $fix(
			$reason,
			sprintf(
				/* translators: %s: the bundled library's path. */
				__( 'Put the library at %s (build.sh --with-library bundles it there), or define( \'LMSRT_LIBRARY\', \'/path/to/liblms_realtime.so\' ); in wp-config.php.', 'lms-realtime' ),
				$f['plugin_dir'] . '/lib/liblms_realtime.so'
			)
		);
	}

	/**
	 * The three documented set-ups, with this installation's paths.
	 *
	 * @param array<string, mixed> $f facts.
	 * @return array<string, array<string, mixed>>
	 */
	public static function setups( array $f ): array {
		$ext     = '' !== $f['binding_dir'] ? (string) $f['binding_dir'] : $f['plugin_dir'] . '/lib/php-ext';
		$bundled = $f['plugin_dir'] . '/lib/liblms_realtime.so';
		$library = is_file( $bundled ) ? $bundled : (string) $f['library_tried'];
		if ( '' !== $library && ! str_starts_with( $library, '/' ) ) {
			$library = '';
		}
		$ini_dir  = '' !== $f['ini_loaded_file'] ? dirname( (string) $f['ini_loaded_file'] ) : '/etc/php/' . PHP_MAJOR_VERSION . '.' . PHP_MINOR_VERSION . '/fpm';
		$ini_file = '' !== $f['ini_scan_dir'] ? $f['ini_scan_dir'] . '/99-lms-realtime.ini' : ( '' !== $f['ini_loaded_file'] ? (string) $f['ini_loaded_file'] : 'php.ini' );
		$header   = $ini_dir . '/lms_realtime.h';
		$user     = 'fpm-fcgi' === $f['sapi'] && '' !== $f['user'] ? (string) $f['user'] : 'www-data';
		$version  = PHP_MAJOR_VERSION . '.' . PHP_MINOR_VERSION;
		return array(
			'ffi'     => array(
				'title'    => __( '(i) ffi.enable=true', 'lms-realtime' ),
				'ini_file' => $ini_file,
				'commands' => array(),
				'ini'      => array( 'ffi.enable=true' ),
				'notes'    => __( 'Each request parses the FFI header (about 13 µs), and any PHP code on the site may call C functions. For PHP-FPM, php_admin_value[ffi.enable] = true in the pool does the same for one pool.', 'lms-realtime' ),
			),
			'preload' => array(
				'title'    => __( '(ii) ffi.enable=preload with ffi.preload and opcache.preload (PHP-FPM\'s master runs as root)', 'lms-realtime' ),
				'ini_file' => $ini_file,
				'commands' => array(
					trim( 'php ' . $ext . '/bin/write-header.php ' . $header . ' ' . $library ),
					'php-fpm' . $version . ' -t',
					'systemctl restart php' . $version . '-fpm',
				),
				'ini'      => array(
					'ffi.enable=preload',
					'ffi.preload=' . $header,
					'opcache.enable=1',
					'opcache.preload=' . $ext . '/preload.php',
					'opcache.preload_user=' . $user,
				),
				'notes'    => __( 'Run the three commands again after each update of the plugin. PHP does not start while the header, its library or the preload script is missing: remove these lines (and restart PHP-FPM) before deleting the plugin.', 'lms-realtime' ),
			),
			'table'   => array(
				'title'    => __( '(iii) FFI unavailable: the plugin\'s table path', 'lms-realtime' ),
				'ini_file' => '',
				'commands' => array(),
				'ini'      => array(),
				'notes'    => __( 'Nothing to set: events go to the plugin\'s own table and the chat short-polls admin-ajax.php (no long poll).', 'lms-realtime' ),
			),
		);
	}

	// -- where it is shown ------------------------------------------------------------------

	/**
	 * `admin-ajax.php?action=lms_realtime_doctor&_wpnonce=...`: the report as JSON, for
	 * administrators.
	 */
	public static function ajax(): void {
		if ( ! current_user_can( LMS_Realtime_Settings::capability() ) ) {
			wp_send_json_error( array( 'message' => __( 'Sorry, you are not allowed to do that.', 'lms-realtime' ) ), 403 );
		}
		check_ajax_referer( self::ACTION );
		wp_send_json_success( self::report() );
	}

	/**
	 * The URL of the JSON report, with its nonce.
	 */
	public static function ajax_url(): string {
		return wp_nonce_url( admin_url( 'admin-ajax.php?action=' . self::ACTION ), self::ACTION );
	}

	/**
	 * A problem's fix: the sentence, then the commands and the ini lines.
	 *
	 * @param array<string, mixed> $problem one of the report's problems.
	 */
	public static function render_fix( array $problem ): void {
		echo '<p>' . esc_html( $problem['fix'] ) . '</p>';
		self::render_lines( $problem );
	}

	/**
	 * Commands and ini lines as `<pre>` blocks.
	 *
	 * @param array<string, mixed> $what a problem or a set-up.
	 */
	private static function render_lines( array $what ): void {
		if ( array() !== $what['commands'] ) {
			echo '<pre class="lmsrt-commands">' . esc_html( implode( "\n", $what['commands'] ) ) . '</pre>';
		}
		if ( array() !== $what['ini'] ) {
			if ( '' !== $what['ini_file'] ) {
				/* translators: %s: an ini file. */
				echo '<p>' . esc_html( sprintf( __( 'In %s:', 'lms-realtime' ), $what['ini_file'] ) ) . '</p>';
			}
			echo '<pre class="lmsrt-ini">' . esc_html( implode( "\n", $what['ini'] ) ) . '</pre>';
		}
	}

	/**
	 * The set-up check on the settings page.
	 *
	 * @param array<string, mixed> $report the report.
	 */
	public static function render( array $report ): void {
		$f = $report['facts'];
		echo '<h2 id="lmsrt-doctor">' . esc_html__( 'Set-up check', 'lms-realtime' ) . '</h2>';
		echo '<p><strong>' . esc_html__( 'Live path:', 'lms-realtime' ) . '</strong> <span class="lmsrt-live" data-live="' . esc_attr( $report['live'] ) . '" data-via="' . esc_attr( $report['via'] ) . '">' . esc_html( $report['label'] ) . '</span></p>';
		$ways = array(
			'theme-extends' => __( 'the LMS chat theme\'s LMS_Chat_Realtime extends LMSRT_Chat_Realtime_Base (way in (a))', 'lms-realtime' ),
			'theme-hooks'   => __( 'the LMS chat theme, unmodified: its hooks, and its lms_unified_long_poll action answered by the plugin (way in (b))', 'lms-realtime' ),
			'standalone'    => __( 'no LMS chat theme: the chat user is the WordPress user; channel access from the lms_realtime_user_can_access_channel filter', 'lms-realtime' ),
		);
		$way  = (string) ( $f['integration'] ?? '' );
		if ( isset( $ways[ $way ] ) ) {
			echo '<p><strong>' . esc_html__( 'Integration:', 'lms-realtime' ) . '</strong> <span class="lmsrt-integration" data-integration="' . esc_attr( $way ) . '">' . esc_html( $ways[ $way ] ) . '</span></p>';
		}
		foreach ( $report['problems'] as $problem ) {
			echo '<div class="notice notice-warning inline"><p><strong>' . esc_html__( 'Problem:', 'lms-realtime' ) . '</strong> ' . esc_html( $problem['problem'] ) . '</p>';
			self::render_fix( $problem );
			echo '</div>';
		}
		foreach ( $report['notes'] as $note ) {
			echo '<p class="description">' . esc_html( $note ) . '</p>';
		}
		$status = is_array( $f['preload_status'] ) ? $f['preload_status'] : null;
		$rows   = array(
			'SAPI'                 => $f['sapi'] . ' (PHP ' . $f['php_version'] . ( '' !== $f['user'] ? ', ' . $f['user'] : '' ) . ')',
			'ffi'                  => $f['ffi_loaded'] ? __( 'loaded', 'lms-realtime' ) : __( 'not loaded', 'lms-realtime' ),
			'ffi.enable'           => self::ffi_off( (string) $f['ffi_enable'] ) ? 'false' : ( '1' === $f['ffi_enable'] ? 'true' : $f['ffi_enable'] ),
			'ffi.preload'          => $f['ffi_preload'],
			'opcache'              => $f['opcache_enabled'] ? __( 'enabled', 'lms-realtime' ) : __( 'disabled', 'lms-realtime' ),
			'opcache.preload'      => $f['opcache_preload'],
			'opcache.preload_user' => $f['opcache_preload_user'],
			__( 'FFI scope LMSRT', 'lms-realtime' ) => $f['scope_loaded'] ? __( 'loaded', 'lms-realtime' ) : __( 'not loaded', 'lms-realtime' ),
			__( 'Library', 'lms-realtime' )         => $f['library_tried'],
			__( 'Preload record', 'lms-realtime' )  => null === $status ? __( 'none', 'lms-realtime' ) : sprintf(
				/* translators: 1: ok or failed, 2: date and time, 3: how, 4: the error. */
				__( '%1$s at %2$s %3$s %4$s', 'lms-realtime' ),
				empty( $status['ok'] ) ? __( 'failed', 'lms-realtime' ) : __( 'ok', 'lms-realtime' ),
				gmdate( 'Y-m-d H:i:s', (int) $status['time'] ) . ' UTC',
				(string) ( $status['via'] ?? '' ),
				(string) ( $status['error'] ?? '' )
			),
			'pdo_sqlite'           => $f['pdo_sqlite'] ? __( 'available', 'lms-realtime' ) : __( 'not available', 'lms-realtime' ),
			__( 'PHP binding', 'lms-realtime' )     => $f['binding_dir'],
		);
		echo '<table class="widefat striped lmsrt-doctor"><tbody>';
		foreach ( $rows as $label => $value ) {
			echo '<tr><th scope="row">' . esc_html( (string) $label ) . '</th><td><code>' . esc_html( '' === (string) $value ? '—' : (string) $value ) . '</code></td></tr>';
		}
		echo '</tbody></table>';
		echo '<h3>' . esc_html__( 'PHP set-ups', 'lms-realtime' ) . '</h3>';
		foreach ( $report['setups'] as $key => $setup ) {
			echo '<h4>' . esc_html( $setup['title'] ) . ( $key === $report['setup'] ? ' — ' . esc_html__( 'this PHP\'s ffi.enable', 'lms-realtime' ) : '' ) . '</h4>';
			self::render_lines( $setup );
			echo '<p class="description">' . esc_html( $setup['notes'] ) . '</p>';
		}
		echo '<p><a href="' . esc_url( self::ajax_url() ) . '" class="lmsrt-doctor-json">' . esc_html__( 'This check as JSON', 'lms-realtime' ) . '</a></p>';
	}

	/**
	 * The report as text lines (WP-CLI).
	 *
	 * @param array<string, mixed> $report the report.
	 * @return string[]
	 */
	public static function lines( array $report ): array {
		$f     = $report['facts'];
		$lines = array(
			'Live path: ' . $report['live'] . ( '' !== $report['via'] ? ' (' . $report['via'] . ')' : '' ) . ' - ' . $report['label'],
		);
		foreach ( array( 'sapi', 'php_version', 'user', 'ffi_loaded', 'ffi_enable', 'ffi_preload', 'opcache_enabled', 'opcache_preload', 'opcache_preload_user', 'scope_loaded', 'library_tried', 'pdo_sqlite', 'binding_dir' ) as $key ) {
			$value   = $f[ $key ];
			$lines[] = sprintf( '  %-21s %s', $key . ':', is_bool( $value ) ? ( $value ? 'yes' : 'no' ) : (string) $value );
		}
		$status  = is_array( $f['preload_status'] ) ? $f['preload_status'] : null;
		$lines[] = sprintf( '  %-21s %s', 'preload_status:', null === $status ? 'none' : ( empty( $status['ok'] ) ? 'failed: ' . $status['error'] : 'ok (' . $status['via'] . ')' ) );
		foreach ( $report['problems'] as $p ) {
			$lines[] = 'Problem: ' . $p['problem'];
			$lines[] = 'Fix: ' . $p['fix'];
			foreach ( $p['commands'] as $c ) {
				$lines[] = '  $ ' . $c;
			}
			if ( array() !== $p['ini'] ) {
				$lines[] = '  in ' . $p['ini_file'] . ':';
				foreach ( $p['ini'] as $i ) {
					$lines[] = '    ' . $i;
				}
			}
		}
		foreach ( $report['notes'] as $n ) {
			$lines[] = 'Note: ' . $n;
		}
		return $lines;
	}

	/**
	 * Checks how this PHP runs LMS Chat Realtime: the live path, the PHP facts, and what to change.
	 *
	 * ## OPTIONS
	 *
	 * [--format=<format>]
	 * : Output format.
	 * ---
	 * default: text
	 * options:
	 *   - text
	 *   - json
	 * ---
	 *
	 * ## EXAMPLES
	 *
	 *     wp lmsrt doctor
	 *     wp lmsrt doctor --format=json
	 *
	 * @param string[]              $args       positional arguments (none).
	 * @param array<string, string> $assoc_args `format`.
	 * @SuppressWarnings(PHPMD.UnusedFormalParameter) WP-CLI passes both.
	 */
	public static function cli( $args = array(), $assoc_args = array() ): void {
		$report = self::report();
		if ( 'json' === ( $assoc_args['format'] ?? 'text' ) ) {
			WP_CLI::line( (string) wp_json_encode( $report, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES ) );
			return;
		}
		foreach ( self::lines( $report ) as $line ) {
			WP_CLI::line( $line );
		}
		if ( 'store' === $report['live'] ) {
			WP_CLI::success( 'The event store is live.' );
		} else {
			WP_CLI::error( 'The event store is not in use: the chat runs on the plugin\'s table path.' );
		}
	}
}
