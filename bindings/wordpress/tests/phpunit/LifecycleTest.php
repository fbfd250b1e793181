<?php
/**
 * Requirements and the legacy fallback, WP-Cron expiry cleanup, activation.
 *
 * @package LMS_Realtime
 */

// phpcs:disable WordPress.Files.FileName

/**
 * Plugin lifecycle.
 */
final class LifecycleTest extends LMSRT_TestCase {

	protected function tearDown(): void {
		LMS_Realtime_Requirements::reset();
		parent::tearDown();
	}

	/**
	 * Pretends the requirements failed for a reason.
	 *
	 * @param string[] $problems problems.
	 */
	private function fail_requirements( array $problems ): void {
		$p = new ReflectionProperty( LMS_Realtime_Requirements::class, 'problems' );
		$p->setAccessible( true );
		$p->setValue( null, $problems );
	}

	public function test_this_site_meets_the_requirements(): void {
		$this->assertSame( array(), LMS_Realtime_Requirements::problems() );
		$this->assertSame( LMSRT_LIBRARY, LMS_Realtime_Requirements::library_path() );
	}

	public function test_without_ffi_or_library_the_site_runs_legacy_polling_with_a_notice(): void {
		$this->fail_requirements( array( 'The PHP FFI extension (ext-ffi) is not loaded.' ) );
		LMS_Realtime_Plugin::set_realtime( null );
		$rt = LMS_Realtime_Plugin::realtime();
		$this->assertSame( LMSRT_Realtime::class, get_class( $rt ) );
		wp_set_current_user( $this->user( 'administrator' ) );
		ob_start();
		LMS_Realtime_Plugin::admin_notice();
		$html = (string) ob_get_clean();
		$this->assertStringContainsString( 'notice-warning', $html );
		$this->assertStringContainsString( 'legacy polling', $html );
		$this->assertStringContainsString( 'ext-ffi', $html );
		wp_set_current_user( $this->user( 'subscriber' ) );
		ob_start();
		LMS_Realtime_Plugin::admin_notice();
		$this->assertSame( '', ob_get_clean(), 'only administrators see it' );
		// And the chat still works end to end on the legacy table.
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		$posted = $this->ajax( 'lmsrt_demo_post_message', array( 'channel_id' => $ch, 'message' => 'still works', 'nonce' => $this->nonce( $u ) ), $u );
		$this->assertTrue( $posted['success'] );
		$r = $this->poll( $u, $ch, 0 );
		$this->assertSame( array( 'still works' ), array_column( array_column( $r['data']['events'], 'data' ), 'text' ) );
		$page = $rt->page_config( $ch, 0, $u );
		$this->assertNull( $page['cursor'] );
		$this->assertSame( 'legacy', $page['backend'] );
	}

	public function test_no_notice_when_all_is_well(): void {
		wp_set_current_user( $this->user( 'administrator' ) );
		ob_start();
		LMS_Realtime_Plugin::admin_notice();
		$this->assertSame( '', ob_get_clean() );
	}

	public function test_the_expiry_cleanup_is_scheduled_and_purges(): void {
		LMS_Realtime_Plugin::init();
		$this->assertNotFalse( wp_next_scheduled( LMS_Realtime_Plugin::CRON_HOOK ) );
		$this->assertSame( 300, wp_get_schedules()[ LMS_Realtime_Plugin::CRON_SCHEDULE ]['interval'] );
		$this->filter( 'lms_realtime_event_ttl', static fn () => 1000 );
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		do_action( 'lms_chat_message_created', 1, $ch, $u, array( 'text' => 'short-lived' ) );
		do_action( 'lms_chat_message_created', 2, $ch, $u, array( 'text' => 'short-lived too' ) );
		usleep( 1100000 );
		do_action( LMS_Realtime_Plugin::CRON_HOOK );
		$this->assertGreaterThanOrEqual( 2, get_option( 'lms_realtime_last_purge' )[1] );
		$store = \LmsRealtime\EventStore::open( $this->db_path );
		$batch = $store->fetch( array( $ch ) );
		$this->assertSame( array(), $batch->events );
		$this->assertTrue( $batch->gap, 'a client that had not fetched them is told' );
		$store->close();
	}

	public function test_the_legacy_table_is_purged_too(): void {
		global $wpdb;
		LMS_Realtime_Plugin::set_realtime( new LMSRT_Realtime( new LMS_Realtime_Guards( null ), new LMS_Realtime_Metrics( dirname( $this->db_path ) . '/m.json' ) ) );
		$this->filter( 'lms_realtime_event_ttl', static fn () => 1000 );
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		do_action( 'lms_chat_message_created', 1, $ch, $u, array() );
		usleep( 1100000 );
		do_action( LMS_Realtime_Plugin::CRON_HOOK );
		$table = LMSRT_Realtime::table();
		$this->assertSame( '0', $wpdb->get_var( $wpdb->prepare( "SELECT COUNT(*) FROM {$table} WHERE channel_id = %d", $ch ) ) ); // phpcs:ignore
	}

	public function test_activation_is_idempotent_and_keeps_settings(): void {
		update_option( 'lms_longpoll_rollout', 37 );
		LMS_Realtime_Plugin::activate();
		LMS_Realtime_Plugin::activate();
		$this->assertSame( 37, (int) get_option( 'lms_longpoll_rollout' ) );
		$this->assertFileExists( dirname( LMSRT_Unified_Long_Poll::db_path() ) . '/.htaccess' );
	}
}
