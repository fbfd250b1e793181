<?php
/**
 * Shared set-up of the plugin tests.
 *
 * @package LMS_Realtime
 */

// phpcs:disable WordPress.Files.FileName

/**
 * What wp_die() throws inside the tests.
 */
class LMSRT_Die extends \RuntimeException {
}

/**
 * Each test: the plugin's options at known values (unified on, rollout 100%), a fresh event
 * store in a temporary directory, the realtime service rebuilt on it, no current user. After
 * it: options restored, breaker closed, filters removed.
 */
abstract class LMSRT_TestCase extends \PHPUnit\Framework\TestCase {

	/**
	 * Options before the test.
	 *
	 * @var array<string, mixed>
	 */
	private array $saved = array();

	/**
	 * This test's store file.
	 *
	 * @var string
	 */
	protected string $db_path;

	/**
	 * The default "no wait" of the AJAX poll (tests that want a wait add their own filter, or
	 * remove this one).
	 *
	 * @var callable
	 */
	protected $no_wait;

	/**
	 * Filters added by the test, removed after it.
	 *
	 * @var array<int, array{0: string, 1: callable, 2: int}>
	 */
	private array $filters = array();

	protected function setUp(): void {
		parent::setUp();
		foreach ( array_keys( LMS_Realtime_Plugin::DEFAULTS ) as $option ) {
			$this->saved[ $option ] = get_option( $option, null );
			update_option( $option, LMS_Realtime_Plugin::DEFAULTS[ $option ] );
		}
		update_option( 'lms_use_unified_longpoll', true );
		update_option( 'lms_longpoll_rollout', 100 );
		$this->db_path = $GLOBALS['lmsrt_test_dir'] . '/' . uniqid( 't', true ) . '/events.db';
		$path          = $this->db_path;
		$this->filter( 'lms_realtime_db_path', static fn () => $path );
		$this->filter( 'wp_die_ajax_handler', fn () => array( $this, 'die_handler' ) );
		// Polls answer at once unless a test asks for a wait.
		$this->no_wait = static fn () => 0.0;
		$this->filter( 'lms_realtime_ajax_wait', $this->no_wait, 5 );
		$this->filter( 'wp_die_handler', fn () => array( $this, 'die_handler' ) );
		LMS_Realtime_Plugin::set_realtime( null );
		LMS_Realtime_Plugin::set_bridge( null );
		LMSRT_Demo_Chat::reset_cache();
		LMS_Realtime_Theme_Data::reset();
		// Every test starts a fresh store: no id history from an earlier one.
		delete_option( LMS_Realtime_Ids::OPTION );
		LMS_Realtime_Ids::reset();
		$_POST    = array();
		$_REQUEST = array();
		$_GET     = array();
		// Each test from its own address: the anonymous `ip` limit is per address.
		$_SERVER['REMOTE_ADDR'] = '10.' . wp_rand( 0, 255 ) . '.' . wp_rand( 0, 255 ) . '.' . wp_rand( 1, 254 );
		wp_set_current_user( 0 );
	}

	protected function tearDown(): void {
		try {
			LMS_Realtime_Plugin::realtime()->guards()->breaker_reset();
		} catch ( \Throwable $e ) {
			unset( $e );
		}
		foreach ( $this->filters as list( $hook, $fn, $priority ) ) {
			remove_filter( $hook, $fn, $priority );
		}
		$this->filters = array();
		foreach ( $this->saved as $option => $value ) {
			if ( null === $value ) {
				delete_option( $option );
			} else {
				update_option( $option, $value );
			}
		}
		LMS_Realtime_Plugin::set_realtime( null );
		wp_set_current_user( 0 );
		$_POST    = array();
		$_REQUEST = array();
		parent::tearDown();
	}

	/**
	 * Adds a filter for this test only.
	 *
	 * @param string   $hook     hook.
	 * @param callable $fn       callback.
	 * @param int      $priority priority.
	 * @param int      $args     accepted args.
	 */
	protected function filter( string $hook, callable $fn, int $priority = 10, int $args = 1 ): void {
		add_filter( $hook, $fn, $priority, $args );
		$this->filters[] = array( $hook, $fn, $priority );
	}

	/**
	 * The wp_die() handler of the tests.
	 *
	 * @param mixed $message message.
	 * @param mixed $title   title.
	 * @param mixed $args    args.
	 * @throws LMSRT_Die Always.
	 */
	public function die_handler( $message = '', $title = '', $args = array() ): void {
		$code = is_array( $args ) && isset( $args['response'] ) ? (int) $args['response'] : 0;
		throw new LMSRT_Die( is_scalar( $message ) ? (string) $message : wp_json_encode( $message ), $code );
	}

	/**
	 * A new user.
	 *
	 * @param string $role role.
	 */
	protected function user( string $role = 'subscriber' ): int {
		$login = 'phpunit_' . str_replace( '.', '', uniqid( '', true ) );
		$id    = wp_insert_user(
			array(
				'user_login'   => $login,
				'user_pass'    => wp_generate_password(),
				'user_email'   => $login . '@example.org',
				'display_name' => $login,
				'role'         => $role,
			)
		);
		$this->assertIsInt( $id );
		return $id;
	}

	/**
	 * A new private channel.
	 *
	 * @param int[] $members members.
	 */
	protected function channel( array $members ): int {
		return LMSRT_Demo_Chat::create_channel( 'phpunit-' . uniqid(), true, $members );
	}

	/**
	 * A chat nonce for a user.
	 *
	 * @param int    $user_id user.
	 * @param string $action  nonce action.
	 */
	protected function nonce( int $user_id, string $action = 'lms_chat_nonce' ): string {
		$previous = get_current_user_id();
		wp_set_current_user( $user_id );
		$nonce = wp_create_nonce( $action );
		wp_set_current_user( $previous );
		return $nonce;
	}

	/**
	 * Calls an AJAX action as admin-ajax.php would and returns the decoded JSON answer (or
	 * `['raw' => output]`).
	 *
	 * @param string               $action  the action.
	 * @param array<string, mixed> $post    $_POST.
	 * @param int                  $user_id the current user (0: logged out, the nopriv hook).
	 * @return array<string, mixed>
	 */
	protected function ajax( string $action, array $post, int $user_id ): array {
		wp_set_current_user( $user_id );
		$_POST    = array_map( static fn ( $v ) => is_scalar( $v ) ? wp_slash( (string) $v ) : $v, $post );
		$_REQUEST = $_POST;
		ob_start();
		try {
			do_action( ( $user_id > 0 ? 'wp_ajax_' : 'wp_ajax_nopriv_' ) . $action );
		} catch ( LMSRT_Die $e ) {
			unset( $e );
		} finally {
			$out = (string) ob_get_clean();
		}
		$decoded = json_decode( $out, true );
		return is_array( $decoded ) ? $decoded : array( 'raw' => $out );
	}

	/**
	 * A poll of the legacy endpoint.
	 *
	 * @param int                  $user_id    user.
	 * @param int                  $channel_id channel.
	 * @param int                  $last       last_event_id.
	 * @param array<string, mixed> $extra      more fields.
	 * @return array<string, mixed>
	 */
	protected function poll( int $user_id, int $channel_id, int $last = 0, array $extra = array() ): array {
		return $this->ajax(
			'lms_unified_long_poll',
			array_merge(
				array(
					'channel_id'    => $channel_id,
					'thread_id'     => 0,
					'last_event_id' => $last,
					'nonce'         => $this->nonce( $user_id ),
				),
				$extra
			),
			$user_id
		);
	}

	/**
	 * Asserts a legacy error answer.
	 *
	 * @param string               $code     expected code.
	 * @param array<string, mixed> $response the answer.
	 */
	protected function assertLegacyError( string $code, array $response ): void {
		$this->assertSame( false, $response['success'] ?? null, wp_json_encode( $response ) );
		$this->assertSame( $code, $response['data']['code'] ?? null, wp_json_encode( $response ) );
		$this->assertIsString( $response['data']['message'] );
		$this->assertNotSame( '', $response['data']['message'] );
	}
}
