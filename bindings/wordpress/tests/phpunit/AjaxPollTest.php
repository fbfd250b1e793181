<?php
/**
 * The legacy AJAX contract of lms_unified_long_poll, on the store path and the legacy path.
 *
 * @package LMS_Realtime
 */

// phpcs:disable WordPress.Files.FileName

/**
 * Checks, in the legacy order, and the success shape field by field.
 */
final class AjaxPollTest extends LMSRT_TestCase {

	private const EVENT_KEYS = array( 'id', 'type', 'event_type', 'priority', 'message_id', 'thread_id', 'channel_id', 'user_id', 'data', 'timestamp', 'created_at' );

	public function test_the_store_path_is_in_use(): void {
		$this->assertInstanceOf( LMSRT_Unified_Long_Poll::class, LMS_Realtime_Plugin::realtime() );
		$this->assertSame( 'store', LMS_Realtime_Plugin::realtime()->backend() );
	}

	public function test_logged_out_users_get_not_authenticated(): void {
		$this->assertLegacyError( 'not_authenticated', $this->ajax( 'lms_unified_long_poll', array( 'channel_id' => 1, 'last_event_id' => 0, 'nonce' => 'x' ), 0 ) );
	}

	public function test_a_bad_or_missing_nonce_is_invalid_nonce(): void {
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		$this->assertLegacyError( 'invalid_nonce', $this->poll( $u, $ch, 0, array( 'nonce' => 'deadbeef00' ) ) );
		$this->assertLegacyError( 'invalid_nonce', $this->ajax( 'lms_unified_long_poll', array( 'channel_id' => $ch ), $u ) );
		// Another user's nonce is not this user's.
		$other = $this->user();
		$this->assertLegacyError( 'invalid_nonce', $this->poll( $u, $ch, 0, array( 'nonce' => $this->nonce( $other ) ) ) );
	}

	public function test_nonce_action_is_limited_to_the_known_actions(): void {
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		$ok = $this->poll( $u, $ch, 0, array( 'nonce' => $this->nonce( $u, 'lms_unified_long_poll' ), 'nonce_action' => 'lms_unified_long_poll' ) );
		$this->assertTrue( $ok['success'], wp_json_encode( $ok ) );
		// A nonce of any other action is refused even when the request names that action.
		$this->assertLegacyError( 'invalid_nonce', $this->poll( $u, $ch, 0, array( 'nonce' => $this->nonce( $u, 'some_other_form' ), 'nonce_action' => 'some_other_form' ) ) );
	}

	public function test_malformed_parameters_are_invalid_parameters(): void {
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		foreach ( array( 'abc', '-1', '0', '1.5', '1e3', '', '0x1f' ) as $bad ) {
			$this->assertLegacyError( 'invalid_parameters', $this->poll( $u, $ch, 0, array( 'channel_id' => $bad ) ), "channel_id $bad" );
		}
		foreach ( array( '-5', 'x', '1e3', '99999999999999999999' ) as $bad ) {
			$this->assertLegacyError( 'invalid_parameters', $this->poll( $u, $ch, 0, array( 'last_event_id' => $bad ) ), "last_event_id $bad" );
		}
		$this->assertLegacyError( 'invalid_parameters', $this->poll( $u, $ch, 0, array( 'thread_id' => '-2' ) ) );
	}

	public function test_channels_the_user_may_not_read_are_access_denied(): void {
		$member = $this->user();
		$other  = $this->user();
		$ch     = $this->channel( array( $member ) );
		$this->assertLegacyError( 'access_denied', $this->poll( $other, $ch ) );
		$this->assertLegacyError( 'access_denied', $this->poll( $member, 987654321 ) );
		$this->assertTrue( $this->poll( $member, $ch )['success'] );
	}

	public function test_success_shape_field_by_field(): void {
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		do_action( 'lms_chat_message_created', 41, $ch, $u, array( 'text' => 'hello', 'n' => 1 ) );
		do_action( 'lms_chat_thread_message_sent', 42, 41, $ch, $u );
		do_action( 'lms_reaction_updated', 41, $ch, array(), $u );
		$before = time();
		$r      = $this->poll( $u, $ch );

		$this->assertSame( array( 'success', 'data' ), array_keys( $r ) );
		$this->assertTrue( $r['success'] );
		$this->assertSame( array( 'events', 'timestamp', 'last_event_id', 'has_more', 'gap', 'mode' ), array_keys( $r['data'] ) );
		$this->assertIsInt( $r['data']['timestamp'] );
		$this->assertEqualsWithDelta( $before, $r['data']['timestamp'], 5 );
		$this->assertSame( 'long', $r['data']['mode'] );
		$this->assertFalse( $r['data']['gap'] );
		$this->assertFalse( $r['data']['has_more'] );
		$this->assertCount( 3, $r['data']['events'] );
		foreach ( $r['data']['events'] as $e ) {
			$this->assertSame( self::EVENT_KEYS, array_keys( $e ) );
			$this->assertIsInt( $e['id'] );
			$this->assertIsString( $e['type'] );
			$this->assertIsInt( $e['priority'] );
			$this->assertSame( $ch, $e['channel_id'] );
			$this->assertSame( $u, $e['user_id'] );
			$this->assertIsArray( $e['data'] ); // a JSON object
			$this->assertEqualsWithDelta( $before * 1000, $e['timestamp'], 5000, 'unix milliseconds: what JavaScript\'s Date reads' );
			$this->assertSame( $e['type'], $e['event_type'] );
			$this->assertMatchesRegularExpression( '/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/', $e['created_at'] );
			$this->assertSame( $e['timestamp'], strtotime( $e['created_at'] ) * 1000 + (int) substr( $e['created_at'], 20, 3 ), 'created_at is the same instant' );
		}
		list( $m, $t, $re ) = $r['data']['events'];
		$this->assertSame( array( 'message_create', 1, 41, null ), array( $m['type'], $m['priority'], $m['message_id'], $m['thread_id'] ) );
		$this->assertSame( array( 'text' => 'hello', 'n' => 1, 'message_id' => 41, 'channel_id' => $ch, 'user_id' => $u ), array_intersect_key( $m['data'], array_flip( array( 'text', 'n', 'message_id', 'channel_id', 'user_id' ) ) ) );
		$this->assertSame( array( 'thread_create', 1, 42, 41 ), array( $t['type'], $t['priority'], $t['message_id'], $t['thread_id'] ) );
		$this->assertSame( array( 'reaction_update', 2, 41 ), array( $re['type'], $re['priority'], $re['message_id'] ) );
		$this->assertSame( $re['id'], $r['data']['last_event_id'] );
		// The raw JSON has "data" as an object even when empty, and nulls for missing ids.
		$this->assertStringNotContainsString( '"data":[]', (string) wp_json_encode( LMSRT_Realtime::format_event( array( 'id' => 1, 'type' => 'x', 'priority' => 3, 'channel_id' => 1, 'user_id' => 0, 'data' => array(), 'timestamp' => 0 ) ) ) );

		// Polling again from last_event_id returns nothing new.
		$again = $this->poll( $u, $ch, $r['data']['last_event_id'], array() );
		$this->assertSame( array(), $again['data']['events'] );
	}

	public function test_batches_are_the_next_n_by_id_sorted_by_priority_inside(): void {
		update_option( 'lms_longpoll_batch_size', 3 );
		$this->filter( 'lms_realtime_ajax_wait', static fn () => 0.0 );
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		do_action( 'lms_reaction_updated', 1, $ch, array(), $u );                // high
		do_action( 'lms_chat_message_created', 2, $ch, $u, array( 'text' => 'a' ) ); // critical
		do_action( 'lms_reaction_updated', 2, $ch, array(), $u );                // high
		do_action( 'lms_chat_message_created', 3, $ch, $u, array( 'text' => 'b' ) ); // critical
		do_action( 'lms_chat_message_deleted', 2, $ch, $u, array() );           // critical

		$first = $this->poll( $u, $ch )['data'];
		$this->assertSame( array( 'message_create', 'reaction_update', 'reaction_update' ), array_column( $first['events'], 'type' ), 'ids 1-3, critical first' );
		$this->assertSame( array( 2, 1, 2 ), array_column( $first['events'], 'message_id' ) );
		$this->assertTrue( $first['has_more'] );
		$ids = array_column( $first['events'], 'id' );
		$this->assertSame( max( $ids ), $first['last_event_id'] );

		$second = $this->poll( $u, $ch, $first['last_event_id'] )['data'];
		$this->assertSame( array( 'message_create', 'message_delete' ), array_column( $second['events'], 'type' ) );
		$this->assertFalse( $second['has_more'] );
		// Nothing lost, nothing twice.
		$all = array_merge( $ids, array_column( $second['events'], 'id' ) );
		$this->assertSame( count( $all ), count( array_unique( $all ) ) );
		$this->assertCount( 5, $all );
	}

	public function test_a_waiting_poll_wakes_on_an_append_from_another_process(): void {
		$this->filter( 'lms_realtime_ajax_wait', static fn () => 10.0 );
		$u    = $this->user();
		$ch   = $this->channel( array( $u ) );
		$head = LMS_Realtime_Plugin::realtime()->head_last_event_id();
		// Another process appends after 300 ms.
		$script = sprintf(
			'require %s; usleep(300000); $s = LmsRealtime\EventStore::open(%s, [], %s); $s->append("message_create", %d, ["text" => "from afar"], 77, null, %d, 1, 60000);',
			var_export( dirname( __DIR__, 4 ) . '/php-ext/tests/bootstrap.php', true ),
			var_export( $this->db_path, true ),
			var_export( LMS_Realtime_Requirements::library_path(), true ),
			$ch,
			$u
		);
		LMS_Realtime_Plugin::realtime()->head_last_event_id(); // the store exists before the child opens it
		$proc  = proc_open( array( PHP_BINARY, '-d', 'ffi.enable=1', '-r', $script ), array(), $pipes );
		$start = microtime( true );
		$r     = $this->poll( $u, $ch, $head );
		$took  = microtime( true ) - $start;
		proc_close( $proc );
		$this->assertTrue( $r['success'], wp_json_encode( $r ) );
		$this->assertCount( 1, $r['data']['events'] );
		$this->assertSame( 'from afar', $r['data']['events'][0]['data']['text'] );
		$this->assertGreaterThan( 0.25, $took, 'it waited for the append' );
		$this->assertLessThan( 3.0, $took, 'and answered right after it, not at the 10 s timeout' );
		$snapshot = LMS_Realtime_Plugin::realtime()->metrics()->snapshot();
		$this->assertSame( 1, $snapshot['delivery_ms']['count'] );
		$native = LMS_Realtime_Plugin::realtime()->guards()->native_metrics()->snapshot();
		$this->assertSame( 1, $native['counters']['deliveries']['total'], 'the host-wide metrics count it too' );
		$this->assertSame( 1, $native['counters']['waits']['total'] );
	}

	public function test_an_empty_wait_ends_at_its_bound(): void {
		$this->filter( 'lms_realtime_ajax_wait', static fn () => 0.4 );
		$u     = $this->user();
		$ch    = $this->channel( array( $u ) );
		$start = microtime( true );
		$r     = $this->poll( $u, $ch, LMS_Realtime_Plugin::realtime()->head_last_event_id() );
		$took  = microtime( true ) - $start;
		$this->assertTrue( $r['success'] );
		$this->assertSame( array(), $r['data']['events'] );
		$this->assertGreaterThanOrEqual( 0.35, $took );
		$this->assertLessThan( 2.0, $took );
	}

	public function test_users_outside_the_rollout_get_an_immediate_answer(): void {
		remove_filter( 'lms_realtime_ajax_wait', $this->no_wait, 5 );
		update_option( 'lms_longpoll_rollout', 0 );
		$u     = $this->user();
		$ch    = $this->channel( array( $u ) );
		$start = microtime( true );
		// The plugin's own client in the legacy cohort (the LMS theme's client is held anyway).
		$r = $this->poll( $u, $ch, LMS_Realtime_Plugin::realtime()->head_last_event_id(), array( 'client' => 'lmsrt' ) );
		$this->assertTrue( $r['success'] );
		$this->assertLessThan( 0.3, microtime( true ) - $start, 'legacy cohort: short polling, no wait' );
	}

	public function test_polling_too_fast_is_rate_limit_exceeded(): void {
		$this->filter(
			'lms_realtime_rate_limits',
			static function ( array $limits ): array {
				$limits['poll']['burst'] = 3;
				return $limits;
			}
		);
		LMS_Realtime_Plugin::set_realtime( null );
		$this->filter( 'lms_realtime_ajax_wait', static fn () => 0.0 );
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		for ( $i = 0; $i < 3; $i++ ) {
			$this->assertTrue( $this->poll( $u, $ch )['success'] );
		}
		$r = $this->poll( $u, $ch );
		$this->assertLegacyError( 'rate_limit_exceeded', $r );
		$this->assertGreaterThanOrEqual( 1, $r['data']['retry_after'] );
		// Another user is not affected.
		$v   = $this->user();
		$ch2 = $this->channel( array( $v ) );
		$this->assertTrue( $this->poll( $v, $ch2 )['success'] );
	}

	public function test_more_waiting_polls_than_slots_is_connection_limit_exceeded(): void {
		update_option( 'lms_longpoll_max_connections', 2 );
		$this->filter( 'lms_realtime_ajax_wait', static fn () => 0.2 );
		$u      = $this->user();
		$ch     = $this->channel( array( $u ) );
		$guards = LMS_Realtime_Plugin::realtime()->guards();
		// Two polls of this user are waiting (in other workers).
		$a = $guards->acquire_slot( $u, 30000 );
		$b = $guards->acquire_slot( $u, 30000 );
		$this->assertNotNull( $b );
		$r = $this->poll( $u, $ch );
		$this->assertLegacyError( 'connection_limit_exceeded', $r );
		$this->assertSame( 2, $r['data']['retry_after'] );
		$guards->release_slot( $u, $a );
		$this->assertTrue( $this->poll( $u, $ch )['success'] );
		$this->assertSame( 1, $guards->slots_held( $u ), 'the poll released its slot' );
		$guards->release_slot( $u, $b );
	}

	public function test_an_open_breaker_refuses_with_the_emergency_mode(): void {
		$u      = $this->user();
		$ch     = $this->channel( array( $u ) );
		$guards = LMS_Realtime_Plugin::realtime()->guards();
		for ( $i = 0; $i < 5; $i++ ) {
			$guards->breaker_record( false );
		}
		$r = $this->poll( $u, $ch );
		$this->assertLegacyError( 'service_unavailable', $r );
		$this->assertSame( 'emergency', $r['data']['mode'] );
		$this->assertGreaterThanOrEqual( 1, $r['data']['retry_after'] );
		// With the breaker switched off the store is used regardless.
		update_option( 'lms_longpoll_circuit_breaker', false );
		$this->assertTrue( $this->poll( $u, $ch )['success'] );
	}

	public function test_the_legacy_path_keeps_the_same_contract(): void {
		$rt = new LMSRT_Realtime( new LMS_Realtime_Guards( null ), new LMS_Realtime_Metrics( dirname( $this->db_path ) . '/m.json' ) );
		LMS_Realtime_Plugin::set_realtime( $rt );
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		do_action( 'lms_reaction_updated', 5, $ch, array( '👍' => 1 ), $u );
		do_action( 'lms_chat_message_created', 6, $ch, $u, array( 'text' => 'legacy' ) );
		$r = $this->poll( $u, $ch, 0 );
		$this->assertTrue( $r['success'] );
		$this->assertSame( array( 'events', 'timestamp', 'last_event_id', 'has_more', 'gap', 'mode' ), array_keys( $r['data'] ) );
		$this->assertSame( array( 'message_create', 'reaction_update' ), array_column( $r['data']['events'], 'type' ), 'priority first inside the batch' );
		foreach ( $r['data']['events'] as $e ) {
			$this->assertSame( self::EVENT_KEYS, array_keys( $e ) );
		}
		$this->assertSame( array( array( 'emoji' => '👍', 'count' => 1 ) ), $r['data']['events'][1]['data']['reactions'] );
		$this->assertLegacyError( 'access_denied', $this->poll( $this->user(), $ch ) );
		$this->assertLegacyError( 'invalid_nonce', $this->poll( $u, $ch, 0, array( 'nonce' => 'nope' ) ) );
		$this->assertSame( array(), $this->poll( $u, $ch, $r['data']['last_event_id'] )['data']['events'] );
	}
}
