<?php
/**
 * The set-up check: the live path, the facts, the fixes with real paths; its JSON action and
 * its WP-CLI command.
 *
 * @package LMS_Realtime
 */

// phpcs:disable WordPress.Files.FileName,Generic.Files.OneObjectStructurePerFile

if ( ! class_exists( 'WP_CLI' ) ) {
	/**
	 * A stand-in for WP-CLI (not installable here): records what the command prints; error()
	 * ends the command, as WP-CLI's does, by throwing.
	 */
	class WP_CLI {
		/**
		 * Calls: [method, arguments].
		 *
		 * @var array<int, array{0: string, 1: array}>
		 */
		public static array $calls = array();

		/**
		 * Records a call.
		 *
		 * @param string $name method.
		 * @param array  $args arguments.
		 * @throws RuntimeException From error().
		 */
		public static function __callStatic( string $name, array $args ) {
			self::$calls[] = array( $name, $args );
			if ( 'error' === $name ) {
				throw new RuntimeException( 'WP_CLI::error: ' . $args[0] );
			}
		}
	}
}

/**
 * LMS_Realtime_Doctor.
 */
final class DoctorTest extends LMSRT_TestCase {

	/**
	 * Facts of a PHP-FPM worker, as facts() gathers them, changed by `$changes`.
	 *
	 * @param array<string, mixed> $changes facts to change.
	 * @return array<string, mixed>
	 */
	private function fpm_facts( array $changes ): array {
		$facts = LMS_Realtime_Doctor::facts();
		return array_merge(
			$facts,
			array(
				'sapi'                 => 'fpm-fcgi',
				'user'                 => 'www-data',
				'ini_loaded_file'      => '/etc/php/8.2/fpm/php.ini',
				'ini_scan_dir'         => '/etc/php/8.2/fpm/conf.d',
				'opcache_preload'      => '',
				'opcache_preload_user' => '',
				'ffi_preload'          => '',
				'scope_loaded'         => false,
				'preload_status'       => null,
				'library_source'       => '',
			),
			$changes
		);
	}

	/**
	 * The set-up (ii) lines for this installation.
	 *
	 * @return string[]
	 */
	private function preload_lines(): array {
		return array(
			'ffi.enable=preload',
			'ffi.preload=/etc/php/8.2/fpm/lms_realtime.h',
			'opcache.enable=1',
			'opcache.preload=' . \LmsRealtime\Library::packageDir() . '/preload.php',
			'opcache.preload_user=www-data',
		);
	}

	public function test_the_check_says_how_the_plugin_meets_the_theme(): void {
		$report = LMS_Realtime_Doctor::report();
		$this->assertSame( 'standalone', $report['facts']['integration'], 'no LMS theme on this site' );
		ob_start();
		LMS_Realtime_Doctor::render( $report );
		$this->assertStringContainsString( 'data-integration="standalone"', (string) ob_get_clean() );
	}

	public function test_this_php_runs_the_store_through_cdef(): void {
		$r = LMS_Realtime_Doctor::report();
		$this->assertSame( 'store', $r['live'] );
		$this->assertSame( 'cdef', $r['via'], 'PHPUnit runs with ffi.enable=1, without preload' );
		// PHPUnit cannot change ffi.enable (a start-up setting); the CLI may use FFI::cdef() under preload too.
		$this->assertSame( 'preload' === ini_get( 'ffi.enable' ) ? 'preload' : 'ffi', $r['setup'] );
		$this->assertSame( array(), $r['problems'] );
		$f = $r['facts'];
		$this->assertSame( 'cli', $f['sapi'] );
		$this->assertTrue( $f['ffi_loaded'] );
		$this->assertFalse( $f['scope_loaded'] );
		$this->assertSame( \LmsRealtime\Library::source(), $f['library_tried'] );
		$this->assertFileExists( $f['library_tried'] );
		$this->assertSame( extension_loaded( 'pdo_sqlite' ), $f['pdo_sqlite'] );
		foreach ( array( 'ffi_enable', 'opcache_preload', 'opcache_preload_user', 'ffi_preload', 'preload_status' ) as $key ) {
			$this->assertArrayHasKey( $key, $f );
		}
	}

	public function test_the_setups_carry_the_installed_paths(): void {
		$s   = LMS_Realtime_Doctor::report( $this->fpm_facts( array() ) )['setups'];
		$ext = \LmsRealtime\Library::packageDir();
		$this->assertSame( array( 'ffi.enable=true' ), $s['ffi']['ini'] );
		$this->assertSame( $this->preload_lines(), $s['preload']['ini'] );
		$this->assertSame( '/etc/php/8.2/fpm/conf.d/99-lms-realtime.ini', $s['preload']['ini_file'] );
		$this->assertStringStartsWith( 'php ' . $ext . '/bin/write-header.php /etc/php/8.2/fpm/lms_realtime.h', $s['preload']['commands'][0] );
		$this->assertSame( array( 'php-fpm8.2 -t', 'systemctl restart php8.2-fpm' ), array_slice( $s['preload']['commands'], 1 ) );
		$this->assertSame( array(), $s['table']['ini'] );
		$this->assertStringStartsWith( '/', $ext );
		$this->assertFileExists( $ext . '/preload.php' );
		$this->assertFileExists( $ext . '/bin/write-header.php' );
	}

	public function test_ffi_disabled_runs_the_table_and_names_set_up_ii(): void {
		$r = LMS_Realtime_Doctor::report(
			$this->fpm_facts(
				array(
					'ffi_enable'   => '',
					'requirements' => array( 'FFI is disabled (ffi.enable=0).' ),
				)
			)
		);
		$this->assertSame( 'table', $r['live'] );
		$this->assertSame( '', $r['via'] );
		$this->assertSame( 'table', $r['setup'] );
		$this->assertCount( 1, $r['problems'] );
		$p = $r['problems'][0];
		$this->assertSame( 'FFI is disabled (ffi.enable=0).', $p['problem'] );
		$this->assertSame( 'preload', $p['setup'] );
		$this->assertSame( $this->preload_lines(), $p['ini'] );
	}

	public function test_a_failed_preload_is_reported_with_its_reason_and_the_ffi_preload_fix(): void {
		$script = \LmsRealtime\Library::preloadScript();
		$r      = LMS_Realtime_Doctor::report(
			$this->fpm_facts(
				array(
					'ffi_enable'           => 'preload',
					'opcache_preload'      => $script,
					'opcache_preload_user' => 'www-data',
					'requirements'         => array( 'ffi.enable=preload allows FFI only for preloaded headers' ),
					'preload_status'       => array(
						'ok'    => false,
						'error' => 'FFI::load() failed (FFI::load() doesn\'t work in conjunction with "opcache.preload_user". Use "ffi.preload" instead.)',
						'time'  => 1700000000,
						'user'  => 'www-data',
					),
				)
			)
		);
		$this->assertSame( 'table', $r['live'] );
		$this->assertSame( 'preload', $r['setup'] );
		$p = $r['problems'][0];
		$this->assertStringContainsString( 'opcache.preload ran ' . $script . ' at 2023-11-14 22:13:20 UTC (as www-data) and it failed: FFI::load() failed', $p['problem'] );
		$this->assertStringContainsString( 'PHP refuses FFI::load() under opcache.preload_user', $p['fix'] );
		$this->assertContains( 'ffi.preload=/etc/php/8.2/fpm/lms_realtime.h', $p['ini'] );
		$this->assertSame( $this->preload_lines(), $p['ini'] );
	}

	public function test_preload_mode_without_any_preload_says_so(): void {
		$r = LMS_Realtime_Doctor::report(
			$this->fpm_facts(
				array(
					'ffi_enable'   => 'preload',
					'requirements' => array( 'ffi.enable=preload allows FFI only for preloaded headers' ),
				)
			)
		);
		$this->assertStringContainsString( 'opcache.preload is not set', $r['problems'][0]['problem'] );
		$this->assertSame( $this->preload_lines(), $r['problems'][0]['ini'] );
	}

	public function test_the_preloaded_scope_is_the_live_path_when_loaded(): void {
		$r = LMS_Realtime_Doctor::report(
			$this->fpm_facts(
				array(
					'ffi_enable'     => 'preload',
					'scope_loaded'   => true,
					'library_source' => 'scope LMSRT',
					'requirements'   => array(),
				)
			)
		);
		$this->assertSame( 'store', $r['live'] );
		$this->assertSame( 'scope', $r['via'] );
		$this->assertSame( array(), $r['problems'] );
		$this->assertSame( array(), $r['notes'] );
	}

	public function test_a_missing_library_points_at_the_bundled_place(): void {
		$r = LMS_Realtime_Doctor::report(
			$this->fpm_facts(
				array(
					'ffi_enable'   => '1',
					'requirements' => array( 'The lms-realtime library could not be loaded: lms-realtime library not found' ),
				)
			)
		);
		$this->assertStringContainsString( realpath( LMSRT_PLUGIN_DIR ) . '/lib/liblms_realtime.so', $r['problems'][0]['fix'] );
		$this->assertStringContainsString( 'LMSRT_LIBRARY', $r['problems'][0]['fix'] );
	}

	public function test_the_json_action_needs_the_capability_and_the_nonce(): void {
		$editor = $this->user( 'editor' );
		$admin  = $this->user( 'administrator' );
		$denied = $this->ajax( LMS_Realtime_Doctor::ACTION, array( '_wpnonce' => $this->nonce( $editor, LMS_Realtime_Doctor::ACTION ) ), $editor );
		$this->assertFalse( $denied['success'] );
		$this->assertSame( array( 'raw' => '' ), $this->ajax( LMS_Realtime_Doctor::ACTION, array( '_wpnonce' => 'forged' ), $admin ), 'a forged nonce: wp_die(-1), nothing sent' );
		$ok = $this->ajax( LMS_Realtime_Doctor::ACTION, array( '_wpnonce' => $this->nonce( $admin, LMS_Realtime_Doctor::ACTION ) ), $admin );
		$this->assertTrue( $ok['success'], wp_json_encode( $ok ) );
		$this->assertSame( 'store', $ok['data']['live'] );
		$this->assertSame( 'cli', $ok['data']['facts']['sapi'] );
	}

	public function test_the_wp_cli_command(): void {
		WP_CLI::$calls = array();
		LMS_Realtime_Doctor::register_cli();
		$this->assertSame( 'add_command', WP_CLI::$calls[0][0] );
		list( $name, $callable ) = WP_CLI::$calls[0][1];
		$this->assertSame( 'lmsrt doctor', $name );
		$this->assertIsCallable( $callable );

		WP_CLI::$calls = array();
		call_user_func( $callable, array(), array( 'format' => 'json' ) );
		$this->assertCount( 1, WP_CLI::$calls );
		$this->assertSame( 'line', WP_CLI::$calls[0][0] );
		$json = json_decode( WP_CLI::$calls[0][1][0], true );
		$this->assertSame( 'store', $json['live'] );
		$this->assertSame( 'cdef', $json['via'] );

		WP_CLI::$calls = array();
		call_user_func( $callable, array(), array() );
		$lines = array_column( array_filter( WP_CLI::$calls, static fn ( $c ) => 'line' === $c[0] ), 1 );
		$text  = implode( "\n", array_column( $lines, 0 ) );
		$this->assertStringStartsWith( 'Live path: store (cdef)', $text );
		$this->assertStringContainsString( 'ffi_enable:', $text );
		$this->assertStringContainsString( 'These are the PHP CLI\'s settings', $text );
		$this->assertSame( array( 'success', array( 'The event store is live.' ) ), end( WP_CLI::$calls ) );
	}

	public function test_the_wp_cli_command_fails_on_the_table_path(): void {
		LMS_Realtime_Requirements::reset();
		$reflection = new ReflectionProperty( LMS_Realtime_Requirements::class, 'problems' );
		$reflection->setAccessible( true );
		$reflection->setValue( null, array( 'The lms-realtime library could not be loaded: not found' ) );
		WP_CLI::$calls = array();
		try {
			LMS_Realtime_Doctor::cli( array(), array() );
			$this->fail( 'the command did not fail' );
		} catch ( RuntimeException $e ) {
			$this->assertStringContainsString( 'WP_CLI::error: The event store is not in use', $e->getMessage() );
		} finally {
			LMS_Realtime_Requirements::reset();
		}
		$text = implode( "\n", array_map( static fn ( $c ) => (string) ( $c[1][0] ?? '' ), WP_CLI::$calls ) );
		$this->assertStringContainsString( 'Live path: table', $text );
		$this->assertStringContainsString( 'Problem: The lms-realtime library could not be loaded: not found', $text );
		$this->assertStringContainsString( 'Fix: Put the library at ' . realpath( LMSRT_PLUGIN_DIR ) . '/lib/liblms_realtime.so', $text );
	}
}
