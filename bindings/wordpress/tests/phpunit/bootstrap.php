<?php
/**
 * Boots the installed WordPress (Debian's package, /usr/share/wordpress) for the plugin tests.
 * No wp-phpunit: the tests run against the real site the e2e script installed, each test on
 * its own users, channels and a temporary event store.
 *
 * @package LMS_Realtime
 */

// phpcs:disable WordPress.WP.AlternativeFunctions

$lmsrt_host              = getenv( 'LMSRT_WP_HOST' ) ?: '127.0.0.1';
$_SERVER['HTTP_HOST']    = $lmsrt_host;
$_SERVER['SERVER_NAME']  = preg_replace( '/:.*/', '', $lmsrt_host );
$_SERVER['REQUEST_URI']  = '/';
$_SERVER['REMOTE_ADDR']  = '127.0.0.1';
$_SERVER['REQUEST_METHOD'] = 'POST';
// The AJAX handlers end in wp_die(); under DOING_AJAX it goes through wp_die_ajax_handler,
// which the tests turn into an exception (as WordPress's own AJAX tests do).
define( 'DOING_AJAX', true );
// PHPUnit includes this file inside a method and then copies its local variables over
// $GLOBALS: WordPress's file-level variables must be globals from the start (as in WordPress's
// own test bootstrap), or, e.g., an empty local $shortcode_tags replaces the real one.
global $wpdb, $current_site, $current_blog, $wp_rewrite, $shortcode_tags, $wp, $phpmailer, $wp_theme_directories, $table_prefix;
$wp_root = getenv( 'LMSRT_WP_ROOT' ) ?: '/usr/share/wordpress';
require $wp_root . '/wp-load.php';
require_once ABSPATH . 'wp-admin/includes/plugin.php';
require_once ABSPATH . 'wp-admin/includes/template.php';

if ( ! class_exists( 'LMS_Realtime_Plugin' ) ) {
	fwrite( STDERR, "The lms-realtime plugin is not active on this site.\n" );
	exit( 1 );
}

// Every test gets a fresh store under here (see LMSRT_TestCase).
$GLOBALS['lmsrt_test_dir'] = sys_get_temp_dir() . '/lmsrt-phpunit-' . getmypid();
mkdir( $GLOBALS['lmsrt_test_dir'] );
register_shutdown_function(
	static function () {
		exec( 'rm -rf ' . escapeshellarg( $GLOBALS['lmsrt_test_dir'] ) );
	}
);

require __DIR__ . '/LMSRT_TestCase.php';
