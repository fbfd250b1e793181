<?php
/**
 * Each site of a multisite network keeps its events in a store of its own: channel ids are per
 * site, so one store would deliver site 1's channel 5 to site 2's channel 5.
 *
 * @package LMS_Realtime
 */

// phpcs:disable WordPress.Files.FileName

/**
 * The per-site store names.
 */
final class MultisiteStoreTest extends LMSRT_TestCase {

	public function test_the_first_site_keeps_the_configured_store(): void {
		foreach ( array( '/srv/chat/events.db', 'redis://h:1/0?store=lms', 'relative.db' ) as $store ) {
			$this->assertSame( $store, LMSRT_Unified_Long_Poll::site_store( $store, 1 ) );
		}
	}

	public function test_another_sites_file_has_its_id_before_the_extension(): void {
		$cases = array(
			array( '/var/www/wp-content/lms-realtime/events.db', 2, '/var/www/wp-content/lms-realtime/events-site2.db' ),
			array( '/srv/chat.v2/events.sqlite3', 17, '/srv/chat.v2/events-site17.sqlite3' ),
			array( '/srv/chat/events', 3, '/srv/chat/events-site3' ),
			array( '/srv/chat/.events', 3, '/srv/chat/.events-site3' ),
			array( 'events.db', 4, 'events-site4.db' ),
		);
		foreach ( $cases as list( $store, $blog, $want ) ) {
			$this->assertSame( $want, LMSRT_Unified_Long_Poll::site_store( $store, $blog ), $store );
		}
	}

	public function test_another_sites_redis_store_has_its_id_in_the_store_name(): void {
		$cases = array(
			array( 'redis://h:6379/0?store=lms', 2, 'redis://h:6379/0?store=lms-site2' ),
			array( 'rediss://u:p@h:6380/1?protocol=resp3&store=chat&tls_ca=%2Fca.pem', 9, 'rediss://u:p@h:6380/1?protocol=resp3&store=chat-site9&tls_ca=%2Fca.pem' ),
			array( 'redis://h:6379/0', 2, 'redis://h:6379/0?store=lmsrt-site2' ),
			array( 'redis://h:6379/0?protocol=resp3', 5, 'redis://h:6379/0?protocol=resp3&store=lmsrt-site5' ),
			array( 'redis+cluster://h1:7000,h2:7001/?store=lms', 3, 'redis+cluster://h1:7000,h2:7001/?store=lms-site3' ),
		);
		foreach ( $cases as list( $store, $blog, $want ) ) {
			$this->assertSame( $want, LMSRT_Unified_Long_Poll::site_store( $store, $blog ), $store );
		}
	}

	public function test_the_derived_stores_are_ones_the_library_opens_apart(): void {
		$dir   = $GLOBALS['lmsrt_test_dir'] . '/' . uniqid( 'network', true );
		$first = $dir . '/events.db';
		mkdir( $dir );
		$one = \LmsRealtime\EventStore::open( $first );
		$two = \LmsRealtime\EventStore::open( LMSRT_Unified_Long_Poll::site_store( $first, 2 ) );
		$one->append( 'message_create', 5, array( 'site' => 1 ) );
		$this->assertCount( 1, $one->fetch( array( 5 ) )->events );
		$this->assertSame( array(), $two->fetch( array( 5 ) )->events, 'site 2 does not see site 1\'s channel 5' );
		$this->assertFileExists( $dir . '/events-site2.db' );
	}

	public function test_uninstall_names_the_other_sites_redis_stores_on_a_network(): void {
		$url = 'redis://h:1/0?store=lms';
		$this->assertStringNotContainsString( 'lms-site*', (string) LMS_Realtime_Uninstall::left_in_redis( $url ) );
		$this->assertStringContainsString( 'lmsrt:{lms-site*}:*', (string) LMS_Realtime_Uninstall::left_in_redis( $url, true ) );
	}
}
