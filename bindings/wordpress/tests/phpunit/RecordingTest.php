<?php
/**
 * Every chat hook becomes one event with the right type, priority, ids, data and expiry.
 *
 * @package LMS_Realtime
 */

// phpcs:disable WordPress.Files.FileName

/**
 * Recording, on the store and on the legacy table.
 */
final class RecordingTest extends LMSRT_TestCase {

	/**
	 * The LMS theme's hook, its arguments (channel and user filled in later), and the expected
	 * type, priority, message_id, thread_id, user, data (at least these keys) and TTL.
	 *
	 * @return array<string, array<int, mixed>>
	 */
	public function hooks(): array {
		$ids = static fn ( int $m, bool $user = true ): array => array( 'message_id' => $m, 'channel_id' => '{ch}' ) + ( $user ? array( 'user_id' => '{u}' ) : array() );
		return array(
			'message created'         => array( 'lms_chat_message_created', array( 11, '{ch}', '{u}', array( 'text' => 'hi' ) ), 'message_create', 1, 11, null, '{u}', array( 'text' => 'hi', 'attachments' => array() ) + $ids( 11 ), 21600000 ),
			'message deleted'         => array( 'lms_chat_message_deleted', array( 11, '{ch}', '{u}', array() ), 'message_delete', 1, 11, null, '{u}', $ids( 11 ), 21600000 ),
			'thread message sent'     => array( 'lms_chat_thread_message_sent', array( 12, 11, '{ch}', '{u}' ), 'thread_create', 1, 12, 11, '{u}', array( 'parent_message_id' => 11 ) + $ids( 12 ), 21600000 ),
			'thread message deleted'  => array( 'lms_chat_thread_message_deleted', array( 12, 11, '{ch}' ), 'thread_delete', 1, 12, 11, 0, array( 'parent_message_id' => 11 ) + $ids( 12, false ), 21600000 ),
			'reaction updated'        => array( 'lms_reaction_updated', array( 11, '{ch}', array( '👍' => 2 ), '{u}' ), 'reaction_update', 2, 11, null, '{u}', array( 'reactions' => array( array( 'emoji' => '👍', 'count' => 2 ) ) ) + $ids( 11 ), 3600000 ),
			'thread reaction updated' => array( 'lms_thread_reaction_updated', array( 12, '{ch}', 11, array( array( 'emoji' => '🎉', 'count' => 1 ) ) ), 'thread_reaction', 2, 12, 11, 0, array( 'reactions' => array( array( 'emoji' => '🎉', 'count' => 1 ) ), 'parent_message_id' => 11 ) + $ids( 12, false ), 3600000 ),
		);
	}

	/**
	 * Replaces the `{ch}` and `{u}` placeholders.
	 *
	 * @param mixed $v  a value.
	 * @param int   $ch channel.
	 * @param int   $u  user.
	 * @return mixed
	 */
	private static function fill( $v, int $ch, int $u ) {
		if ( is_array( $v ) ) {
			return array_map( static fn ( $x ) => self::fill( $x, $ch, $u ), $v );
		}
		return '{ch}' === $v ? $ch : ( '{u}' === $v ? $u : $v );
	}

	/**
	 * Fires a hook with the channel and user filled in.
	 *
	 * @param string $hook hook.
	 * @param array  $args args.
	 * @param int    $ch   channel.
	 * @param int    $u    user.
	 */
	private function fire( string $hook, array $args, int $ch, int $u ): void {
		do_action( $hook, ...self::fill( $args, $ch, $u ) );
	}

	/**
	 * @dataProvider hooks
	 */
	public function test_each_hook_records_one_event_in_the_store( string $hook, array $args, string $type, int $priority, int $message, ?int $thread, $user, array $data, int $ttl ): void {
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		$this->fire( $hook, $args, $ch, $u );
		$store = \LmsRealtime\EventStore::open( $this->db_path );
		$batch = $store->fetch( array( $ch ), null, 10, 'sequential' );
		$this->assertCount( 1, $batch->events );
		$e    = $batch->events[0];
		$data = self::fill( $data, $ch, $u );
		$this->assertSame( array( $type, $priority, $ch, $message, $thread, self::fill( $user, $ch, $u ) ), array( $e->type, $e->priority, $e->channelId, $e->messageId, $e->threadId, $e->userId ) );
		$got = array_intersect_key( $e->data, $data );
		ksort( $got );
		ksort( $data );
		$this->assertSame( $data, $got, 'the data the theme\'s UI reads' );
		$this->assertSame( $ttl, $e->expiresAt - $e->timestamp, 'expiry by priority' );
		$this->assertEqualsWithDelta( microtime( true ) * 1000, $e->timestamp, 5000 );
		$store->close();
	}

	/**
	 * @dataProvider hooks
	 */
	public function test_each_hook_records_one_row_on_the_table_path( string $hook, array $args, string $type, int $priority, int $message, ?int $thread, $user, array $data, int $ttl ): void {
		global $wpdb;
		LMS_Realtime_Plugin::set_realtime( new LMSRT_Realtime( new LMS_Realtime_Guards( null ), new LMS_Realtime_Metrics( dirname( $this->db_path ) . '/m.json' ) ) );
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		$this->fire( $hook, $args, $ch, $u );
		$table = LMSRT_Realtime::table();
		$rows  = $wpdb->get_results( $wpdb->prepare( "SELECT * FROM {$table} WHERE channel_id = %d", $ch ), ARRAY_A ); // phpcs:ignore
		$this->assertCount( 1, $rows );
		$r = $rows[0];
		$this->assertSame( array( $type, $priority, $message, $thread, self::fill( $user, $ch, $u ) ), array( $r['event_type'], (int) $r['priority'], (int) $r['message_id'], null === $r['thread_id'] ? null : (int) $r['thread_id'], (int) $r['user_id'] ) );
		$data = self::fill( $data, $ch, $u );
		$got = array_intersect_key( json_decode( $r['data'], true ), $data );
		ksort( $got );
		ksort( $data );
		$this->assertSame( $data, $got, 'the data the theme\'s UI reads' );
		$this->assertSame( $ttl, (int) $r['expires_at'] - (int) $r['timestamp'] );
	}

	public function test_disabled_families_are_not_recorded(): void {
		update_option( 'lms_unified_longpoll_events', array( 'messages' ) );
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		do_action( 'lms_reaction_updated', 1, $ch, array(), $u );
		do_action( 'lms_thread_reaction_updated', 2, $ch, 1, array() );
		do_action( 'lms_chat_message_created', 1, $ch, $u, array( 'text' => 'kept' ) );
		wp_set_current_user( $u );
		$batch = LMS_Realtime_Plugin::realtime()->answer_poll( array( 'channel_id' => (string) $ch, 'last_event_id' => '0', 'nonce' => $this->nonce( $u ) ), $u );
		$this->assertSame( array( 'message_create' ), array_column( $batch['events'], 'type' ) );
	}

	public function test_the_event_filter_can_change_or_drop_events(): void {
		$this->filter(
			'lms_realtime_event',
			static function ( $e ) {
				if ( 'reaction_update' === $e['type'] ) {
					return null;
				}
				$e['data']['tagged'] = true;
				return $e;
			}
		);
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		$this->assertNull( LMS_Realtime_Plugin::realtime()->record_event( 'reaction_update', $ch ) );
		$id = LMS_Realtime_Plugin::realtime()->record_event( 'message_create', $ch, array( 'text' => 'x' ), 1, null, $u );
		$this->assertIsInt( $id );
		$this->assertNull( LMS_Realtime_Plugin::realtime()->record_event( 'message_create', 0 ), 'no channel, no event' );
		$store = \LmsRealtime\EventStore::open( $this->db_path );
		$this->assertSame( array( 'text' => 'x', 'tagged' => true ), $store->fetch( array( $ch ) )->events[0]->data );
		$store->close();
	}

	public function test_a_store_failure_never_breaks_the_chat_action(): void {
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		// A store that cannot be opened: the hook logs, counts and returns.
		$this->filter( 'lms_realtime_db_path', static fn () => '/proc/lmsrt-no-such-dir/events.db', 20 );
		LMS_Realtime_Plugin::set_realtime( null );
		$log = ini_set( 'error_log', '/dev/null' );
		do_action( 'lms_chat_message_created', 1, $ch, $u, array( 'text' => 'x' ) );
		ini_set( 'error_log', (string) $log );
		$this->assertSame( 1, LMS_Realtime_Plugin::realtime()->metrics()->snapshot()['errors']['record_failed'] ?? 0 );
		$this->assertSame( 1, LMS_Realtime_Plugin::realtime()->guards()->breaker_status()['failures'] );
	}

	public function test_the_chat_fires_the_hooks(): void {
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		$m  = LMSRT_Demo_Chat::post_message( $ch, $u, 'posted through the chat' );
		$r  = LMSRT_Demo_Chat::post_message( $ch, $u, 'a reply', $m['id'] );
		$store  = \LmsRealtime\EventStore::open( $this->db_path );
		$events = $store->fetch( array( $ch ), null, 10, 'sequential' )->events;
		$store->close();
		$this->assertSame( array( 'message_create', 'thread_create' ), array_map( static fn ( $e ) => $e->type, $events ) );
		$this->assertSame( 'posted through the chat', $events[0]->data['text'] );
		$this->assertSame( 'posted through the chat', $events[0]->data['message'], 'the theme UI\'s field' );
		$this->assertSame( $m['id'], $events[1]->data['parent_message_id'] );
		$this->assertSame( $m['id'], $events[0]->messageId );
		$this->assertSame( $m['id'], $events[1]->threadId );
		$this->assertSame( $r['id'], $events[1]->messageId );
	}

	public function test_posting_through_ajax_checks_and_records(): void {
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		$ok = $this->ajax( 'lmsrt_demo_post_message', array( 'channel_id' => $ch, 'thread_id' => 0, 'message' => "two\nlines <b>raw</b>", 'nonce' => $this->nonce( $u ) ), $u );
		$this->assertTrue( $ok['success'], wp_json_encode( $ok ) );
		$this->assertSame( "two\nlines raw", $ok['data']['message']['text'], 'sanitised as a textarea' );
		$this->assertLegacyError( 'invalid_nonce', $this->ajax( 'lmsrt_demo_post_message', array( 'channel_id' => $ch, 'message' => 'x', 'nonce' => 'bad' ), $u ) );
		$this->assertLegacyError( 'access_denied', $this->ajax( 'lmsrt_demo_post_message', array( 'channel_id' => $ch, 'message' => 'x', 'nonce' => $this->nonce( $v = $this->user() ) ), $v ) );
		$this->assertLegacyError( 'invalid_parameters', $this->ajax( 'lmsrt_demo_post_message', array( 'channel_id' => $ch, 'message' => '   ', 'nonce' => $this->nonce( $u ) ), $u ) );
		$this->assertLegacyError( 'not_authenticated', $this->ajax( 'lmsrt_demo_post_message', array( 'channel_id' => $ch, 'message' => 'x' ), 0 ) );
	}

	public function test_posting_is_rate_limited_per_user(): void {
		$this->filter(
			'lms_realtime_rate_limits',
			static function ( array $limits ): array {
				$limits['post']['burst'] = 2;
				return $limits;
			}
		);
		LMS_Realtime_Plugin::set_realtime( null );
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		$post = fn () => $this->ajax( 'lmsrt_demo_post_message', array( 'channel_id' => $ch, 'message' => 'spam', 'nonce' => $this->nonce( $u ) ), $u );
		$this->assertTrue( $post()['success'] );
		$this->assertTrue( $post()['success'] );
		$r = $post();
		$this->assertLegacyError( 'rate_limit_exceeded', $r );
		$this->assertSame( 3, $r['data']['retry_after'], '20 per minute: one more every 3 s' );
	}
}
