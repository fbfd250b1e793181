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

	public function test_numbers_are_clamped(): void {
		$this->assertSame( 30, LMS_Realtime_Settings::sanitize_timeout( 'abc' ) );
		$this->assertSame( 60, LMS_Realtime_Settings::sanitize_timeout( '600' ) );
		$this->assertSame( 1, LMS_Realtime_Settings::sanitize_timeout( '-3' ) );
		$this->assertSame( 25, LMS_Realtime_Settings::sanitize_timeout( ' 25 ' ) );
		$this->assertSame( 100, LMS_Realtime_Settings::sanitize_rollout( '150' ) );
		$this->assertSame( 0, LMS_Realtime_Settings::sanitize_rollout( '-1' ) );
		$this->assertSame( 20, LMS_Realtime_Settings::sanitize_rollout( '20.7' ) );
		$this->assertSame( 15, LMS_Realtime_Settings::sanitize_max_connections( 99 ) );
		$this->assertSame( 1, LMS_Realtime_Settings::sanitize_max_connections( 0 ) );
		$this->assertSame( 3, LMS_Realtime_Settings::sanitize_max_connections( array() ) );
		$this->assertSame( 500, LMS_Realtime_Settings::sanitize_batch_size( 10000 ) );
		$this->assertSame( 50, LMS_Realtime_Settings::sanitize_batch_size( '' ) );
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
		update_option( 'lms_longpoll_rollout', '250' );
		$this->assertSame( 100, get_option( 'lms_longpoll_rollout' ) );
		update_option( 'lms_unified_longpoll_events', array( 'messages', 'evil' ) );
		$this->assertSame( array( 'messages' ), get_option( 'lms_unified_longpoll_events' ) );
		update_option( 'lms_longpoll_circuit_breaker', null );
		$this->assertFalse( (bool) get_option( 'lms_longpoll_circuit_breaker' ) );
		update_option( 'lms_longpoll_timeout', '0' );
		$this->assertSame( 1, get_option( 'lms_longpoll_timeout' ) );
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
}
