<?php
/**
 * The daemon token endpoint and the page configuration of the browser client.
 *
 * @package LMS_Realtime
 */

// phpcs:disable WordPress.Files.FileName

/**
 * A token issuer for the tests: records what it was asked.
 */
final class LMSRT_Test_Issuer implements LMS_Realtime_Token_Issuer {
	/**
	 * Calls.
	 *
	 * @var array<int, array<int, mixed>>
	 */
	public array $calls = array();
	public function is_available(): bool {
		return true;
	}
	public function issue( int $user_id, array $channels, int $expires_at, string $session ): string {
		$this->calls[] = array( $user_id, $channels, $expires_at, $session );
		return 'test.' . $user_id . '.' . implode( '-', $channels );
	}
}

/**
 * Tokens and page configuration.
 */
final class TokenAndPageTest extends LMSRT_TestCase {

	private LMSRT_Test_Issuer $issuer;

	protected function setUp(): void {
		parent::setUp();
		$this->issuer = new LMSRT_Test_Issuer();
		$this->filter( 'lms_realtime_token_issuer', fn () => $this->issuer );
	}

	private function token( int $user_id, array $extra = array() ): array {
		return $this->ajax( 'lms_realtime_token', array_merge( array( 'nonce' => $this->nonce( $user_id ) ), $extra ), $user_id );
	}

	public function test_without_a_daemon_url_there_is_no_token(): void {
		$u = $this->user();
		$this->assertLegacyError( 'daemon_unavailable', $this->token( $u ) );
		$this->assertFalse( LMS_Realtime_Plugin::realtime()->daemon_enabled() );
	}

	public function test_the_default_issuer_signs_what_the_daemon_checks(): void {
		$this->assertFalse( ( new LMS_Realtime_Native_Token_Issuer( '' ) )->is_available() );
		$this->assertFalse( ( new LMS_Realtime_Native_Token_Issuer( str_repeat( 's', 31 ) ) )->is_available(), 'secrets are at least 32 bytes' );
		$this->assertFalse( ( new LMS_Realtime_Native_Token_Issuer( str_repeat( 's', 32 ), 'bad key!' ) )->is_available() );
		$secret = str_repeat( 's', 40 );
		$issuer = new LMS_Realtime_Native_Token_Issuer( $secret, 'k7' );
		$this->assertTrue( $issuer->is_available() );
		$exp   = time() + 600;
		$token = $issuer->issue( 42, array( 9, 3 ), $exp, 'session-x' );
		$this->assertMatchesRegularExpression( '/^v1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/', $token );
		list( , $claims, $mac ) = explode( '.', $token );
		$c = json_decode( base64_decode( strtr( $claims, '-_', '+/' ) ), true );
		$this->assertSame( array( 'k7', 42, array( 3, 9 ), $exp ), array( $c['kid'], $c['uid'], $c['ch'], $c['exp'] ) );
		$this->assertArrayHasKey( 'sid', $c );
		$this->assertStringNotContainsString( 'session-x', $token, 'the session itself is not in the token' );
		$expected = rtrim( strtr( base64_encode( hash_hmac( 'sha256', 'v1.' . $claims, $secret, true ) ), '+/', '-_' ), '=' );
		$this->assertSame( $expected, $mac, 'HMAC-SHA256 over "v1." + claims with the shared secret' );
	}

	public function test_the_plugin_issues_real_tokens_when_the_daemon_is_configured(): void {
		remove_all_filters( 'lms_realtime_token_issuer' );
		update_option( 'lms_realtime_daemon_url', '/lmsrt' );
		update_option( 'lms_realtime_daemon_secret', str_repeat( 'q', 32 ) );
		update_option( 'lms_realtime_daemon_key_id', 'site1' );
		LMS_Realtime_Plugin::set_realtime( null );
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		$this->assertTrue( LMS_Realtime_Plugin::realtime()->daemon_enabled() );
		$r = $this->token( $u );
		$this->assertTrue( $r['success'], wp_json_encode( $r ) );
		$c = json_decode( base64_decode( strtr( explode( '.', $r['data']['token'] )[1], '-_', '+/' ) ), true );
		$this->assertSame( array( 'site1', $u ), array( $c['kid'], $c['uid'] ) );
		$this->assertContains( $ch, $c['ch'] );
		$this->assertSame( $r['data']['expires_at'], $c['exp'] );
	}

	public function test_a_chat_user_who_is_not_a_wordpress_user_gets_a_token_for_their_channels(): void {
		// As the LMS theme's session users: no WordPress login; identity and access from the site.
		update_option( 'lms_realtime_daemon_url', '/lmsrt' );
		$this->filter( 'lms_realtime_current_user_id', static fn () => 5001 );
		$this->filter( 'lms_realtime_user_can_access_channel', static fn ( $can, $user, $channel ) => 5001 === $user && in_array( $channel, array( 71, 72 ), true ), 10, 3 );
		$this->filter( 'lms_realtime_channels_for_user', static fn () => array( 71, 72, 73 ) );
		LMS_Realtime_Plugin::set_realtime( null );
		$r = $this->ajax( 'lms_realtime_token', array( 'nonce' => $this->nonce( 0, 'lms_ajax_nonce' ) ), 0 );
		$this->assertTrue( $r['success'], wp_json_encode( $r ) );
		$this->assertSame( 5001, $r['data']['user_id'] );
		$this->assertSame( array( 71, 72 ), $r['data']['channels'], 'only the channels access allows' );
		list( $user, $channels ) = end( $this->issuer->calls );
		$this->assertSame( array( 5001, array( 71, 72 ) ), array( $user, $channels ) );
	}

	public function test_tokens_cover_the_channels_the_user_may_read(): void {
		update_option( 'lms_realtime_daemon_url', '/lmsrt' );
		$u       = $this->user();
		$mine    = $this->channel( array( $u ) );
		$mine2   = $this->channel( array( $u ) );
		$theirs  = $this->channel( array( $this->user() ) );
		$r       = $this->token( $u );
		$this->assertTrue( $r['success'], wp_json_encode( $r ) );
		$this->assertSame( array( 'token', 'expires_at', 'channels', 'user_id' ), array_keys( $r['data'] ) );
		$this->assertContains( $mine, $r['data']['channels'] );
		$this->assertContains( $mine2, $r['data']['channels'] );
		$this->assertNotContains( $theirs, $r['data']['channels'] );
		$this->assertSame( $u, $r['data']['user_id'] );
		$this->assertEqualsWithDelta( time() + LMSRT_Unified_Long_Poll::TOKEN_TTL, $r['data']['expires_at'], 5 );
		list( $user, $channels, $expires, $session ) = end( $this->issuer->calls );
		$this->assertSame( array( $u, $r['data']['channels'], $r['data']['expires_at'] ), array( $user, $channels, $expires ) );
		$this->assertMatchesRegularExpression( '/^[0-9a-f]{32}$/', $session );

		$only = $this->token( $u, array( 'channels' => "$mine" ) );
		$this->assertSame( array( $mine ), $only['data']['channels'] );
		$this->assertLegacyError( 'access_denied', $this->token( $u, array( 'channels' => "$theirs" ) ) );
		$this->assertLegacyError( 'invalid_parameters', $this->token( $u, array( 'channels' => '1,x' ) ) );
		$this->assertLegacyError( 'invalid_nonce', $this->token( $u, array( 'nonce' => 'bad' ) ) );
		$this->assertLegacyError( 'not_authenticated', $this->ajax( 'lms_realtime_token', array(), 0 ) );
	}

	public function test_the_page_config_is_what_from_config_reads(): void {
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		do_action( 'lms_chat_message_created', 1, $ch, $u, array( 'text' => 'before the render' ) );
		wp_set_current_user( $u );
		$rt   = LMS_Realtime_Plugin::realtime();
		$head = $rt->render_head_cursor();
		$c    = $rt->page_config( $ch, 0, $u );
		$this->assertSame( $head, $c['cursor'], 'polling starts at the head rendered into the page' );
		$this->assertSame( LMSRT_Realtime::cursor_position( $head ), $c['last_event_id'] );
		$this->assertGreaterThan( 0, $c['last_event_id'] );
		$this->assertSame( array( $ch ), $c['channels'] );
		$this->assertSame( $ch, $c['channel_id'] );
		$this->assertNull( $c['thread_id'] );
		$this->assertSame( admin_url( 'admin-ajax.php' ), $c['ajax_url'] );
		$this->assertSame( 'lms_chat_nonce', $c['nonce_action'] );
		$this->assertSame( 1, wp_verify_nonce( $c['nonce'], 'lms_chat_nonce' ) );
		$this->assertSame( 50, $c['batch_size'] );
		$this->assertSame( 'store', $c['backend'] );
		$this->assertArrayNotHasKey( 'daemon_url', $c, 'no daemon configured' );
		// Nothing appended after the render is missed: a poll from the rendered position sees it.
		do_action( 'lms_chat_message_created', 2, $ch, $u, array( 'text' => 'after the render' ) );
		$this->filter( 'lms_realtime_ajax_wait', static fn () => 0.0 );
		$r = $this->poll( $u, $ch, $c['last_event_id'] );
		$this->assertSame( array( 'after the render' ), array_column( array_column( $r['data']['events'], 'data' ), 'text' ) );

		update_option( 'lms_realtime_daemon_url', '/lmsrt' );
		LMS_Realtime_Plugin::set_realtime( null );
		$d = LMS_Realtime_Plugin::realtime()->page_config( $ch, 0, $u );
		$this->assertSame( '/lmsrt', $d['daemon_url'] );
		$this->assertSame( admin_url( 'admin-ajax.php' ), $d['token_url'] );
		$this->assertSame( 'lms_realtime_token', $d['token_action'] );
		$this->assertSame( $d['nonce'], $d['token_nonce'] );
		update_option( 'lms_longpoll_rollout', 0 );
		LMS_Realtime_Plugin::set_realtime( null );
		$this->assertArrayNotHasKey( 'daemon_url', LMS_Realtime_Plugin::realtime()->page_config( $ch, 0, $u ), 'the legacy cohort never gets the daemon' );
	}

	public function test_the_ajax_wait_follows_timeout_mode_and_daemon(): void {
		remove_filter( 'lms_realtime_ajax_wait', $this->no_wait, 5 );
		$u  = $this->user();
		$rt = LMS_Realtime_Plugin::realtime();
		$m  = new ReflectionMethod( $rt, 'wait_seconds' );
		$m->setAccessible( true );
		$long = array( 'mode' => 'long' );
		$this->assertSame( 25.0, $m->invoke( $rt, $u, $long ), 'no daemon: the plugin serves the long poll, capped' );
		update_option( 'lms_longpoll_timeout', 8 );
		$this->assertSame( 8.0, $m->invoke( $rt, $u, $long ) );
		$this->assertSame( 8.0, $m->invoke( $rt, $u, array( 'mode' => 'medium' ) ) );
		update_option( 'lms_longpoll_timeout', 30 );
		$this->assertSame( 10.0, $m->invoke( $rt, $u, array( 'mode' => 'medium' ) ) );
		$this->assertSame( 0.0, $m->invoke( $rt, $u, array( 'mode' => 'short' ) ) );
		$this->assertSame( 0.0, $m->invoke( $rt, $u, array( 'mode' => 'emergency' ) ) );
		update_option( 'lms_realtime_daemon_url', '/lmsrt' );
		$this->assertSame( (float) LMSRT_Unified_Long_Poll::FALLBACK_WAIT, $m->invoke( $rt, $u, $long ), 'the daemon is configured: a short fallback wait' );
		update_option( 'lms_longpoll_rollout', 0 );
		update_option( 'lms_realtime_daemon_url', '' );
		$own = array( 'client' => 'lmsrt' );
		$this->assertSame( 0.0, $m->invoke( $rt, $u, $long, $own ), 'the plugin\'s client outside the rollout short-polls' );
		$this->assertSame( 25.0, $m->invoke( $rt, $u, $long, array() ), 'the theme\'s client long-polls anyway (answer_poll caps it at 5 s)' );
	}

	public function test_cursor_positions(): void {
		$this->assertSame( 0, LMSRT_Realtime::cursor_position( '' ) );
		$this->assertSame( 42, LMSRT_Realtime::cursor_position( '42' ) );
		$this->assertSame( 3, LMSRT_Realtime::cursor_position( 'v1.0badcafe.7.3.9.12' ) );
		$this->assertSame( 0, LMSRT_Realtime::cursor_position( 'v2.whatever' ) );
		$this->assertSame( 12, LMSRT_Realtime::cursor_max( 'v1.0badcafe.7.3.9.12' ) );
		$this->assertSame( 42, LMSRT_Realtime::cursor_max( '42' ) );
		$this->assertSame( 0, LMSRT_Realtime::cursor_max( 'v2.whatever' ) );
	}

	public function test_the_shortcode_renders_history_config_and_scripts(): void {
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		LMSRT_Demo_Chat::post_message( $ch, $u, 'history <i>line</i>' );
		wp_set_current_user( $u );
		$html = do_shortcode( '[lmsrt_demo_chat channel="' . $ch . '"]' );
		$this->assertStringContainsString( 'history &lt;i&gt;line&lt;/i&gt;', $html, 'escaped' );
		$this->assertStringContainsString( 'id="lms-chat-' . $ch . '"', $html );
		$this->assertTrue( wp_script_is( 'lmsrt-demo-chat', 'enqueued' ) );
		$inline = implode( "\n", (array) wp_scripts()->get_data( 'lmsrt-demo-chat', 'before' ) );
		$this->assertStringContainsString( 'window.lmsRealtimeConfig = ', $inline );
		wp_set_current_user( $this->user() );
		$this->assertStringContainsString( 'lms-chat-denied', do_shortcode( '[lmsrt_demo_chat channel="' . $ch . '"]' ) );
		wp_set_current_user( 0 );
		$this->assertStringContainsString( 'lms-chat-login', do_shortcode( '[lmsrt_demo_chat channel="' . $ch . '"]' ) );
	}
}
