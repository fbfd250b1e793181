<?php
/**
 * Options sanitising, capability and nonce checks of the settings page.
 *
 * @package LMS_Realtime
 */

// phpcs:disable WordPress.Files.FileName

/**
 * The settings page.
 */
final class SettingsTest extends LMSRT_TestCase {

	public function test_booleans(): void {
		foreach ( array( '1', 'on', 'true', 'yes', 1, true ) as $v ) {
			$this->assertTrue( LMS_Realtime_Settings::sanitize_bool( $v ), var_export( $v, true ) );
		}
		foreach ( array( null, '', '0', 'off', 'no', 0, false, 'nonsense' ) as $v ) {
			$this->assertFalse( LMS_Realtime_Settings::sanitize_bool( $v ), var_export( $v, true ) );
		}
	}

	public function test_event_families(): void {
		$this->assertSame( array( 'messages', 'reactions' ), LMS_Realtime_Settings::sanitize_events( array( 'reactions', 'bogus', 'messages', 'messages' ) ) );
		$this->assertSame( array(), LMS_Realtime_Settings::sanitize_events( 'messages' ) );
		$this->assertSame( array(), LMS_Realtime_Settings::sanitize_events( null ) );
		$this->assertSame( array( 'reactions' ), LMS_Realtime_Settings::sanitize_events( array( 'reactions', '<script>' ) ) );
	}

	/**
	 * The last settings error of an option.
	 *
	 * @param string $option the option.
	 */
	private function last_error( string $option ): ?array {
		$errors = get_settings_errors( $option );
		return array() === $errors ? null : end( $errors );
	}

	public function test_numbers_in_range_are_kept(): void {
		$GLOBALS['wp_settings_errors'] = array();
		$this->assertSame( 25, LMS_Realtime_Settings::sanitize_timeout( ' 25 ' ) );
		$this->assertSame( 1, LMS_Realtime_Settings::sanitize_timeout( 1 ) );
		$this->assertSame( 60, LMS_Realtime_Settings::sanitize_timeout( '60' ) );
		$this->assertSame( 0, LMS_Realtime_Settings::sanitize_rollout( '0' ) );
		$this->assertSame( 100, LMS_Realtime_Settings::sanitize_rollout( 100 ) );
		$this->assertSame( 15, LMS_Realtime_Settings::sanitize_max_connections( '15' ) );
		$this->assertSame( 500, LMS_Realtime_Settings::sanitize_batch_size( '500' ) );
		$this->assertSame( array(), get_settings_errors(), 'no message for a valid value' );
	}

	public function test_numbers_out_of_range_are_refused_with_a_message_and_the_old_value_kept(): void {
		update_option( 'lms_longpoll_timeout', 12 );
		update_option( 'lms_longpoll_rollout', 40 );
		update_option( 'lms_longpoll_max_connections', 4 );
		update_option( 'lms_longpoll_batch_size', 80 );
		$cases = array(
			array( 'sanitize_timeout', 'lms_longpoll_timeout', '600', 12, 'from 1 to 60' ),
			array( 'sanitize_timeout', 'lms_longpoll_timeout', '0', 12, 'from 1 to 60' ),
			array( 'sanitize_timeout', 'lms_longpoll_timeout', '-3', 12, 'from 1 to 60' ),
			array( 'sanitize_timeout', 'lms_longpoll_timeout', 'abc', 12, 'from 1 to 60' ),
			array( 'sanitize_rollout', 'lms_longpoll_rollout', '150', 40, 'from 0 to 100' ),
			array( 'sanitize_rollout', 'lms_longpoll_rollout', '20.7', 40, 'from 0 to 100' ),
			array( 'sanitize_max_connections', 'lms_longpoll_max_connections', 99, 4, 'from 1 to 15' ),
			array( 'sanitize_max_connections', 'lms_longpoll_max_connections', array(), 4, 'from 1 to 15' ),
			array( 'sanitize_batch_size', 'lms_longpoll_batch_size', 10000, 80, 'from 1 to 500' ),
			array( 'sanitize_batch_size', 'lms_longpoll_batch_size', '', 80, 'from 1 to 500' ),
		);
		foreach ( $cases as list( $method, $option, $raw, $kept, $range ) ) {
			$GLOBALS['wp_settings_errors'] = array();
			$this->assertSame( $kept, LMS_Realtime_Settings::$method( $raw ), "$option <- " . wp_json_encode( $raw ) );
			$error = $this->last_error( $option );
			$this->assertIsArray( $error, "a message for $option <- " . wp_json_encode( $raw ) );
			$this->assertSame( 'out_of_range', $error['code'] );
			$this->assertSame( 'error', $error['type'] );
			$this->assertStringContainsString( $range, $error['message'] );
			$this->assertStringContainsString( 'stays ' . $kept, $error['message'] );
			$this->assertStringContainsString( '"' . ( is_scalar( $raw ) ? $raw : 'array' ) . '" was not saved', $error['message'] );
		}
	}
	public function test_beta_users_by_id_login_or_email(): void {
		$a     = $this->user();
		$b     = $this->user();
		$login = get_userdata( $b )->user_login;
		$email = get_userdata( $a )->user_email;
		$this->assertSame(
			array( min( $a, $b ), max( $a, $b ) ),
			LMS_Realtime_Settings::sanitize_beta_users( "$a, $login\n$email  99999999 nobody-here" )
		);
		$errors = get_settings_errors( 'lms_longpoll_beta_users' );
		$this->assertStringContainsString( 'nobody-here', end( $errors )['message'] );
		$this->assertSame( array( $a ), LMS_Realtime_Settings::sanitize_beta_users( array( (string) $a, (string) $a ) ) );
		$this->assertSame( array(), LMS_Realtime_Settings::sanitize_beta_users( '' ) );
	}

	public function test_daemon_urls(): void {
		$this->assertSame( '', LMS_Realtime_Settings::sanitize_daemon_url( '' ) );
		$this->assertSame( '/lmsrt', LMS_Realtime_Settings::sanitize_daemon_url( '/lmsrt/' ) );
		$this->assertSame( 'https://chat.example.org:8443/poll', LMS_Realtime_Settings::sanitize_daemon_url( ' https://chat.example.org:8443/poll/ ' ) );
		$this->assertSame( 'http://127.0.0.1:9000', LMS_Realtime_Settings::sanitize_daemon_url( 'http://127.0.0.1:9000' ) );
		foreach ( array( 'javascript:alert(1)', 'ftp://x.org', '//evil.example', 'http://', 'https://x.org/?q=1' ) as $bad ) {
			$this->assertSame( '', LMS_Realtime_Settings::sanitize_daemon_url( $bad ), $bad );
		}
	}

	public function test_key_ids(): void {
		$this->assertSame( 'k1', LMS_Realtime_Settings::sanitize_key_id( '' ) );
		$this->assertSame( 'site-2_a', LMS_Realtime_Settings::sanitize_key_id( ' site-2_a ' ) );
		$this->assertSame( 'k1', LMS_Realtime_Settings::sanitize_key_id( 'has space' ) );
		$this->assertSame( 'k1', LMS_Realtime_Settings::sanitize_key_id( str_repeat( 'a', 33 ) ) );
	}

	public function test_the_secret_is_kept_replaced_or_removed(): void {
		update_option( 'lms_realtime_daemon_secret', str_repeat( 'a', 40 ) );
		$this->assertSame( str_repeat( 'a', 40 ), LMS_Realtime_Settings::sanitize_secret( '' ), 'empty keeps' );
		$this->assertSame( str_repeat( 'a', 40 ), LMS_Realtime_Settings::sanitize_secret( 'short' ), 'weak keeps the old one' );
		$this->assertSame( str_repeat( 'a', 40 ), LMS_Realtime_Settings::sanitize_secret( str_repeat( 'b', 20 ) . ' ' . str_repeat( 'c', 20 ) ) );
		$this->assertSame( str_repeat( 'z', 32 ), LMS_Realtime_Settings::sanitize_secret( str_repeat( 'z', 32 ) ) );
		$_POST['lms_realtime_daemon_secret_remove'] = '1';
		$this->assertSame( '', LMS_Realtime_Settings::sanitize_secret( str_repeat( 'z', 32 ) ) );
	}

	public function test_options_are_sanitised_when_saved(): void {
		LMS_Realtime_Settings::register_settings();
		update_option( 'lms_longpoll_rollout', '30' );
		$this->assertSame( 30, get_option( 'lms_longpoll_rollout' ) );
		$GLOBALS['wp_settings_errors'] = array();
		update_option( 'lms_longpoll_rollout', '250' );
		$this->assertSame( 30, get_option( 'lms_longpoll_rollout' ), 'out of range: the old value stays' );
		$this->assertCount( 1, get_settings_errors( 'lms_longpoll_rollout' ), 'one message' );
		update_option( 'lms_unified_longpoll_events', array( 'messages', 'evil' ) );
		$this->assertSame( array( 'messages' ), get_option( 'lms_unified_longpoll_events' ) );
		update_option( 'lms_longpoll_circuit_breaker', null );
		$this->assertFalse( (bool) get_option( 'lms_longpoll_circuit_breaker' ) );
		update_option( 'lms_longpoll_timeout', '0' );
		$this->assertSame( 30, (int) get_option( 'lms_longpoll_timeout' ), 'unchanged (as stored: the options table may give it back as a string)' );
		$registered = get_registered_settings();
		foreach ( array_keys( LMS_Realtime_Settings::options() ) as $option ) {
			$this->assertArrayHasKey( $option, $registered );
			$this->assertSame( LMS_Realtime_Settings::GROUP, $registered[ $option ]['group'] );
			$this->assertIsCallable( $registered[ $option ]['sanitize_callback'] );
		}
	}

	public function test_saving_through_options_php_needs_manage_options(): void {
		$this->assertSame( 'manage_options', apply_filters( 'option_page_capability_' . LMS_Realtime_Settings::GROUP, 'read' ) );
		$this->assertSame( 'manage_options', LMS_Realtime_Settings::capability() );
	}

	public function test_the_page_refuses_users_without_the_capability(): void {
		wp_set_current_user( $this->user( 'editor' ) );
		try {
			LMS_Realtime_Settings::render();
			$this->fail( 'an editor saw the settings page' );
		} catch ( LMSRT_Die $e ) {
			$this->assertSame( 403, $e->getCode() );
		}
	}

	public function test_the_page_renders_a_nonce_protected_form_for_admins(): void {
		wp_set_current_user( $this->user( 'administrator' ) );
		LMS_Realtime_Settings::register_settings();
		ob_start();
		LMS_Realtime_Settings::render();
		$html = (string) ob_get_clean();
		$this->assertStringContainsString( 'action="options.php"', $html );
		$this->assertMatchesRegularExpression( '/name=[\'"]option_page[\'"] value=[\'"]lms_realtime[\'"]/', $html );
		$this->assertMatchesRegularExpression( '/name="_wpnonce" value="([0-9a-f]{10})"/', $html );
		preg_match( '/name="_wpnonce" value="([0-9a-f]{10})"/', $html, $m );
		$this->assertSame( 1, wp_verify_nonce( $m[1], 'lms_realtime-options' ) );
		$this->assertStringNotContainsString( 'value="' . str_repeat( 'a', 40 ), $html, 'the secret is never echoed' );
		$this->assertStringContainsString( 'lmsrt-health', $html, 'the status panel' );
		foreach ( array_keys( LMS_Realtime_Settings::options() ) as $option ) {
			$this->assertStringContainsString( 'name="' . $option, $html );
		}
	}

	public function test_the_reset_actions_check_capability_and_nonce(): void {
		wp_set_current_user( $this->user( 'subscriber' ) );
		$_REQUEST['_wpnonce'] = wp_create_nonce( 'lms_realtime_reset_breaker' );
		try {
			LMS_Realtime_Settings::check_admin_post( 'lms_realtime_reset_breaker' );
			$this->fail( 'a subscriber passed' );
		} catch ( LMSRT_Die $e ) {
			$this->assertSame( 403, $e->getCode() );
		}
		wp_set_current_user( $this->user( 'administrator' ) );
		$_REQUEST['_wpnonce'] = 'forged';
		try {
			LMS_Realtime_Settings::check_admin_post( 'lms_realtime_reset_breaker' );
			$this->fail( 'a forged nonce passed' );
		} catch ( LMSRT_Die $e ) {
			$this->assertTrue( true );
		}
		$_REQUEST['_wpnonce'] = wp_create_nonce( 'lms_realtime_reset_breaker' );
		LMS_Realtime_Settings::check_admin_post( 'lms_realtime_reset_breaker' );
		$this->assertTrue( true, 'an administrator with the nonce passes' );
	}

	public function test_the_status_panel_reports_the_store_guards_and_metrics(): void {
		$s = LMS_Realtime_Settings::status();
		$this->assertSame( 'store', $s['backend'] );
		$this->assertSame( array(), $s['problems'] );
		$this->assertSame( 1, $s['library']['abi'] );
		$this->assertMatchesRegularExpression( '/^v1\.[0-9a-f]{8}\.\d+\.\d+\.\d+\.\d+$/', $s['store']['head'] );
		$this->assertSame( array( 'rate', 'slots', 'breaker' ), array_keys( $s['guards'] ) );
		$this->assertSame( 'long', $s['mode'] );
		$this->assertContains( $s['metrics']['health']['status'], array( 'ok', 'idle', 'degraded' ) );
		$this->assertFalse( $s['daemon']['enabled'] );
		$this->assertContains( $s['native_health']['status'], array( 'ok', 'degraded' ), 'the host-wide verdict of the binding' );
		$this->assertArrayHasKey( 'counters', $s['native_metrics'] );
	}

	/**
	 * The settings page's HTML for an administrator.
	 */
	private function page_html(): string {
		wp_set_current_user( $this->user( 'administrator' ) );
		LMS_Realtime_Settings::register_settings();
		ob_start();
		LMS_Realtime_Settings::render();
		return (string) ob_get_clean();
	}

	public function test_a_timeout_above_five_seconds_says_the_theme_client_is_capped(): void {
		update_option( 'lms_longpoll_timeout', 20 );
		$html = $this->page_html();
		$this->assertStringContainsString( 'lmsrt-timeout-notice', $html );
		$this->assertStringContainsString( 'The long-poll timeout is 20 s, but the LMS theme&#039;s client gives up a request after 7 s: the plugin holds that client&#039;s polls at most 5 s', $html );
		$this->assertStringContainsString( 'gives up a request after 7 s, so its polls are held at most 5 s', $html, 'the field\'s help' );
		update_option( 'lms_longpoll_timeout', 5 );
		$this->assertStringNotContainsString( 'lmsrt-timeout-notice', $this->page_html() );
	}

	public function test_the_page_shows_the_set_up_check(): void {
		$html = $this->page_html();
		$this->assertStringContainsString( 'id="lmsrt-doctor"', $html );
		$this->assertStringContainsString( 'data-live="store"', $html );
		$this->assertMatchesRegularExpression( '#admin-ajax\.php\?action=lms_realtime_doctor&(amp;|\#038;)_wpnonce=[0-9a-f]{10}#', $html );
		$this->assertStringContainsString( 'opcache.preload=' . realpath( \LmsRealtime\Library::packageDir() ) . '/preload.php', $html );
	}
}
