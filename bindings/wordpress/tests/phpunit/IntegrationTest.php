<?php
/**
 * Living beside a chat theme: class names, the two ways in, identity and access, the AJAX
 * takeover, the theme client's request shapes, and ids that never go backwards.
 *
 * @package LMS_Realtime
 */

// phpcs:disable WordPress.Files.FileName,Generic.Files.OneObjectStructurePerFile

/**
 * A theme's realtime class after the one-line change (way in (a)): a singleton with a private
 * constructor and private helpers of its own, as the LMS theme's class has.
 */
final class LMSRT_Test_Theme_Realtime extends LMSRT_Chat_Realtime_Base {

	/**
	 * The singleton.
	 *
	 * @var self|null
	 */
	private static $instance = null;

	/**
	 * Events the theme's own handler saw.
	 *
	 * @var array
	 */
	public $seen = array();

	/**
	 * The theme's singleton accessor.
	 */
	public static function get_instance() {
		if ( null === self::$instance ) {
			self::$instance = new self();
		}
		return self::$instance;
	}

	/**
	 * The theme's private constructor.
	 */
	private function __construct() {
	}

	/**
	 * A private helper with a name the base must not use.
	 */
	private function get_current_user_id() {
		return 4242;
	}

	/**
	 * The theme's own identity, through the base's extension point.
	 */
	public function lmsrt_current_user_id(): int {
		return $this->get_current_user_id();
	}

	/**
	 * The theme's own access rule.
	 *
	 * @param int $user_id    user.
	 * @param int $channel_id channel.
	 */
	public function lmsrt_can_access_channel( int $user_id, int $channel_id ): bool {
		return 4242 === $user_id && 777 === $channel_id;
	}
}

/**
 * Integration with the theme.
 */
final class IntegrationTest extends LMSRT_TestCase {

	public function test_the_plugin_declares_no_class_of_the_theme_and_aliases_only_after_it(): void {
		$this->assertFalse( class_exists( 'LMS_Chat', false ), 'the demo chat is not part of the plugin' );
		$this->assertFalse( class_exists( 'LMS_Unified_LongPoll', false ) );
		// This site's theme declares none of the legacy names: they are aliases of the plugin's.
		$this->assertGreaterThan( 0, did_action( 'after_setup_theme' ) );
		$this->assertSame( 'LMSRT_Realtime', get_class( new LMS_Chat_Realtime( new LMS_Realtime_Guards( null ), new LMS_Realtime_Metrics( dirname( $this->db_path ) . '/m.json' ) ) ) );
		$this->assertTrue( is_subclass_of( 'LMS_Unified_Long_Poll', 'LMS_Chat_Realtime' ), 'the legacy lineage' );
		$hooked = has_action( 'after_setup_theme', array( LMS_Realtime_Plugin::class, 'legacy_aliases' ) );
		$this->assertSame( PHP_INT_MAX, $hooked, 'after everything the theme does at that point' );
		// Every class the plugin's loader knows is prefixed.
		foreach ( glob( LMSRT_PLUGIN_DIR . '/includes/*.php' ) as $file ) {
			preg_match_all( '/^(?:final |abstract )?(?:class|interface) (\w+)/m', (string) file_get_contents( $file ), $m ); // phpcs:ignore WordPress.WP.AlternativeFunctions.file_get_contents_file_get_contents
			foreach ( $m[1] as $class ) {
				$this->assertMatchesRegularExpression( '/^(LMSRT_|LMS_Realtime_)/', $class, $file );
			}
		}
	}

	public function test_without_a_theme_the_chat_user_is_the_wordpress_user_and_access_is_denied_unless_answered(): void {
		$bridge = LMS_Realtime_Plugin::bridge();
		$this->assertSame( LMSRT_Chat_Realtime_Base::class, get_class( $bridge ) );
		$this->assertSame( 'standalone', LMS_Realtime_Plugin::integration() );
		$u = $this->user();
		wp_set_current_user( $u );
		$this->assertSame( $u, $bridge->lmsrt_current_user_id() );
		$this->filter( 'lms_realtime_current_user_id', static fn () => 31 );
		$this->assertSame( 31, $bridge->lmsrt_current_user_id() );
		$this->assertFalse( $bridge->lmsrt_can_access_channel( 31, 987654 ), 'nothing answers: no' );
		$this->filter( 'lms_realtime_user_can_access_channel', static fn ( $can, $user, $channel ) => 987654 === $channel ? true : $can, 20, 3 );
		$this->assertTrue( $bridge->lmsrt_can_access_channel( 31, 987654 ) );
		$this->assertFalse( $bridge->lmsrt_can_access_channel( 0, 987654 ), 'nobody never reads' );
		$this->filter( 'lms_realtime_user_can_access_channel', static fn () => 1, 30 );
		$this->assertFalse( $bridge->lmsrt_can_access_channel( 31, 987654 ), 'only true is yes' );
	}

	public function test_way_a_the_themes_own_class_is_the_integration_layer(): void {
		$this->filter( 'lms_realtime_theme_bridge_class', static fn () => LMSRT_Test_Theme_Realtime::class );
		LMS_Realtime_Plugin::set_bridge( null );
		$this->assertSame( LMSRT_Test_Theme_Realtime::get_instance(), LMS_Realtime_Plugin::bridge(), 'its singleton' );
		$this->assertSame( 'theme-extends', LMS_Realtime_Plugin::integration() );
		// Its identity and access rules answer the poll; a WordPress login does not matter.
		$nonce = wp_create_nonce( 'lms_ajax_nonce' );
		$r     = $this->ajax(
			'lms_unified_long_poll',
			array(
				'channel_id' => 777,
				'nonce'      => $nonce,
			),
			0
		);
		$this->assertTrue( $r['success'], wp_json_encode( $r ) );
		$this->assertLegacyError( 'access_denied', $this->ajax( 'lms_unified_long_poll', array( 'channel_id' => 778, 'nonce' => $nonce ), 0 ) );
		// Its hooks record through the plugin.
		do_action( 'lms_chat_message_created', 5, 777, 4242, array( 'message' => 'hi', 'user_name' => 'Taro' ) );
		$r = $this->ajax( 'lms_unified_long_poll', array( 'channel_id' => 777, 'nonce' => $nonce ), 0 );
		$this->assertSame( array( 'hi' ), array_column( array_column( $r['data']['events'], 'data' ), 'content' ) );
	}

	public function test_the_plugin_answers_the_theme_action_before_the_themes_handler(): void {
		$ran   = false;
		$theme = static function () use ( &$ran ) {
			$ran = true;
			wp_send_json_success( array( 'system' => 'theme' ) );
		};
		$this->filter( 'wp_ajax_lms_unified_long_poll', $theme );
		$this->filter( 'wp_ajax_nopriv_lms_unified_long_poll', $theme );
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		$r  = $this->poll( $u, $ch );
		$this->assertTrue( $r['success'] );
		$this->assertArrayHasKey( 'last_event_id', $r['data'], 'the plugin\'s answer' );
		$this->assertFalse( $ran, 'the theme\'s handler did not run' );
	}

	public function test_the_theme_clients_request_shapes(): void {
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		do_action( 'lms_chat_message_created', 1, $ch, $u, array( 'message' => 'a' ) );
		do_action( 'lms_reaction_updated', 1, $ch, array( array( 'emoji' => '👍' ) ), $u );
		// GET, with the theme's nonce actions and fields.
		foreach ( array( 'lms_ajax_nonce', 'lms_unified_longpoll', 'lms_chat_nonce' ) as $action ) {
			wp_set_current_user( $u );
			$_GET = array(
				'channel_id'     => (string) $ch,
				'thread_id'      => '0',
				'last_event_id'  => '0',
				'last_timestamp' => '0',
				'timeout'        => '30',
				'event_types'    => 'all',
				'nonce'          => $this->nonce( $u, $action ),
				'nonce_action'   => 'lms_unified_longpoll',
			);
			$r    = $this->ajax( 'lms_unified_long_poll', array(), $u );
			$_GET = array();
			$this->assertTrue( $r['success'], $action . ': ' . wp_json_encode( $r ) );
			$this->assertSame( array( 'message_create', 'reaction_update' ), array_column( $r['data']['events'], 'type' ) );
		}
		$this->assertLegacyError( 'invalid_nonce', $this->poll( $u, $ch, 0, array( 'nonce' => $this->nonce( $u, 'some_other_action' ) ) ) );
		$only = $this->poll( $u, $ch, 0, array( 'event_types' => 'reaction_update, thread_reaction' ) );
		$this->assertSame( array( 'reaction_update' ), array_column( $only['data']['events'], 'type' ) );
		$this->assertLegacyError( 'invalid_parameters', $this->poll( $u, $ch, 0, array( 'event_types' => 'Bad Type' ) ) );
	}

	public function test_the_theme_client_is_held_at_most_five_seconds(): void {
		$this->assertSame( 5.0, LMSRT_Realtime::hold_for_client( 25.0, array() ), 'the theme\'s client gives up after 7 s' );
		$this->assertSame( 3.0, LMSRT_Realtime::hold_for_client( 25.0, array( 'timeout' => '3' ) ), 'never longer than it asked' );
		$this->assertSame( 5.0, LMSRT_Realtime::hold_for_client( 25.0, array( 'timeout' => '30' ) ) );
		$this->assertSame( 0.0, LMSRT_Realtime::hold_for_client( 0.0, array() ) );
		$this->assertSame( 25.0, LMSRT_Realtime::hold_for_client( 25.0, array( 'client' => 'lmsrt' ) ), 'the plugin\'s own client' );
	}

	/**
	 * Records on the table path, then moves to the store: the store's ids start above the
	 * table's, and a client holding a table id gets the rest of the table, then the store's,
	 * each event once.
	 */
	public function test_ids_never_go_backwards_from_the_table_to_the_store(): void {
		$u     = $this->user();
		$ch    = $this->channel( array( $u ) );
		$table = new LMSRT_Realtime( new LMS_Realtime_Guards( null ), new LMS_Realtime_Metrics( dirname( $this->db_path ) . '/m.json' ) );
		LMS_Realtime_Plugin::set_realtime( $table );
		$t1 = $table->record_event( 'message_create', $ch, array( 'n' => 1 ), 1, null, $u );
		$t2 = $table->record_event( 'message_create', $ch, array( 'n' => 2 ), 2, null, $u );
		$this->assertSame( 'table', LMS_Realtime_Ids::state()['backend'] );
		$seen = array_column( $this->poll( $u, $ch, 0 )['data']['events'], 'id' );
		$this->assertContains( $t1, $seen );
		$held = $t1; // A client that got the first event only, before the move.

		LMS_Realtime_Plugin::set_realtime( null ); // FFI is there again: the store path.
		LMS_Realtime_Ids::reset();
		$store = LMS_Realtime_Plugin::realtime();
		$this->assertSame( 'store', $store->backend() );
		$s1 = $store->record_event( 'message_create', $ch, array( 'n' => 3 ), 3, null, $u );
		$this->assertGreaterThan( $t2, $s1, 'the store starts above the table' );
		$this->assertSame( 'store', LMS_Realtime_Ids::state()['backend'] );

		$got  = array();
		$last = $held;
		for ( $i = 0; $i < 5; $i++ ) {
			$r = $this->poll( $u, $ch, $last );
			$this->assertFalse( $r['data']['gap'] );
			$got  = array_merge( $got, array_column( array_column( $r['data']['events'], 'data' ), 'n' ) );
			$last = $r['data']['last_event_id'];
		}
		$this->assertSame( array( 2, 3 ), $got, 'the table\'s rest, then the store, each once' );
	}

	/**
	 * Records on the store, then moves to the table (FFI gone): the table's ids start above
	 * the store's; a client holding a store id gets `gap: true` (the table path cannot read
	 * the store), one holding a table id does not.
	 */
	public function test_ids_never_go_backwards_from_the_store_to_the_table(): void {
		$u     = $this->user();
		$ch    = $this->channel( array( $u ) );
		$store = LMS_Realtime_Plugin::realtime();
		$s1    = $store->record_event( 'message_create', $ch, array( 'n' => 1 ), 1, null, $u );
		$s2    = $store->record_event( 'message_create', $ch, array( 'n' => 2 ), 2, null, $u );
		$this->assertSame( 'store', LMS_Realtime_Ids::state()['backend'] );

		$table = new LMSRT_Realtime( new LMS_Realtime_Guards( null ), new LMS_Realtime_Metrics( dirname( $this->db_path ) . '/m.json' ) );
		LMS_Realtime_Plugin::set_realtime( $table );
		LMS_Realtime_Ids::reset();
		$t1 = $table->record_event( 'message_create', $ch, array( 'n' => 3 ), 3, null, $u );
		$this->assertGreaterThan( $s2, $t1, 'the table starts above the store' );
		$this->assertGreaterThan( $s2, LMS_Realtime_Ids::state()['reserve'], 'even when PHP cannot read the store' );

		$r = $this->poll( $u, $ch, $s1 );
		$this->assertTrue( $r['data']['gap'], 'event 2 is in the store, out of reach: resync' );
		$this->assertSame( array( 3 ), array_column( array_column( $r['data']['events'], 'data' ), 'n' ) );
		$r = $this->poll( $u, $ch, $t1 );
		$this->assertFalse( $r['data']['gap'] );
		$this->assertSame( array(), $r['data']['events'] );
		// A client that was at the store's head when the table took over missed nothing.
		$state               = LMS_Realtime_Ids::state();
		$state['store_head'] = $s2;
		update_option( LMS_Realtime_Ids::OPTION, $state );
		$this->assertFalse( $this->poll( $u, $ch, $s2 )['data']['gap'] );
		$this->assertTrue( $this->poll( $u, $ch, $s1 )['data']['gap'] );
	}

	public function test_a_replaced_store_file_starts_above_every_id_handed_out(): void {
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		$s1 = LMS_Realtime_Plugin::realtime()->record_event( 'message_create', $ch, array(), 1, null, $u );
		// The store file is moved or deleted: a new, empty one opens at the same path setting.
		$fresh = dirname( $this->db_path ) . '/replaced/events.db';
		$this->filter( 'lms_realtime_db_path', static fn () => $fresh, 20 );
		LMS_Realtime_Plugin::set_realtime( null );
		LMS_Realtime_Ids::reset();
		$s2 = LMS_Realtime_Plugin::realtime()->record_event( 'message_create', $ch, array(), 2, null, $u );
		$this->assertGreaterThan( $s1, $s2, 'a client holding the old id would otherwise miss the new events' );
	}
}
