<?php
/**
 * The plugin on a store in Redis: accepted, used, its host-local files in the state directory.
 *
 * @package LMS_Realtime
 */

// phpcs:disable WordPress.Files.FileName

require_once dirname( __DIR__, 4 ) . '/php-ext/tests/Integration/RedisServer.php';

use LmsRealtime\Tests\Integration\RedisServer;

/**
 * `LMSRT_DB_PATH` (here the `lms_realtime_db_path` filter) naming a `redis://` URL: the plugin
 * records and answers polls through that store, keeps its guards' files and metrics in the
 * state directory (never a `redis:` directory), shows the engine on its status page, and its
 * uninstall deletes no file for the URL and says what stays in Redis. A redis-server of the
 * test's own, on a free loopback port.
 */
final class RedisStoreTest extends LMSRT_TestCase {

	/**
	 * The server of these tests.
	 *
	 * @var RedisServer|null
	 */
	private static ?RedisServer $server = null;

	/**
	 * This test's store.
	 *
	 * @var string
	 */
	private string $url;

	/**
	 * This test's state directory.
	 *
	 * @var string
	 */
	private string $state;

	public static function tearDownAfterClass(): void {
		self::$server = null;
		parent::tearDownAfterClass();
	}

	protected function setUp(): void {
		parent::setUp();
		self::$server = self::$server ?? new RedisServer();
		$this->url    = self::$server->url();
		$this->state  = $GLOBALS['lmsrt_test_dir'] . '/' . uniqid( 'state', true );
		$url          = $this->url;
		$state        = $this->state;
		$this->filter( 'lms_realtime_db_path', static fn () => $url, 20 );
		$this->filter( 'lms_realtime_state_dir', static fn () => $state );
		LMS_Realtime_Requirements::reset();
		LMS_Realtime_Plugin::set_realtime( null );
	}

	protected function tearDown(): void {
		parent::tearDown();
		LMS_Realtime_Requirements::reset();
	}

	public function test_a_redis_url_serves_the_store_path_shared_with_other_hosts(): void {
		$this->assertSame( array(), LMS_Realtime_Requirements::problems() );
		$rt = LMS_Realtime_Plugin::realtime();
		$this->assertInstanceOf( LMSRT_Unified_Long_Poll::class, $rt );
		$this->assertSame( 'redis', $rt->store()->engine() );
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		do_action( 'lms_chat_message_created', 51, $ch, $u, array( 'text' => 'through redis' ) );
		$r = $this->poll( $u, $ch );
		$this->assertTrue( $r['success'], wp_json_encode( $r ) );
		$this->assertSame( array( 'message_create' ), array_column( $r['data']['events'], 'event_type' ) );
		// Another web host opens the same URL and sees the event.
		$other = \LmsRealtime\EventStore::open( $this->url );
		$batch = $other->fetch( array( $ch ) );
		$other->close();
		$this->assertSame( array( 'through redis' ), array_map( static fn ( $e ) => $e->data['text'], $batch->events ) );
	}

	public function test_guards_and_metrics_live_in_the_state_directory_and_no_redis_directory_is_made(): void {
		$cwd = (string) getcwd();
		$rt  = LMS_Realtime_Plugin::realtime();
		$this->assertSame( $this->state, LMSRT_Unified_Long_Poll::files_dir() );
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		$this->assertTrue( $this->poll( $u, $ch )['success'] );
		$this->assertSame( 'native', $rt->guards()->backends()['rate'] );
		$base = $this->state . '/redis-' . preg_replace( '/[^A-Za-z0-9]/', '_', $this->url );
		foreach ( array( 'limits', 'breakers', 'slots', 'metrics' ) as $file ) {
			$this->assertFileExists( "$base-lmsrt-$file" );
		}
		$this->assertFileExists( $this->state . '/.htaccess', 'the state directory is not served' );
		$rt->metrics()->count( 'requests.poll' );
		$rt->metrics()->flush();
		$this->assertFileExists( $this->state . '/metrics.json' );
		LMS_Realtime_Plugin::activate();
		foreach ( array( $cwd, ABSPATH, WP_CONTENT_DIR, $GLOBALS['lmsrt_test_dir'] ) as $dir ) {
			$this->assertDirectoryDoesNotExist( rtrim( $dir, '/' ) . '/redis:' );
		}
	}

	public function test_the_status_panel_shows_the_engine_without_a_password(): void {
		$s = LMS_Realtime_Settings::status();
		$this->assertSame( 'store', $s['backend'] );
		$this->assertSame( 'redis', $s['store']['engine'] );
		$this->assertSame( $this->url, $s['store']['path'] );
		$this->assertSame( $this->state, $s['store']['state_dir'] );
		$this->assertMatchesRegularExpression( '/^v1\./', $s['store']['head'] );
		$this->assertSame( 'redis://h:1/0?store=a', LMSRT_Unified_Long_Poll::shown_store( 'redis://user:s3cret@h:1/0?store=a' ) );
		$this->assertSame( '/x/a@b.db', LMSRT_Unified_Long_Poll::shown_store( '/x/a@b.db' ) );
		wp_set_current_user( $this->user( 'administrator' ) );
		LMS_Realtime_Settings::register_settings();
		ob_start();
		LMS_Realtime_Settings::render();
		$html = (string) ob_get_clean();
		$this->assertStringContainsString( 'Redis: ' . esc_html( $this->url ), $html );
	}

	public function test_a_url_of_another_scheme_is_a_notice_and_the_legacy_path(): void {
		$this->filter( 'lms_realtime_db_path', static fn () => 'memcached://127.0.0.1:11211', 30 );
		LMS_Realtime_Requirements::reset();
		$this->assertStringContainsString( 'redis://', implode( ' ', LMS_Realtime_Requirements::problems() ) );
		$this->assertSame( LMSRT_Realtime::class, get_class( LMS_Realtime_Plugin::realtime() ) );
		$this->assertDirectoryDoesNotExist( getcwd() . '/memcached:' );
	}

	public function test_uninstall_deletes_no_file_for_a_url_and_says_what_stays_in_redis(): void {
		$dir = $GLOBALS['lmsrt_test_dir'] . '/' . uniqid( 'content', true );
		mkdir( $dir );
		$ours = array( $dir . '/metrics.json', $dir . '/index.php', $dir . '/redis-redis___h_1_0-lmsrt-slots' );
		foreach ( array_merge( $ours, array( $dir . '/events.db', $dir . '/notes.txt' ) ) as $f ) {
			touch( $f );
		}
		$url = 'redis://user:s3cret@h:1/0?store=site_2';
		$this->assertSame( $ours, self::sorted_like( $ours, LMS_Realtime_Uninstall::files( $dir, $url, false ) ), 'this host\'s files of the Redis store, not a store file' );
		$this->assertSame( array(), LMS_Realtime_Uninstall::files( $dir, $url, true ), 'LMSRT_STATE_DIR is left alone' );
		$this->assertSame( array(), LMS_Realtime_Uninstall::files( $dir, '/srv/events.db', false ), 'LMSRT_DB_PATH is left alone' );
		$this->assertContains( $dir . '/events.db', LMS_Realtime_Uninstall::files( $dir, null, false ) );
		$left = (string) LMS_Realtime_Uninstall::left_in_redis( $url );
		$this->assertStringContainsString( 'lmsrt:{site_2}:*', $left );
		$this->assertStringContainsString( 'redis://h:1/0?store=site_2', $left );
		$this->assertStringNotContainsString( 's3cret', $left );
		$this->assertNull( LMS_Realtime_Uninstall::left_in_redis( '/srv/events.db' ) );
		$this->assertNull( LMS_Realtime_Uninstall::left_in_redis( null ) );
	}

	/**
	 * `$got` in the order of `$want` when they hold the same files (glob's order is the
	 * directory's), else `$got` as it is.
	 *
	 * @param string[] $want the expected files.
	 * @param string[] $got  the files returned.
	 * @return string[]
	 */
	private static function sorted_like( array $want, array $got ): array {
		$a = $want;
		$b = $got;
		sort( $a );
		sort( $b );
		return $a === $b ? $want : $got;
	}
}
